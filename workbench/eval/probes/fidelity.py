"""Label-free fidelity on crops of the held-out photos: linear CKA of an encoder's patch features with each
expert's own (`<expert>_cka`; an expert's own column is 1) and the effective rank of its patch features
(`rankme`). No labels and no trained head: the figures the training timeline plots per snapshot
(`workbench.eval.fidelity`), for finished encoders. They describe, they do not rank: a random network's
features have a high effective rank, so these columns stay out of the normalised score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.teachers.registry import registered_teachers
from workbench.eval.probes.registry import Column, Probe, ProbeResult, register_probe
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """`<expert>_cka` for every expert of the evaluation, and `rankme`, on the photo crops."""
    from workbench.eval.fidelity import grid_cka, rankme

    patches = inputs.features("photos").patches.float()
    own = references.ready().own
    scores = {f"{name}_cka": grid_cka(patches, features.patches.float()) for name, features in own.items()}
    scores["rankme"] = rankme(patches)
    return ProbeResult(scores)


PROBE = register_probe(
    Probe(
        name="fidelity",
        columns=(
            *(
                Column(f"{name}_cka", f"{name.capitalize()} CKA", normalised=False)
                for name in registered_teachers()
            ),
            Column("rankme", "RankMe", digits=1, normalised=False),
        ),
        settings=("resolution", "photos", "photo_split", "batch_size", "seed"),
        run=run,
    )
)
