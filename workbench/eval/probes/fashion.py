"""Fashion-MNIST (Debian's files): kNN and linear probe on the summary vectors; no scores where the dataset is
not installed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.eval.probes.registry import Column, Probe, ProbeResult, register_probe
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """`fashion_knn10`, `fashion_knn20` and `fashion_linear` accuracy."""
    from workbench.eval.probes.classify import classification_probe

    return classification_probe(inputs, "fashion", "labels", "fashion", settings.seed)


PROBE = register_probe(
    Probe(
        name="fashion",
        columns=(Column("fashion_knn20", "F-MNIST kNN-20"), Column("fashion_linear", "F-MNIST linear")),
        settings=("fashion_train", "fashion_test", "fashion_resolution", "batch_size", "seed"),
        run=run,
    )
)
