"""Scoreboard rows -> JSON, a Markdown table in the shape of the paper's tables, and a bar chart."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from distill.atomic import atomic_path
from distill.stages import STAGES
from workbench.eval.columns import EFFICIENCY
from workbench.eval.normalised import NORMALISED, with_normalised_scores
from workbench.eval.probes import Column, probe_columns
from workbench.eval.row_cache import write_json
from workbench.eval.scoreboard import EXPERT_ROLE, FLOOR_ROLE, OTHER_ROLE
from workbench.eval.settings import EvalSettings

ROLE_COLOURS = {
    EXPERT_ROLE: "#7f7f7f",
    **{stage.role: stage.colour for stage in STAGES},
    FLOOR_ROLE: "#d62728",
    OTHER_ROLE: "#2ca02c",
}


def cell(value: float | None, digits: int = 3) -> str:
    """A table cell: the value, or an em dash when the probe does not apply."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def best_rows(rows: list[dict], key: str, higher_is_better: bool) -> set[int]:
    """Indices of the non-expert rows holding the best value of a column (bolded in the table)."""
    values = [(i, r[key]) for i, r in enumerate(rows) if r.get(key) is not None and r["role"] != "expert"]
    if not values:
        return set()
    best = (max if higher_is_better else min)(v for _, v in values)
    return {i for i, v in values if v == best}


def scored_columns(rows: list[dict]) -> tuple[Column, ...]:
    """The normalised score's column, where any row has a score, then every probe column."""
    columns = probe_columns()
    return (NORMALISED, *columns) if any(NORMALISED.key in row for row in rows) else columns


def markdown_table(rows: list[dict]) -> str:
    """Rows = encoders, columns = efficiency, the normalised score (where there is a random floor), then
    probes; the best student/proxy value per column in bold."""
    rows = with_normalised_scores(rows)
    columns = scored_columns(rows)
    header = ["Encoder", "Role", *(c.title for c in (*EFFICIENCY, *columns))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    bold = {c.key: best_rows(rows, c.key, c.higher_is_better) for c in columns}
    for i, row in enumerate(rows):
        cells = [row["name"], row["role"]]
        cells += [cell(row.get(c.key), c.digits) for c in EFFICIENCY]
        for column in columns:
            text = cell(row.get(column.key), column.digits)
            cells.append(f"**{text}**" if i in bold[column.key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict]) -> Figure:
    """One panel for the normalised score (where there is a random floor) and one per probe, one bar per
    encoder coloured by role."""
    rows = with_normalised_scores(rows)
    columns = [c for c in scored_columns(rows) if any(r.get(c.key) is not None for r in rows)]
    ncols = 4
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    names = [r["name"] for r in rows]
    colours = [ROLE_COLOURS.get(r["role"], ROLE_COLOURS[OTHER_ROLE]) for r in rows]
    for ax, column in zip(axes.flat, columns, strict=False):
        values = [r.get(column.key) if r.get(column.key) is not None else 0.0 for r in rows]
        ax.barh(range(len(rows)), values, color=colours)
        ax.set_yticks(range(len(rows)), names if ax in axes[:, 0] else [""] * len(rows), fontsize=7)
        ax.invert_yaxis()
        arrow = "↑" if column.higher_is_better else "↓"
        ax.set_title(f"{column.title} {arrow}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in ROLE_COLOURS.values()]
    fig.legend(handles, list(ROLE_COLOURS), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def write_scoreboard(rows: list[dict], settings: EvalSettings, out: Path, command: str) -> dict[str, Path]:
    """Write scoreboard.json, scoreboard.md (with the command and settings) and scoreboard.png into `out`.

    The JSON rows gain their `normalised_score` here: it depends on the other rows.
    """
    paths = {
        "json": out / "scoreboard.json",
        "markdown": out / "scoreboard.md",
        "chart": out / "scoreboard.png",
    }
    rows = with_normalised_scores(rows)
    write_json(paths["json"], {"command": command, "settings": asdict(settings), "rows": rows})
    settings_line = ", ".join(f"{k}={v}" for k, v in asdict(settings).items())
    text = f"Made by `{command}` ({settings_line}).\n\n{markdown_table(rows)}"
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(text)
    with atomic_path(paths["chart"]) as tmp:
        bar_chart(rows).savefig(tmp, dpi=110, format="png")
    return paths
