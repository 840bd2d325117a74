"""A dense probe's `run()`, torch-free until it runs (the probe modules register without torch)."""

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
