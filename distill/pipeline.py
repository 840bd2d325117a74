"""Run stages in order into one run folder: proxy -> student -> multires, and the direct baseline."""

from __future__ import annotations

from pathlib import Path

import yaml

from distill.atomic import atomic_path
from distill.config import RunConfig, config_to_dict, load_config
from distill.data.training_data import FixedViews, StreamingData, TrainingData
from distill.data.views import build_views
from distill.device import pick_device
from distill.feature_cache import fingerprint
from distill.run_dir import RunDir
from distill.stages import STAGE_NAMES
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
    run_dir = Path(run_dir)
    stages = list(stages)
    missing = [s for s in stages if s not in config.stages]
    if missing:
        raise ValueError(f"stage '{missing[0]}' is not configured (configured: {', '.join(config.stages)})")
    check_run_config(config, run_dir)
    data = prepare_data(config, stages)  # a bad data source fails here, before the run folder is written
    save_run_config(config, run_dir)
    return {stage: run_stage(config, stage, run_dir, data) for stage in stages}
