"""Semantic segmentation of the generated scenes (11 classes): a linear head on the patch grid; mIoU."""

from workbench.eval.probes.registry import DENSE_SETTINGS, Column, DenseTask, Probe, register_probe
from workbench.eval.probes.shared_runs import dense_run

DENSE = DenseTask(
    task="segmentation",
    labels="segmentation",
    tolerance=0,
    scores={"miou": "seg_miou", "pixel_accuracy": "seg_pixel_accuracy"},
)
PROBE = register_probe(
    Probe(
        name="segmentation",
        columns=(Column("seg_miou", "Seg mIoU"),),
        settings=DENSE_SETTINGS,
        run=dense_run(DENSE),
        dense=DENSE,
    )
)
