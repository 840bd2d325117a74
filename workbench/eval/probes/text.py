"""The generated scenes' glyph masks: a linear head on the patch grid, weighted BCE; F-score at the best
single threshold."""

from workbench.eval.probes.registry import DENSE_SETTINGS, Column, DenseTask, Probe, register_probe
from workbench.eval.probes.shared_runs import dense_run

DENSE = DenseTask(task="binary", labels="text", tolerance=0, scores={"f": "text_f"})
PROBE = register_probe(
    Probe(
        name="text",
        columns=(Column("text_f", "Text F"),),
        settings=DENSE_SETTINGS,
        run=dense_run(DENSE),
        dense=DENSE,
    )
)
