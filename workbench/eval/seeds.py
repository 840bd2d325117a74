"""One recipe under several seeds: a run and a scoreboard per seed, then mean ± std per encoder role.

Seed k trains every configured stage into `<out>/<name>-seed<k>` with data.seed = train.seed = k (the
views, the initialisation and the batch order), and is scored into that run's `eval` folder as
`eupe eval --runs RUN --out RUN/eval` does; both resume. The comparison's rows are the encoders by
role (each expert by name, the proxy, the EUPE students, the direct student, the random floor), its
cells the mean ± sample standard deviation over seeds of the normalised score and of every probe
column; a last row holds the per-seed paired difference EUPE (stages 1-2-3) minus direct.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from distill.atomic import atomic_path
from distill.config import load_config
from distill.pipeline import configured_stages, run_stages
from distill.stages import BASELINE, EUPE_STUDENT, role_of
from workbench.eval.normalised import NORMALISED, with_normalised_scores
from workbench.eval.probes import Column, probe_columns
from workbench.eval.report import write_scoreboard
from workbench.eval.row_cache import write_json
from workbench.eval.scoreboard import EXPERT_ROLE, evaluate
from workbench.eval.settings import EvalSettings

PAIRED = (role_of(EUPE_STUDENT), role_of(BASELINE))  # the recipe's claim: the first beats the second


def compared() -> tuple[Column, ...]:
    """The columns a comparison shows: the normalised score, then every probe's."""
    return (NORMALISED, *probe_columns())


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (ddof = 1; None for a single value) of `n` values."""

    mean: float
    std: float | None
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f}" if self.std is None else f"{self.mean:.3f} ± {self.std:.3f}"


def spread(values: list[float]) -> Spread:
    """The mean and sample standard deviation of at least one value."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(statistics.fmean(values), std, len(values))


def row_label(row: dict) -> str:
    """What names an encoder across seeds: an expert's name, any other encoder's role."""
    return f"{row['name']} (expert)" if row["role"] == EXPERT_ROLE else row["role"]


def by_label(rows: list[dict]) -> dict[str, dict]:
    """One seed's scoreboard rows, with their normalised scores, keyed by `row_label`."""
    return {row_label(row): row for row in with_normalised_scores(rows)}


def column_spreads(per_seed: list[dict]) -> dict[str, Spread]:
    """Column key -> spread of its values over seeds, for the compared columns with any value."""
    values = {c.key: [row[c.key] for row in per_seed if row.get(c.key) is not None] for c in compared()}
    return {key: spread(found) for key, found in values.items() if found}


def aggregate(boards: list[list[dict]]) -> dict[str, dict[str, Spread]]:
    """Encoder label -> column key -> spread over seeds; labels in the order the scoreboards list them.

    Args:
        boards: one seed's scoreboard rows each.
    """
    seeds = [by_label(rows) for rows in boards]
    labels = dict.fromkeys(label for seed in seeds for label in seed)
    return {label: column_spreads([seed[label] for seed in seeds if label in seed]) for label in labels}


def paired_difference(boards: list[list[dict]], first: str, second: str) -> dict[str, Spread]:
    """Column key -> spread over seeds of the difference first - second within each seed.

    Only seeds whose scoreboard has both encoders, and columns where both have a value, count.

    Args:
        boards: one seed's scoreboard rows each.
        first, second: encoder labels (see `row_label`).
    """
    differences = []
    for seed in map(by_label, boards):
        if first in seed and second in seed:
            a, b = seed[first], seed[second]
            keys = [c.key for c in compared() if a.get(c.key) is not None and b.get(c.key) is not None]
            differences.append({key: a[key] - b[key] for key in keys})
    return column_spreads(differences)


def comparison_table(spreads: dict[str, dict[str, Spread]], difference: dict[str, Spread]) -> str:
    """Markdown: one line per encoder, then the paired difference (if any); missing cells are dashes."""
    columns = [c for c in compared() if any(c.key in row for row in spreads.values())]
    lines = ["| Encoder | " + " | ".join(c.title for c in columns) + " |", "|---|" + "---:|" * len(columns)]
    named = [*spreads.items(), *([(f"{PAIRED[0]} − {PAIRED[1]}, paired", difference)] if difference else [])]
    for label, row in named:
        lines.append(f"| {label} | " + " | ".join(str(row.get(c.key, "—")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(
    spreads: dict[str, dict[str, Spread]], difference: dict[str, Spread], runs: list[Path], command: str
) -> str:
    """The comparison table with what it is: the command, the seeds and runs, how to read the cells."""
    lower = [c.title for c in probe_columns() if not c.higher_is_better]
    cells = "mean ± sample std (ddof = 1) over seeds" if len(runs) > 1 else "the one seed's value"
    text = (
        f"Made by `{command}`: {len(runs)} seed{'s' if len(runs) > 1 else ''} "
        f"(data.seed = train.seed = 0..{len(runs) - 1}; runs {', '.join(str(r) for r in runs)}, "
        f"each scored into its eval folder). Cells: {cells}. {NORMALISED.title}: each probe placed "
        f"between the random floor (0) and the best expert (1), averaged over the usable probe columns.\n"
    )
    if difference:
        text += (
            f"Last row: {PAIRED[0]} minus {PAIRED[1]} within each seed, {cells}; "
            f"lower is better on {', '.join(lower)}, where a negative difference favours the first.\n"
        )
    return text + "\n" + comparison_table(spreads, difference)


def comparison_json(
    spreads: dict[str, dict[str, Spread]],
    difference: dict[str, Spread],
    runs: list[Path],
    settings: EvalSettings,
    command: str,
) -> dict:
    """The comparison as data: a spread per encoder label and column, and per column of the difference."""

    def cells(row: dict[str, Spread]) -> dict[str, dict]:
        return {key: asdict(value) for key, value in row.items()}

    paired = {"first": PAIRED[0], "second": PAIRED[1]} | cells(difference)
    return {
        "command": command,
        "seeds": len(runs),
        "runs": [str(run) for run in runs],
        "settings": asdict(settings),
        "rows": [{"encoder": label} | cells(row) for label, row in spreads.items()],
        "paired_difference": paired if difference else None,
    }


def seed_run(out: Path, name: str, seed: int) -> Path:
    """The run folder of one seed."""
    return Path(out) / f"{name}-seed{seed}"


def train_seeds(config: str | Path, overrides: list[str], seeds: int, out: Path, name: str) -> list[Path]:
    """Train every configured stage, in pipeline order, once per seed 0..seeds-1 (resuming finished work).

    Seed k runs into `seed_run(out, name, k)` with the overrides data.seed=k and train.seed=k added last,
    so each run's config.yaml records its seed.

    Raises:
        ValueError: seeds < 1, or a bad config or override.
        FileNotFoundError: no such config file.
    """
    if seeds < 1:
        raise ValueError(f"the number of seeds must be at least 1, not {seeds}")
    runs = []
    for seed in range(seeds):
        seeded = load_config(config, [*overrides, f"data.seed={seed}", f"train.seed={seed}"])
        runs.append(seed_run(out, name, seed))
        run_stages(seeded, runs[-1], configured_stages(seeded))
    return runs


def compare_seeds(
    runs: list[Path],
    settings: EvalSettings,
    out: Path,
    name: str,
    command: str,
    experts: list[str] | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[str, dict[str, Path]]:
    """Score each seed's run into RUN/eval (resuming saved rows), then write the comparison.

    The experts are scored once, with the first run, and their rows shared by every seed's scoreboard.

    Args:
        runs: the seeds' run folders, seed 0 first (see `train_seeds`).
        settings: the evaluation settings, the same for every seed.
        out, name: the comparison goes to `<out>/<name>-compare.md` and `.json`.
        command: the command line, recorded in every output.
        experts: the experts scored (default: all).
        device: where features are extracted.
        log: progress lines.

    Returns:
        The comparison's Markdown and the paths written.
    """
    boards, expert_rows = [], None
    for run in runs:  # the experts do not depend on the seed: scored with the first run, shared after
        if expert_rows is None:
            rows = evaluate([run], run / "eval", settings, experts, log=log, device=device)
            expert_rows = [row for row in rows if row["role"] == EXPERT_ROLE]
        else:
            rows = expert_rows + evaluate([run], run / "eval", settings, [], log=log, device=device)
        write_scoreboard(rows, settings, run / "eval", command)
        boards.append(rows)
    paths = {suffix: Path(out) / f"{name}-compare.{suffix}" for suffix in ("md", "json")}
    spreads, difference = aggregate(boards), paired_difference(boards, *PAIRED)
    markdown = comparison_markdown(spreads, difference, runs, command)
    write_json(paths["json"], comparison_json(spreads, difference, runs, settings, command))
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown)
    return markdown, paths
