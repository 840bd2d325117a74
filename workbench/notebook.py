"""The notebooks' scales: which config and run folder a notebook uses, and the stages it must have trained.

A notebook picks its scale from `EUPE_SCALE` (default `toy`) and its runs folder from `EUPE_RUNS`
(default the repository's `runs/`): `toy` is `configs/toy.yaml` into `runs/toy` (what `make demo`
trains), `tiny` is `configs/tiny.yaml` into `runs/tiny`, seconds per stage, for the tests. Finished
stages are reused; missing or unfinished ones are trained (resumed from their checkpoints).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.checkpoint import read_meta
from distill.config import RunConfig, check_stages
from distill.data.training_data import FixedViews
from distill.pipeline import configured_stages, prepare_data, save_run_config
from distill.run_dir import RunDir
from distill.stage_teachers import expert_teacher
from distill.stages import STAGE_NAMES, stage_named
from distill.teachers import Teacher
from distill.trainer import run_stage
from workbench.eval.report import write_scoreboard
from workbench.eval.scoreboard import evaluate
from workbench.eval.settings import EvalSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class NotebookScale:
    """Where and how big a notebook runs.

    Attributes:
        name: `toy` or `tiny`.
        config_path: the run config.
        run_dir: the run folder.
        scoreboard_dir: where the scoreboard keeps its rows (resumable): `<run>/eval`, as `make demo`.
        figures_dir: where figures written as files go.
        eval_settings: sizes and steps of the scoreboard's probes.
        scoreboard_experts: experts scored on the scoreboard.
        sample_count: images the notebooks compare encoders on (CKA, agreement).
        sides: input sides of the resolution sweep.
        sweep_count: images of the resolution sweep (the experts run on them at every side).
        umap_count: held-out scenes in the UMAP of summary vectors.
    """

    name: str
    config_path: Path
    run_dir: Path
    scoreboard_dir: Path
    figures_dir: Path
    eval_settings: EvalSettings
    scoreboard_experts: list[str]
    sample_count: int
    sides: list[int]
    sweep_count: int
    umap_count: int


SCALES: dict[str, dict] = {  # name -> the NotebookScale fields that are not paths
    "toy": {
        "eval_settings": EvalSettings(),  # the settings `make demo` scores the toy run with
        "scoreboard_experts": ["semantic", "text", "edges"],
        "sample_count": 48,
        "sides": [64, 96, 128, 160, 192],
        "sweep_count": 12,
        "umap_count": 96,
    },
    "tiny": {
        "eval_settings": EvalSettings(resolution=64, scene_train=24, scene_test=16, fashion_train=40,
                                      fashion_test=20, photos=6, probe_steps=4, batch_size=16,
                                      latency_repeats=1),
        "scoreboard_experts": [],
        "sample_count": 8,
        "sides": [32, 64, 96],
        "sweep_count": 4,
        "umap_count": 16,
    },
}  # fmt: skip


def notebook_scale(name: str | None = None, runs_root: str | Path | None = None) -> NotebookScale:
    """The scale a notebook runs at.

    Args:
        name: `toy` or `tiny`; None reads `EUPE_SCALE` (default `toy`).
        runs_root: folder holding the run folders; None reads `EUPE_RUNS` (default the repository's `runs/`).
    """
    name = name or os.environ.get("EUPE_SCALE", "toy")
    if name not in SCALES:
        raise ValueError(f"unknown notebook scale '{name}' (known: {', '.join(SCALES)})")
    root = Path(runs_root or os.environ.get("EUPE_RUNS") or REPO_ROOT / "runs")
    return NotebookScale(
        name=name,
        config_path=REPO_ROOT / "configs" / f"{name}.yaml",
        run_dir=root / name,
        scoreboard_dir=root / name / "eval",
        figures_dir=root / f"{name}_figures",
        **copy.deepcopy(SCALES[name]),
    )


def stage_step(run_dir: str | Path, stage: str) -> int:
    """The step a stage's checkpoint in `run_dir` has reached (0 when there is none)."""
    run = RunDir(run_dir)
    return read_meta(run.checkpoint(stage))["step"] if run.has_checkpoint(stage) else 0


def pipeline_views(config: RunConfig) -> FixedViews:
    """The run's fixed training views and their key, as `eupe pipeline` makes them for all configured stages.

    Raises:
        ValueError: the config streams its data (`data.stream`): a stream has no fixed views to show.
    """
    data = prepare_data(config, configured_stages(config))
    if not isinstance(data, FixedViews):
        raise ValueError(
            "this config streams its data (data.stream: true); the notebooks step through fixed views"
        )
    return data


def ensure_stages(
    config: RunConfig, run_dir: str | Path, stages: list[str], log: Callable[[str], None] = print
) -> list[str]:
    """Train the named stages, and the stages they read, that `run_dir` does not hold finished.

    Stages train on the views of `pipeline_views`, so a stage trained here is the one `eupe pipeline`
    (`make demo`) trains, and reuses its feature cache. Finished stages are left untouched (their
    files keep their dates, so scoreboard rows stay valid).

    Raises:
        ValueError: a stage is not configured, or `run_dir` holds a run of a different config.

    Returns:
        The stages trained now, in pipeline order.
    """
    wanted = {need for stage in stages for need in (stage, *stage_named(stage).reads)}
    check_stages(config, sorted(wanted))
    save_run_config(config, Path(run_dir))
    todo = []
    for stage in [s for s in STAGE_NAMES if s in wanted]:
        step, steps = stage_step(run_dir, stage), config.stages[stage].steps
        log(f"{stage:9s} {step}/{steps} steps: " + ("reused" if step >= steps else "to train"))
        if step < steps:
            todo.append(stage)
    if todo:
        data = prepare_data(config, configured_stages(config))
        for stage in todo:
            run_stage(config, stage, run_dir, data)
    return todo


def config_experts(config: RunConfig) -> dict[str, Teacher]:
    """The run's expert teachers, built as its expert-taught stages build them (same input sides)."""
    return {t.name: expert_teacher(t.name, t.resolution, t.weights, t.checkpoint) for t in config.teachers}


def score_run(scale: NotebookScale, log: Callable[[str], None] = print) -> list[dict]:
    """Score the scale's run as `eupe eval` does (`workbench.eval.scoreboard.evaluate`), reusing saved rows.

    The rows and `scoreboard.{json,md,png}` go to `scale.scoreboard_dir`; rows are keyed by the encoders'
    content, so rows `make demo` scored are reused here, and the other way round.
    """
    rows = evaluate(
        [scale.run_dir], scale.scoreboard_dir, scale.eval_settings, scale.scoreboard_experts, log=log
    )
    command = f"workbench.notebook.score_run ({scale.name} scale)"
    write_scoreboard(rows, scale.eval_settings, scale.scoreboard_dir, command)
    return rows
