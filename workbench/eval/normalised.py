"""A normalised score: each probe placed between the random floor (0) and the best expert (1).

Per scoreboard column c, an encoder's normalised value is (score - floor) / (best expert - floor),
where `floor` is the random-init row's value and `best expert` the best expert value in that column
(the highest, or the lowest where lower is better, e.g. depth RMSE: the ratio is the same either way).
A column counts only where the floor and at least one expert have a value, and where the best expert
closes at least `MIN_EXPERT_SHARE` of the floor's distance to a perfect score (1 for the scores, all in
[0, 1]; 0 for errors): where a random network is nearly as good as the experts (e.g. linear probes on
the generated scenes), the column does not measure what the experts know, and its small denominator
would turn noise into large normalised values. A column its probe declares out of the score
(`Column.normalised` False: the agreement columns, which experts do not have) never counts. Every usable
column counts once, also where two columns read the same probe differently (kNN-20 and linear; depth RMSE
and δ<1.25). The columns are the registered probes' (`workbench.eval.probes`), read at each call.

An encoder's normalised score is the mean of its normalised values over the usable columns it has.
Without a floor row no column is usable, and no encoder has a score.
"""

from __future__ import annotations

from workbench.eval.probes import Column, probe_columns
from workbench.eval.scoreboard import EXPERT_ROLE, FLOOR_ROLE

NORMALISED = Column("normalised_score", "Norm. score")
MIN_EXPERT_SHARE = 0.25  # of the floor's distance to a perfect score, that the best expert must close


def perfect(column: Column) -> float:
    """A column's perfect value: 1 for the scores (all in [0, 1]), 0 for the errors."""
    return 1.0 if column.higher_is_better else 0.0


def column_references(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """(floor, best expert) of every usable column of a scoreboard, keyed by column key: the registered
    probes' columns that may enter the score, where this scoreboard's floor and experts qualify them."""
    floor = next((row for row in rows if row["role"] == FLOOR_ROLE), None)
    if floor is None:
        return {}
    references = {}
    for column in (c for c in probe_columns() if c.normalised):
        experts = [r[column.key] for r in rows if r["role"] == EXPERT_ROLE and r.get(column.key) is not None]
        if floor.get(column.key) is None or not experts:
            continue
        best = (max if column.higher_is_better else min)(experts)
        reach = perfect(column) - floor[column.key]
        if reach and (best - floor[column.key]) / reach >= MIN_EXPERT_SHARE:
            references[column.key] = (floor[column.key], best)
    return references


def normalised_columns(row: dict, references: dict[str, tuple[float, float]]) -> dict[str, float]:
    """A row's normalised value in each usable column it has (see `column_references`)."""
    return {
        key: (row[key] - floor) / (best - floor)
        for key, (floor, best) in references.items()
        if row.get(key) is not None
    }


def normalised_score(row: dict, references: dict[str, tuple[float, float]]) -> float | None:
    """The mean of a row's normalised values, or None where it has none."""
    values = normalised_columns(row, references)
    return sum(values.values()) / len(values) if values else None


def with_normalised_scores(rows: list[dict]) -> list[dict]:
    """Copies of a scoreboard's rows, each with its `normalised_score` where it has one."""
    references = column_references(rows)
    scored = [(row, normalised_score(row, references)) for row in rows]
    return [row | ({} if score is None else {NORMALISED.key: score}) for row, score in scored]
