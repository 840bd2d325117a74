"""Depth of the generated scenes: a linear head on the patch grid, L1 on log-depth; RMSE, AbsRel and
delta < 1.25."""

from workbench.eval.probes.registry import DENSE_SETTINGS, Column, DenseTask, Probe, register_probe
from workbench.eval.probes.shared_runs import dense_run

DENSE = DenseTask(
    task="depth",
    labels="depth",
    tolerance=0,
    scores={"rmse": "depth_rmse", "absrel": "depth_absrel", "delta1": "depth_delta1"},
)
PROBE = register_probe(
    Probe(
        name="depth",
        columns=(
            Column("depth_rmse", "Depth RMSE", higher_is_better=False),
            Column("depth_delta1", "Depth δ<1.25"),
        ),
        settings=DENSE_SETTINGS,
        run=dense_run(DENSE),
        dense=DENSE,
    )
)
