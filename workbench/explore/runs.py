"""Reading run folders: the runs under a folder, their config, each stage's metrics, checkpoints, scoreboards.

A run is `RUN/config.yaml` plus one folder per stage (`RUN/proxy`, `RUN/student`, ...) holding
`metrics.jsonl` (one JSON object per logged step) and `checkpoint/`. An evaluation
(`eupe eval --runs RUN --out RUN/eval`) adds `RUN/eval/scoreboard.json` and `RUN/eval/probes/<encoder key>/`.
Everything here is plain data (dataclasses, dicts, pandas frames) for the dashboard and the live demo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from distill.checkpoint import read_meta
from distill.metrics_log import metric_records
from distill.run_dir import RunDir, checkpoint_folder
from distill.stages import STAGE_NAMES, STAGES, role_of
from workbench.eval.scoreboard import COLUMNS, EFFICIENCY, encoder_key, probe_folder

CONTINUES = {stage.name: stage.continues for stage in STAGES}  # the stage each one carries on from
PROBE_TASKS = ("segmentation", "depth", "edges", "text")


@dataclass(frozen=True)
class StageFolder:
    """One stage folder of a run."""

    run: str
    name: str
    folder: Path

    @property
    def label(self) -> str:
        """`run/stage`, as the apps show it."""
        return f"{self.run}/{self.name}"

    @property
    def role(self) -> str:
        """The stage's role in the paper's terms."""
        return role_of(self.name)

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint folder, if the stage has saved one."""
        return checkpoint_folder(self.folder)


@dataclass(frozen=True)
class Run:
    """A run folder and its stages in pipeline order."""

    name: str
    folder: Path
    stages: tuple[StageFolder, ...]

    def stage(self, name: str) -> StageFolder:
        """The stage called `name`."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"run {self.name} has no stage '{name}' (it has: {', '.join(self.stage_names())})")

    def stage_names(self) -> list[str]:
        """The stages' names, in order."""
        return [s.name for s in self.stages]


def is_stage_folder(folder: Path) -> bool:
    """Whether a folder holds a stage's metrics or checkpoint."""
    run = RunDir(folder.parent)
    return run.metrics(folder.name).is_file() or run.has_checkpoint(folder.name)


def read_run(folder: str | Path) -> Run:
    """A run folder's stages, known stages in pipeline order first, then any others by name."""
    folder = Path(folder)
    found = [f for f in sorted(folder.iterdir()) if f.is_dir() and is_stage_folder(f)]
    order = {name: i for i, name in enumerate(STAGE_NAMES)}
    found.sort(key=lambda f: (order.get(f.name, len(order)), f.name))
    return Run(folder.name, folder, tuple(StageFolder(folder.name, f.name, f) for f in found))


def list_runs(root: str | Path) -> list[Run]:
    """The runs in `root` (its subfolders with a config.yaml or a stage), or `root` itself if it is a run.

    A missing `root` has no runs.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    if RunDir(root).config.is_file():
        return [read_run(root)]
    runs = []
    for folder in sorted(f for f in root.iterdir() if f.is_dir()):
        if RunDir(folder).config.is_file() or any(is_stage_folder(f) for f in folder.iterdir() if f.is_dir()):
            runs.append(read_run(folder))
    return runs


def read_config(run: Run) -> dict:
    """The run's config.yaml as a dict ({} when absent)."""
    path = RunDir(run.folder).config
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    return config if isinstance(config, dict) else {}


def read_metrics(stage: StageFolder) -> pd.DataFrame:
    """A stage's logged steps (see `metric_records`), one row per step sorted by step (empty if none yet)."""
    rows = metric_records(stage.folder)
    if not rows:
        return pd.DataFrame({"step": pd.Series(dtype=int)})
    return pd.DataFrame(rows).sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


def loss_terms(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-teacher loss terms (`teacher/term` columns) in long form: step, teacher, term, value."""
    columns = [c for c in metrics.columns if "/" in c]
    if not columns:
        return pd.DataFrame(columns=["step", "teacher", "term", "value"])
    long = metrics.melt(id_vars="step", value_vars=columns, var_name="key", value_name="value")
    long[["teacher", "term"]] = long["key"].str.split("/", n=1, expand=True)
    return long[["step", "teacher", "term", "value"]].dropna()


def curves(stages: list[StageFolder], column: str, starts: dict[str, int] | None = None) -> pd.DataFrame:
    """One metric of several stages side by side: index step, one column per stage label.

    Args:
        starts: stage label -> step offset (e.g. `timeline` starts, to line stages up along the recipe).
    """
    series = {}
    for stage in stages:
        metrics = read_metrics(stage)
        if column in metrics.columns:
            steps = metrics["step"] + (starts or {}).get(stage.label, 0)
            series[stage.label] = metrics[column].set_axis(steps)
    return pd.DataFrame(series).rename_axis("step")


def checkpoint_info(stage: StageFolder) -> dict:
    """What a stage's checkpoint holds: step, architecture, teachers and size ({} when there is none)."""
    if stage.checkpoint is None:
        return {}
    meta = read_meta(stage.checkpoint)
    size = sum(f.stat().st_size for f in stage.checkpoint.glob("*.safetensors"))
    return {
        "step": meta.get("step"),
        "arch": meta.get("model_config", {}).get("arch"),
        "model": meta.get("model_config", {}).get("kwargs", {}),
        "teachers": sorted(meta.get("teachers", {})),
        "size_mb": round(size / 2**20, 2),
        "folder": str(stage.checkpoint),
    }


def timeline(run: Run) -> pd.DataFrame:
    """One row per stage: where it sits in the recipe (start/end in cumulative steps), progress and speed.

    A stage starts where the stage it depends on ends (student after proxy, multires after student);
    the others (proxy, the direct baseline) start at 0, so EUPE's chain and the baseline line up.
    """
    planned = read_config(run).get("stages", {})
    rows, ends = [], {}
    for stage in run.stages:
        metrics = read_metrics(stage)
        steps = int((planned.get(stage.name) or {}).get("steps", 0)) or None
        done = int(metrics["step"].max()) + 1 if len(metrics) else 0
        start = ends.get(CONTINUES.get(stage.name), 0)
        ends[stage.name] = start + (steps or done)
        info = checkpoint_info(stage)
        rows.append(
            {
                "stage": stage.name,
                "role": stage.role,
                "start": start,
                "end": ends[stage.name],
                "steps": steps,
                "logged_steps": done,
                "final_loss": float(metrics["loss"].iloc[-1]) if "loss" in metrics else None,
                "images_per_second": (
                    float(metrics["images_per_second"].mean()) if "images_per_second" in metrics else None
                ),
                "checkpoint_step": info.get("step"),
                "complete": steps is not None and info.get("step") == steps,
            }
        )
    return pd.DataFrame(rows)


def recipe_starts(runs: list[Run]) -> dict[str, int]:
    """Stage label -> the step it starts at on its run's `timeline`."""
    return {f"{run.name}/{row.stage}": int(row.start) for run in runs for row in timeline(run).itertuples()}


@dataclass(frozen=True)
class Scoreboard:
    """A scoreboard written by `eupe eval`: its folder, rows and settings."""

    folder: Path
    rows: tuple[dict, ...]
    settings: dict

    def row_for(self, spec: str) -> dict | None:
        """The row of an encoder, found by its content (`encoder_key`), whatever path named it then or now."""
        key = encoder_key(spec)
        return next((row for row in self.rows if row.get("encoder") == key), None)

    def probes(self, spec: str) -> dict[str, Path]:
        """The dense probes trained on an encoder's features, by task (only those saved)."""
        row = self.row_for(spec)
        if row is None:
            return {}
        folder = probe_folder(self.folder, row["encoder"])
        return {
            task: folder / f"{task}.safetensors"
            for task in PROBE_TASKS
            if (folder / f"{task}.safetensors").is_file()
        }


def read_scoreboard(folder: str | Path) -> Scoreboard:
    """The scoreboard in `folder` (its scoreboard.json)."""
    path = Path(folder) / "scoreboard.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable scoreboard: {error}") from error
    return Scoreboard(Path(folder), tuple(data.get("rows", [])), data.get("settings", {}))


def find_scoreboards(run: Run) -> list[Scoreboard]:
    """Scoreboards written into the run folder or one folder below it (e.g. RUN/eval)."""
    found = sorted(
        {p.parent for p in [*run.folder.glob("scoreboard.json"), *run.folder.glob("*/scoreboard.json")]}
    )
    return [read_scoreboard(folder) for folder in found]


def scoreboard_row(run: Run, spec: str) -> dict | None:
    """An encoder's row in the first of the run's scoreboards that has one."""
    return next((row for board in find_scoreboards(run) if (row := board.row_for(spec)) is not None), None)


def find_probes(runs: list[Run], spec: str) -> tuple[dict[str, Path], Scoreboard | None]:
    """The first scoreboard among the runs with probes for an encoder spec, and those probes."""
    for run in runs:
        for board in find_scoreboards(run):
            probes = board.probes(spec)
            if probes:
                return probes, board
    return {}, None


def scoreboard_frame(rows: list[dict] | tuple[dict, ...]) -> pd.DataFrame:
    """Scoreboard rows as a table: one row per encoder (name, role), efficiency then probe columns titled."""
    keys = [("name", "Encoder"), ("role", "Role"), *EFFICIENCY, *((c.key, c.title) for c in COLUMNS)]
    present = [(k, t) for k, t in keys if any(k in row for row in rows)]
    return pd.DataFrame([[row.get(k) for k, _ in present] for row in rows], columns=[t for _, t in present])


def compare_frame(entries: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scoreboard rows of several encoders side by side, and where each metric is best.

    Args:
        entries: column label -> scoreboard row.

    Returns:
        (values, best): both indexed by metric title with one column per label; `best` is True where a
        value is the best of its row (higher or lower as the metric says) and the row's values differ.
    """
    metrics = [(c.key, c.title, c.higher_is_better) for c in COLUMNS]
    metrics += [(key, title, False) for key, title in EFFICIENCY]
    metrics = [m for m in metrics if any(m[0] in row for row in entries.values())]
    values = pd.DataFrame(
        [[row.get(key) for row in entries.values()] for key, _, _ in metrics],
        index=[title for _, title, _ in metrics],
        columns=list(entries),
        dtype=float,
    )
    best = pd.DataFrame(False, index=values.index, columns=values.columns)
    for (_, title, higher), (_, row) in zip(metrics, values.iterrows(), strict=True):
        present = row.dropna()
        if present.nunique() > 1:
            best.loc[title] = row == (present.max() if higher else present.min())
    return values, best


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """Nested config dicts as `a.b.c` keys (lists kept as values)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(configs: dict[str, dict]) -> pd.DataFrame:
    """The config keys whose values differ between runs: index key, one column per run label."""
    flat = {label: flatten(config) for label, config in configs.items()}
    keys = sorted({key for values in flat.values() for key in values})
    differing = [k for k in keys if len({repr(values.get(k)) for values in flat.values()}) > 1]
    return pd.DataFrame(
        [[repr(values[k]) if k in values else "—" for values in flat.values()] for k in differing],
        index=differing,
        columns=list(flat),
    )
