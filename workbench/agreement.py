"""How closely a distilled encoder's estimates of the experts' features agree with the experts' own."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from distill.standardize import TeacherStandardizer
from distill.teachers import Teacher, TeacherOutput
from workbench.encoders import Encoder
from workbench.features import agreement_figure, agreement_score


def standardised(
    features: dict[str, TeacherOutput], standardizers: dict[str, TeacherStandardizer]
) -> dict[str, TeacherOutput]:
    """Features in the standardised space training compares in (teachers without statistics are dropped)."""
    return {name: standardizers[name](out) for name, out in features.items() if name in standardizers}


def agreement_scores(
    estimates: dict[str, TeacherOutput],
    targets: dict[str, TeacherOutput],
    standardizers: dict[str, TeacherStandardizer] | None = None,
) -> dict[str, float]:
    """Mean per-patch cosine similarity between each expert's features and an encoder's estimate of them.

    Args:
        estimates: expert -> the encoder's estimate (`EncoderFeatures.experts`).
        targets: expert -> the expert's own features of the same images.
        standardizers: if given, both sides are standardised first (the space the loss compares in,
            where a large shared mean no longer makes every patch look alike).

    Returns:
        expert -> agreement in [-1, 1], for the experts in both mappings.
    """
    names = [n for n in targets if n in estimates]
    if standardizers is not None:
        estimates, targets = standardised(estimates, standardizers), standardised(targets, standardizers)
    return {n: agreement_score(estimates[n].patches, targets[n].patches) for n in names}


def agreement_table(scores: dict[str, dict[str, float]]) -> str:
    """A Markdown table: rows = encoders, columns = experts and their mean (see `agreement_scores`)."""
    experts = list(dict.fromkeys(e for row in scores.values() for e in row))
    if not experts:
        raise ValueError("agreement_table needs at least one score")
    lines = ["| encoder | " + " | ".join(experts) + " | mean |", "|---|" + "---:|" * (len(experts) + 1)]
    for name, row in scores.items():
        cells = [f"{row[e]:.3f}" if e in row else "—" for e in experts]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(row.values()) / len(row):.3f} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def encoder_agreement_figure(
    encoder: Encoder,
    experts: dict[str, Teacher],
    image: Tensor,
    standardizers: dict[str, TeacherStandardizer] | None = None,
) -> Figure:
    """Per-patch agreement maps of an encoder's estimates with each expert's features, over one image.

    Args:
        encoder: a distilled encoder.
        experts: name -> expert.
        image: [3, H, W] in [0, 1].
        standardizers: compare in the standardised space (see `agreement_scores`).
    """
    estimates = encoder(image[None], with_experts=True).experts
    targets = {name: expert(image[None]) for name, expert in experts.items() if name in estimates}
    if standardizers is not None:
        estimates, targets = standardised(estimates, standardizers), standardised(targets, standardizers)
    fig = agreement_figure(image, {n: (estimates[n].patches[0], targets[n].patches[0]) for n in targets})
    fig.suptitle(f"{encoder.name}: agreement with each expert (mean in the titles)", fontsize=10)
    return fig
