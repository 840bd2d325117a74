"""How well an encoder's expert-space outputs, read by each expert's own head, agree with the expert, on crops
of the evaluation's photos (by default the held-out ones, which no training view crops; see `photo_split`).
Experts have no such outputs: their rows stay empty here, so these columns never enter the normalised
score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.eval.probes.registry import Column, Probe, ProbeResult, register_probe
from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """Agreement by the kind of each expert's reading.

    Classes (semantic): `<name>_top1`, the agreement on the class, and `<name>_top5`, the expert's class
    among the encoder's top 5. Maps (edges, text): `<name>_agree_f`, the F-score of the encoder's map against
    the expert's own map thresholded at 0.5 (best threshold over the set for the encoder's map). Every expert:
    `<name>_head_r`, the real-photo fidelity: the mean over crops of the Pearson correlation between the
    expert's head on the encoder's estimate and on the expert's own features (of the log-probabilities, i.e.
    the logits, for classes; of the maps, for maps).
    """
    from distill.teachers.registry import expert_spec
    from workbench.eval.metrics import binary_f_score, mean_pearson

    if not inputs.encoder.experts():
        return ProbeResult({})
    readings = references.read(inputs.features("photos").experts)
    scores = {}
    for name, reading in readings.items():
        expected = references.readings[name]
        if expert_spec(name).reading == "classes":
            logits, expert_logits = (p.clamp_min(1e-30).log() for p in (reading, expected))  # up to a shift
            scores[f"{name}_head_r"] = mean_pearson(logits, expert_logits)
            expert_class = expected.argmax(-1)
            top5 = reading.topk(5, dim=-1).indices
            scores[f"{name}_top1"] = (top5[:, 0] == expert_class).float().mean().item()
            scores[f"{name}_top5"] = (top5 == expert_class[:, None]).any(-1).float().mean().item()
        else:
            scores[f"{name}_head_r"] = mean_pearson(reading, expected)
            if (expected > 0.5).any():  # F is undefined where the expert fires nowhere
                scores[f"{name}_agree_f"] = binary_f_score(reading, expected > 0.5)["f"]
    return ProbeResult(scores)


PROBE = register_probe(
    Probe(
        name="agreement",
        columns=tuple(
            Column(key, title, normalised=False)
            for key, title in (
                ("semantic_top1", "Sem. agree top-1"),
                ("semantic_top5", "Sem. agree top-5"),
                ("edges_agree_f", "Edges agree F"),
                ("text_agree_f", "Text agree F"),
                ("semantic_head_r", "Sem. head r"),
                ("edges_head_r", "Edges head r"),
                ("text_head_r", "Text head r"),
            )
        ),
        settings=("resolution", "photos", "photo_split", "batch_size", "seed"),
        run=run,
    )
)
