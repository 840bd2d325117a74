"""Video label propagation, the DINO way, on generated clips of moving shapes with exact masks: the first
frame's masks are carried to the next frames by patch-feature affinity (`workbench.eval.propagation`);
J (region IoU), F (boundary) and their mean J&F over the later frames. The patch grid's fineness weighs as
much as the features here (a random 8x8 grid beats a trained 4x4 one at 128 px), so the column stays out of
the normalised score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.eval.probes.registry import Column, Probe, ProbeResult, register_probe
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """`propagation_j`, `propagation_f` and `propagation_jf` over `settings.clips` clips."""
    import torch

    from distill.data.clips import ClipGenerator
    from workbench.eval.propagation import propagation_scores

    clips = ClipGenerator(settings.resolution, frames=settings.clip_frames, seed=settings.seed)
    with torch.no_grad():
        return ProbeResult(propagation_scores(inputs.encoder, clips.batch(0, settings.clips)))


PROBE = register_probe(
    Probe(
        name="propagation",
        columns=(Column("propagation_jf", "Video J&F", normalised=False),),
        settings=("resolution", "clips", "clip_frames", "seed"),
        run=run,
    )
)
