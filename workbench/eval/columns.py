"""The scoreboard's columns: its efficiency figures, then every registered probe's columns."""

from __future__ import annotations

from workbench.eval.probes import Column, probe_columns

EFFICIENCY = (  # measured by `workbench.eval.scoreboard.efficiency`
    Column("params_m", "Params (M)", higher_is_better=False, digits=2, normalised=False),
    Column("gflops", "GFLOPs", higher_is_better=False, digits=2, normalised=False),
    Column("cpu_ms", "CPU ms", higher_is_better=False, digits=1, normalised=False),
)


def decimals(key: str) -> int:
    """Decimals a scoreboard value of `key` is shown with: its column's, 3 for a key no column shows."""
    return next((c.digits for c in (*EFFICIENCY, *probe_columns()) if c.key == key), 3)
