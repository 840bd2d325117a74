"""Training-free correspondence: test scenes and held-out-photo crops, each paired with a copy warped by a
known random homography; the patch feature at each keypoint of one matched by cosine to the other's
upsampled patch grid (see `workbench.eval.correspondence`); PCK@0.1."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.eval.probes.registry import Column, Probe, ProbeResult, register_probe
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """`correspondence_pck10` over every keypoint, and `correspondence_pck10_<source>` per source."""
    import torch

    from workbench.eval.correspondence import keypoint_hits
    from workbench.eval.probes.inputs import first_patches

    hits = {}
    for split, label in (("scene_pairs", "scenes"), ("photo_pairs", "photos")):
        pairs = getattr(inputs.data, split)
        if len(pairs):
            grids_a = first_patches(inputs, pairs.source, len(pairs))
            hits[label] = keypoint_hits(grids_a, inputs.features(split).patches, pairs)
    scores = {f"correspondence_pck10_{label}": h.float().mean().item() for label, h in hits.items() if len(h)}
    if scores:
        scores["correspondence_pck10"] = torch.cat(list(hits.values())).float().mean().item()
    return ProbeResult(scores)


PROBE = register_probe(
    Probe(
        name="correspondence",
        columns=(Column("correspondence_pck10", "Corresp. PCK@0.1"),),
        settings=(
            "resolution",
            "scene_train",
            "scene_test",
            "photos",
            "photo_split",
            "correspondence_pairs",
            "batch_size",
            "seed",
        ),
        run=run,
    )
)
