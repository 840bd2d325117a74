"""A written reading of a scoreboard: the comparisons the recipe is about, counted probe by probe."""

from __future__ import annotations

from dataclasses import dataclass

from distill.stages import BASELINE, EUPE_STUDENT, role_of
from workbench.eval.probes import probe_columns
from workbench.eval.scoreboard import FLOOR_ROLE

COMPARISONS = (  # (first role, second role, what the comparison asks)
    (role_of(EUPE_STUDENT), role_of(BASELINE), "the recipe's claim: proxy first beats direct"),
    (role_of(EUPE_STUDENT), role_of("student"), "what stage 3 (the resolution pyramid) adds"),
    (role_of(EUPE_STUDENT), role_of("proxy"), "how much of its proxy the student keeps"),
    (role_of(EUPE_STUDENT), FLOOR_ROLE, "whether distillation taught anything at all"),
)


TIE = 0.02  # values closer than this share of the larger one count as a tie


@dataclass
class ProbeComparison:
    """One probe's values for two encoders; `first_better` is None on a tie (see `compare_roles`)."""

    title: str
    first: float
    second: float
    first_better: bool | None


def role_row(rows: list[dict], role: str) -> dict | None:
    """The first scoreboard row with this role, or None."""
    return next((row for row in rows if row["role"] == role), None)


def compare_roles(rows: list[dict], first: str, second: str, tie: float = TIE) -> list[ProbeComparison]:
    """Probe by probe (where both rows have a value), the first role's encoder against the second's.

    Args:
        rows: scoreboard rows.
        first, second: the roles compared.
        tie: values whose difference is at most this share of the larger magnitude count as a tie.

    Raises:
        ValueError: no row has one of the roles.
    """
    a, b = role_row(rows, first), role_row(rows, second)
    if a is None or b is None:
        raise ValueError(f"no scoreboard row with role '{first if a is None else second}'")
    out = []
    for column in probe_columns():
        x, y = a.get(column.key), b.get(column.key)
        if x is None or y is None:
            continue
        better = None if abs(x - y) <= tie * max(abs(x), abs(y)) else (x > y) == column.higher_is_better
        out.append(ProbeComparison(column.title, x, y, better))
    return out


def written_reading(rows: list[dict]) -> str:
    """Markdown bullets, one per comparison in `COMPARISONS` whose two roles are on the scoreboard.

    Differences within `TIE` (relative) count as neither better nor worse.
    """
    lines = []
    for first, second, question in COMPARISONS:
        if role_row(rows, first) is None or role_row(rows, second) is None:
            continue
        results = compare_roles(rows, first, second)
        wins = [r.title for r in results if r.first_better]
        losses = [r.title for r in results if r.first_better is False]
        lines.append(
            f"- **{first}** vs **{second}** ({question}): better on {len(wins)} of {len(results)} probes"
            + (f" ({', '.join(wins)})" if wins else "")
            + (f"; worse on {', '.join(losses)}" if losses else "")
            + "."
        )
    return "\n".join(lines) + "\n" if lines else "No two of the compared roles are on this scoreboard.\n"
