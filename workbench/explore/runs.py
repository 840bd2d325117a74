"""Reading run folders: the runs under a folder, their config, each stage's metrics, checkpoints, scoreboards.

A run is `RUN/config.yaml` plus one folder per stage (`RUN/proxy`, `RUN/student`, ...) holding
`metrics.jsonl` (one JSON object per logged step) and `checkpoint/`. An evaluation
(`eupe eval --runs RUN --out RUN/eval`) adds `RUN/eval/scoreboard.json` and `RUN/eval/probes/<encoder key>/`.
Everything here is plain data (dataclasses, dicts, pandas frames) for the dashboard and the live demo.
A bad file (unreadable, truncated, not the shape it should have) raises a one-line ValueError naming it;
functions that read many files take a `warn` callable instead, tell it the problem and go on without it.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from safetensors import SafetensorError

from distill.checkpoint import read_meta
from distill.metrics_log import metric_records
from distill.run_dir import METRICS_FILE, MODEL_FILE, RunDir, checkpoint_folder
from distill.stages import EXPERTS, STAGE_NAMES, STAGES, role_of
from workbench.eval.columns import EFFICIENCY, decimals
from workbench.eval.encoders import is_floor
from workbench.eval.normalised import NORMALISED, with_normalised_scores
from workbench.eval.probes import dense_probes, probe_columns
from workbench.eval.row_cache import encoder_key, probe_folder
from workbench.explore.floor import floor_name

CONTINUES = {stage.name: stage.continues for stage in STAGES}  # the stage each one carries on from
TAUGHT_BY = {stage.name: stage.taught_by for stage in STAGES}
QUIET_S = 120  # a run none of whose files changed for this long is not training (finished, stopped, crashed)
BAD_CHECKPOINT = (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError)
# How values are shown: probe scores with 3 decimals, efficiency as the Markdown scoreboard has it, losses
# (`loss` and the `teacher/term` columns) with 4 significant digits.
METRIC_FORMATS = {"loss": "{:.4g}", "lr": "{:.3g}", "grad_norm": "{:.3g}", "images_per_second": "{:.1f}"}
Warn = Callable[[str], object]
OTHER_COLOUR = "#7f7f7f"  # a folder that is not a known stage


def scored() -> list[tuple[str, str, bool]]:
    """(key, title, higher is better) of every scored metric: the normalised score, the registered probes'
    columns, efficiency."""
    return [(c.key, c.title, c.higher_is_better) for c in (NORMALISED, *probe_columns(), *EFFICIENCY)]


def stage_colour(name: str) -> str:
    """A stage's colour in every chart: the stage table's (grey for a folder that is not a known stage)."""
    return next((stage.colour for stage in STAGES if stage.name == name), OTHER_COLOUR)


def ignore(problem: str) -> None:
    """A `warn` that lets a problem pass."""


def is_number(value: object) -> bool:
    """Whether a JSON value is a number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_whole(value: object) -> bool:
    """Whether a JSON value is a whole number (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def value_format(key: str) -> str:
    """The format a metrics value (see `METRIC_FORMATS`) or scoreboard value (as the scoreboard's table shows
    it) of `key` is shown in."""
    key = "loss" if "/" in key else key
    return METRIC_FORMATS.get(key, f"{{:.{decimals(key)}f}}")


def shown(value: float | None, key: str) -> str:
    """A value as the apps show it; an em dash when there is none."""
    return (
        "—" if value is None or not is_number(value) or math.isnan(value) else value_format(key).format(value)
    )


def title_formats() -> dict[str, str]:
    """Scored metric title (as `scoreboard_frame` and `compare_frame` show it) -> its format."""
    return {title: value_format(key) for key, title, _ in scored()}


def one_line(error: BaseException) -> str:
    """An error's message, first line only."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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

    Raises:
        ValueError: `root` is not a readable tree (e.g. `/proc`).
    """
    root = Path(root)
    try:
        if not root.is_dir():
            return []
        if RunDir(root).config.is_file():
            return [read_run(root)]
        runs = []
        for folder in sorted(f for f in root.iterdir() if f.is_dir()):
            if RunDir(folder).config.is_file() or any(
                is_stage_folder(f) for f in folder.iterdir() if f.is_dir()
            ):
                runs.append(read_run(folder))
    except OSError as error:
        raise ValueError(
            f"{root} is not a readable folder of runs ({error.strerror}: {error.filename})"
        ) from error
    return runs


def read_config(run: Run) -> dict:
    """The run's config.yaml as a dict ({} when absent or empty)."""
    path = RunDir(run.folder).config
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path} is not valid YAML: {one_line(error)}") from error
    if not isinstance(config, dict | None):
        raise ValueError(f"{path} is not a config: it holds a {type(config).__name__}, not a mapping")
    return config or {}


def planned_steps(run: Run, warn: Warn = ignore) -> dict[str, int]:
    """Stage name -> the steps the run's config plans for it ({} when config.yaml is bad, with a warning)."""
    try:
        stages = read_config(run).get("stages") or {}
        if not isinstance(stages, dict):
            raise ValueError(f"{RunDir(run.folder).config}: `stages` is not a mapping")
    except ValueError as error:
        warn(str(error))
        return {}
    planned = {}
    for name, stage in stages.items():
        steps = stage.get("steps") if isinstance(stage, dict) else None
        if is_whole(steps) and steps > 0:
            planned[name] = steps
    return planned


def is_metrics_record(record: dict) -> bool:
    """Whether a logged record is a step's metrics: a whole step number >= 0, every value a number or null."""
    step = record.get("step")
    return (
        is_whole(step) and step >= 0 and all(value is None or is_number(value) for value in record.values())
    )


def read_metrics(stage: StageFolder, warn: Warn = ignore) -> pd.DataFrame:
    """A stage's logged steps (see `metric_records`), one row per step sorted by step (empty if none yet).

    Records that are not metrics (`is_metrics_record`) are left out; `warn` is told, and passed what
    `metric_records` warns of (malformed lines).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = metric_records(stage.folder)
    for caught_warning in caught:
        warn(str(caught_warning.message))
    rows = [record for record in records if is_metrics_record(record)]
    if len(rows) < len(records):
        first = next(json.dumps(record) for record in records if not is_metrics_record(record))
        warn(
            f"{stage.folder / METRICS_FILE}: left out {len(records) - len(rows)} record(s) with a step that "
            f"is not a whole number or a value that is not a number (first: {first[:80]})"
        )
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


def objective(stage: StageFolder) -> str:
    """What a stage's loss measures the distance to: "the experts", or its run's teacher stage ("RUN/proxy").

    Losses of stages with different objectives are not comparable.
    """
    teacher = TAUGHT_BY.get(stage.name, stage.name)
    return "the experts" if teacher == EXPERTS else f"{stage.run}/{teacher}"


def is_loss(column: str) -> bool:
    """Whether a metrics column is a loss (the total, or a `teacher/term`): it depends on the objective."""
    return column == "loss" or "/" in column


def curves(
    stages: list[StageFolder], column: str, starts: dict[str, int] | None = None, relative: bool = False
) -> pd.DataFrame:
    """One metric of several stages side by side: index step, one column per stage label.

    Args:
        starts: stage label -> step offset (e.g. `timeline` starts, to line stages up along the recipe).
        relative: each stage's values divided by its first logged value.
    """
    series = {}
    for stage in stages:
        metrics = read_metrics(stage)
        if column in metrics.columns:
            steps = metrics["step"] + (starts or {}).get(stage.label, 0)
            values = metrics[column].set_axis(steps)
            series[stage.label] = (
                values / values.dropna().iloc[0] if relative and values.notna().any() else values
            )
    return pd.DataFrame(series).rename_axis("step")


def identical_curves(frame: pd.DataFrame) -> list[list[str]]:
    """Groups (two or more) of a `curves` frame's columns with the same values at the same steps: drawn,
    they lie on top of each other and only the last one shows."""
    groups: dict[tuple, list[str]] = {}
    for column in frame.columns:
        values = frame[column].dropna()
        groups.setdefault((tuple(values.index), tuple(values)), []).append(column)
    return [group for group in groups.values() if len(group) > 1]


def checkpoint_info(stage: StageFolder) -> dict:
    """What a stage's checkpoint holds: step, architecture, teachers and size ({} when there is none).

    Raises:
        ValueError: the checkpoint cannot be read (truncated, not a checkpoint).
    """
    if stage.checkpoint is None:
        return {}
    try:
        meta = read_meta(stage.checkpoint)
        size = sum(f.stat().st_size for f in stage.checkpoint.glob("*.safetensors"))
        model = meta.get("model_config") or {}
        return {
            "step": meta.get("step"),
            "arch": model.get("arch"),
            "model": model.get("kwargs", {}),
            "teachers": sorted(meta.get("teachers", {})),
            "size_mb": round(size / 2**20, 2),
            "folder": str(stage.checkpoint),
        }
    except BAD_CHECKPOINT as error:
        raise ValueError(
            f"{stage.checkpoint / MODEL_FILE} is not a readable checkpoint: {one_line(error)}"
        ) from error


def checkpoint_step(stage: StageFolder, warn: Warn = ignore) -> int | None:
    """The step of a stage's checkpoint (None when it has none, or a bad one: then `warn` is told)."""
    try:
        step = checkpoint_info(stage).get("step")
    except ValueError as error:
        warn(str(error))
        return None
    return step if is_whole(step) else None


def timeline(run: Run, warn: Warn = ignore) -> pd.DataFrame:
    """One row per stage: where it sits in the recipe (start/end in cumulative steps), progress and speed.

    A stage starts where the stage it depends on ends (student after proxy, multires after student);
    the others (proxy, the direct baseline) start at 0, so EUPE's chain and the baseline line up.
    Bad files (config, metrics, checkpoints) leave their cells empty, and `warn` is told.
    """
    planned = planned_steps(run, warn)
    rows, ends = [], {}
    for stage in run.stages:
        metrics = read_metrics(stage, warn)
        steps = planned.get(stage.name)
        done = int(metrics["step"].max()) + 1 if len(metrics) else 0
        start = ends.get(CONTINUES.get(stage.name), 0)
        ends[stage.name] = start + (steps or done)
        saved = checkpoint_step(stage, warn)
        rows.append(
            {
                "stage": stage.name,
                "role": stage.role,
                "start": start,
                "end": ends[stage.name],
                "steps": steps,
                "logged_steps": done,
                "final_loss": metrics["loss"].iloc[-1] if "loss" in metrics else None,
                "images_per_second": metrics.get("images_per_second", pd.Series(dtype=float)).mean(),
                "checkpoint_step": saved,
                "complete": steps is not None and saved == steps,
            }
        )
    if not rows:
        return pd.DataFrame()
    whole = ["start", "end", "steps", "logged_steps", "checkpoint_step"]
    return pd.DataFrame(rows).astype(
        dict.fromkeys(whole, "Int64") | {"final_loss": float, "images_per_second": float}
    )


def last_change(run: Run) -> float:
    """When a file of the run last changed (seconds since the epoch): the run folder, what it holds, and what
    its stage folders and checkpoints hold."""
    folders = [
        run.folder,
        *(s.folder for s in run.stages),
        *(s.checkpoint for s in run.stages if s.checkpoint),
    ]
    times = []
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                times += [folder.stat().st_mtime, *(e.stat().st_mtime for e in entries)]
        except OSError:  # a file renamed away while a checkpoint is saved, or a folder not readable
            continue
    return max(times, default=0.0)


def is_running(run: Run, now: float | None = None) -> bool:
    """Whether a run is training: a stage its config plans has no final checkpoint yet, and a file of the run
    changed in the last `QUIET_S` seconds."""
    if (now or time.time()) - last_change(run) > QUIET_S:
        return False
    saved = {stage.name: checkpoint_step(stage) for stage in run.stages}
    planned = planned_steps(run)
    return not planned or any(saved.get(name) != steps for name, steps in planned.items())


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
            for task in dense_probes()
            if (folder / f"{task}.safetensors").is_file()
        }


def read_scoreboard(folder: str | Path) -> Scoreboard:
    """The scoreboard in `folder` (its scoreboard.json).

    Raises:
        ValueError: the file is not readable JSON, or not rows of scores.
    """
    path = Path(folder) / "scoreboard.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable scoreboard: {one_line(error)}") from error
    rows = data.get("rows", []) if isinstance(data, dict) else None
    settings = data.get("settings", {}) if isinstance(data, dict) else None
    if (
        not isinstance(rows, list)
        or not all(isinstance(row, dict) for row in rows)
        or not isinstance(settings, dict)
    ):
        raise ValueError(
            f"{path} is not a scoreboard: expected {{'rows': [{{...}}, ...], 'settings': {{...}}}}"
        )
    for i, row in enumerate(rows):
        wrong = [key for key, _, _ in scored() if row.get(key) is not None and not is_number(row[key])]
        if wrong:
            raise ValueError(f"{path}: row {i + 1} has a {wrong[0]} that is not a number ({row[wrong[0]]!r})")
    rows = [row | {"name": named(row)} for row in with_normalised_scores(rows)]
    return Scoreboard(Path(folder), tuple(rows), settings)


def named(row: dict) -> str | None:
    """A scoreboard row's name as the apps show it: a random floor by what it is (`floor_name`, while its
    checkpoint is there to say), any other row by its own name."""
    spec = row.get("spec")
    if isinstance(spec, str) and is_floor(spec):
        try:
            return floor_name(spec)
        except (*BAD_CHECKPOINT, FileNotFoundError):
            pass
    return row.get("name")


def find_scoreboards(run: Run, warn: Warn = ignore) -> list[Scoreboard]:
    """Scoreboards written into the run folder or one folder below it (e.g. RUN/eval); bad ones are passed
    over, and `warn` is told."""
    found = sorted(
        {p.parent for p in [*run.folder.glob("scoreboard.json"), *run.folder.glob("*/scoreboard.json")]}
    )
    boards = []
    for folder in found:
        try:
            boards.append(read_scoreboard(folder))
        except ValueError as error:
            warn(str(error))
    return boards


def scoreboard_row(run: Run, spec: str, warn: Warn = ignore) -> dict | None:
    """An encoder's row in the first of the run's (readable) scoreboards that has one.

    Raises:
        ValueError: `spec` names a checkpoint that cannot be read (its rows are found by its content).
    """
    try:
        return next(
            (row for board in find_scoreboards(run, warn) if (row := board.row_for(spec)) is not None), None
        )
    except BAD_CHECKPOINT as error:
        raise ValueError(f"{spec} is not a readable checkpoint: {one_line(error)}") from error


def find_probes(runs: list[Run], spec: str) -> tuple[dict[str, Path], Scoreboard | None]:
    """The first scoreboard among the runs with probes for an encoder spec, and those probes."""
    for run in runs:
        for board in find_scoreboards(run):
            probes = board.probes(spec)
            if probes:
                return probes, board
    return {}, None


def scoreboard_frame(rows: list[dict] | tuple[dict, ...]) -> pd.DataFrame:
    """Scoreboard rows as a table: one row per encoder (name, role), efficiency, the normalised score, then
    probe columns, titled."""
    keys = [
        ("name", "Encoder"),
        ("role", "Role"),
        *((c.key, c.title) for c in (*EFFICIENCY, NORMALISED, *probe_columns())),
    ]
    present = [(k, t) for k, t in keys if any(k in row for row in rows)]
    return pd.DataFrame([[row.get(k) for k, _ in present] for row in rows], columns=[t for _, t in present])


def compare_frame(entries: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scoreboard rows of several encoders side by side, and where each metric is best.

    Args:
        entries: column label -> scoreboard row.

    Returns:
        (values, best): both indexed by metric title with one column per label; `best` is True where a
        value is the best of its row (higher or lower as the metric says) as shown (`shown`): a best value
        that two or more share is a tie, with none highlighted.
    """
    metrics = [m for m in scored() if any(m[0] in row for row in entries.values())]
    values = pd.DataFrame(
        [[row.get(key) for row in entries.values()] for key, _, _ in metrics],
        index=[title for _, title, _ in metrics],
        columns=list(entries),
        dtype=float,
    )
    best = pd.DataFrame(False, index=values.index, columns=values.columns)
    for (key, title, higher), (_, row) in zip(metrics, values.iterrows(), strict=True):
        displayed = row.dropna().map(lambda value, key=key: float(shown(value, key)))
        top = displayed.max() if higher else displayed.min()
        if len(displayed) > 1 and (displayed == top).sum() == 1:
            best.loc[title, displayed.idxmax() if higher else displayed.idxmin()] = True
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
