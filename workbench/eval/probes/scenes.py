"""The generated scenes' classes (12): kNN and linear probe on the summary vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.eval.probes.registry import Column, Probe, ProbeResult, register_probe
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """`scene_knn10`, `scene_knn20` and `scene_linear` accuracy."""
    from workbench.eval.probes.classify import classification_probe

    return classification_probe(inputs, "scenes", "scene_class", "scene", settings.seed)


PROBE = register_probe(
    Probe(
        name="scenes",
        columns=(Column("scene_knn20", "Scenes kNN-20"), Column("scene_linear", "Scenes linear")),
        settings=("resolution", "scene_train", "scene_test", "batch_size", "seed"),
        run=run,
    )
)
