"""The generated scenes' exact instance edges: a linear head on the patch grid, weighted BCE; F-score at the
best single threshold, with a 1 px tolerance."""

from workbench.eval.probes.registry import DENSE_SETTINGS, Column, DenseTask, Probe, register_probe
from workbench.eval.probes.shared_runs import dense_run

DENSE = DenseTask(task="binary", labels="edges", tolerance=1, scores={"f": "edges_f"})
PROBE = register_probe(
    Probe(
        name="edges",
        columns=(Column("edges_f", "Edges F"),),
        settings=DENSE_SETTINGS,
        run=dense_run(DENSE),
        dense=DENSE,
    )
)
