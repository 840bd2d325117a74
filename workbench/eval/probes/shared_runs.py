"""The `run()`s probes share (the dense probes', the classification probes'), each torch-free until it runs,
so the probe modules register without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.eval.probes.registry import DenseTask, ProbeResult, Run
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def dense_run(dense: DenseTask) -> Run:
    """A dense probe's `run()`: `workbench.eval.probes.dense.dense_probe` on its task (imported when run)."""

    def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
        from workbench.eval.probes.dense import dense_probe

        return dense_probe(dense, inputs, settings)

    return run


def classification_run(dataset: str, label: str, prefix: str) -> Run:
    """A classification probe's `run()`: `workbench.eval.probes.classify.classification_probe` on a dataset's
    splits, their label field and the scores' key prefix (imported when run)."""

    def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
        from workbench.eval.probes.classify import classification_probe

        return classification_probe(inputs, dataset, label, prefix, settings.seed)

    return run
