"""Run stages in order into one run folder: proxy -> student -> multires, and the direct baseline."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import timm
import torch
import yaml

from distill import distributed
from distill.atomic import atomic_path
from distill.backbones import create_timm_backbone, input_granularity
from distill.config import (
    ConfigError,
    ModelConfig,
    RunConfig,
    TeacherConfig,
    check_batch_split,
    check_crop_cells,
    check_stage_sides,
    check_stages,
    config_to_dict,
    load_config,
)
from distill.data.training_data import FixedViews, StreamingData, TrainingData
from distill.data.views import build_views
from distill.device import check_device, pick_device
from distill.distributed import launched_world_size
from distill.fingerprint import fingerprint
from distill.run_dir import RunDir, existing_checkpoint
from distill.specs import parse_spec
from distill.stages import STAGE_NAMES, stage_named
from distill.targets.store import stage_store
from distill.trainer import StageResult, run_stage


def configured_stages(config: RunConfig) -> list[str]:
    """The stages a config sets up, in pipeline order (what `eupe pipeline` runs by default)."""
    return [stage for stage in STAGE_NAMES if stage in config.stages]


def view_resolution(config: RunConfig, stages: list[str]) -> int:
    """The side the fixed views are stored at: the largest any stage's student or teacher draws."""
    sides = [
        s
        for name in stages
        for s in config.stages[name].resolutions + (config.stages[name].teacher_resolutions or [])
    ]
    return max(sides)


def prepare_data(config: RunConfig, stages: list[str]) -> TrainingData:
    """The run's training data: a stream of its folder or shards, or fixed views with their fingerprint
    (which keys the feature cache)."""
    data = config.data
    side = view_resolution(config, stages)
    if data.store is not None:  # centred views: flips and crops apply to them and their stored grids alike
        return StreamingData(data.source, side, data.workers, None, 0.0)
    if data.stream:
        scale = None if config.augment.scale is None else tuple(config.augment.scale)
        return StreamingData(data.source, side, data.workers, scale, config.augment.flip)
    views = build_views(
        data.source, data.num_images, side, data.seed, pick_device(config.train.device), data.mix
    )
    return FixedViews(views, fingerprint(data.source, data.num_images, data.seed, views))


def model_stride(model: ModelConfig, key: str) -> int:
    """The input-side multiple of a config's backbone, built on the meta device (shapes, no weights); an
    architecture timm cannot build is a `ConfigError` naming `key`."""
    try:
        with torch.device("meta"):
            backbone = create_timm_backbone(model.arch, "random", **model.kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as error:
        raise ConfigError(f"config key '{key}': timm cannot build {model.arch} ({error})") from None
    return input_granularity(backbone)


def check_teacher(teacher: TeacherConfig, where: str) -> None:
    """A teacher the run can build: a distilled checkpoint folder, a registered expert, or a timm model
    (`timm:<name>` or an alias); its weight file, if any, exists."""
    if teacher.checkpoint is not None and not Path(teacher.checkpoint).is_file():
        raise ConfigError(f"config key '{where}.checkpoint': file not found: {teacher.checkpoint}")
    try:
        spec = parse_spec(teacher.name)
        if spec.kind == "folder":
            existing_checkpoint(spec.name)
    except (KeyError, ValueError, FileNotFoundError) as error:
        raise ConfigError(f"config key '{where}.name': {error.args[0]}") from None
    if spec.kind == "timm" and not timm.is_model(spec.timm_model):
        raise ConfigError(f"config key '{where}.name': timm has no model '{spec.name}'")


def check_run(config: RunConfig, run_dir: Path, stages: list[str]) -> dict[str, int]:
    """Every check that needs no data, before anything is written: the stages, the run folder, the
    device, the teachers, the models and the stages' sides. Returns the stride of each stage's model."""
    check_stages(config, stages)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run folder")
    check_run_config(config, run_dir)
    check_device(config.train.device)
    for i, teacher in enumerate(config.teachers):
        check_teacher(teacher, f"teachers[{i}]")
    models = {stage_named(s).model for s in stages}
    strides = {model: model_stride(getattr(config, model), model) for model in sorted(models)}
    for stage in stages:
        check_stage_sides(config, stage, strides[stage_named(stage).model])
        check_batch_split(config, stage, launched_world_size())
    return {stage: strides[stage_named(stage).model] for stage in stages}


def check_run_config(config: RunConfig, run_dir: Path) -> None:
    """Refuse to mix a different config into an existing run.

    The saved config is read back through `load_config`, so keys added to the schema since it was written
    take their defaults and an older run still resumes.
    """
    path = RunDir(run_dir).config
    if path.is_file() and config_to_dict(load_config(path)) != config_to_dict(config):
        raise ValueError(
            f"{run_dir} holds a run with a different config; resume with the same config or use a new --out"
        )


def save_run_config(config: RunConfig, run_dir: Path) -> None:
    """Write config.yaml into the run folder (after `check_run_config`)."""
    check_run_config(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(RunDir(run_dir).config) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def run_stages(
    config: RunConfig, run_dir: str | Path, stages: list[str] | tuple[str, ...]
) -> dict[str, StageResult]:
    """Run the named stages in the given order into `run_dir` (each resumes from its own checkpoint)."""
    run_dir, stages = Path(run_dir), list(stages)
    strides = check_run(config, run_dir, stages)
    data = prepare_data(config, stages)  # a bad data source fails here, before the run folder is written
    for stage in stages:
        stage_store(config, stage, data)  # a store of other files, teachers or sides: refused before writes
        if not data.augments:  # the trainer crops these views (`augment.crop`)
            check_crop_cells(config, strides[stage], data.side)
    with RunDir(run_dir).locked() if distributed.context().is_main else nullcontext():  # one run per folder
        save_run_config(config, run_dir)
        return {stage: run_stage(config, stage, run_dir, data) for stage in stages}
