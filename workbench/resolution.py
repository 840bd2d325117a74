"""A distilled encoder across input resolutions: its feature grids, and its agreement with the experts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from distill.data.images import resize
from distill.standardize import TeacherStandardizer
from distill.teachers import Teacher
from workbench.agreement import agreement_scores
from workbench.encoders import Encoder
from workbench.features import finish_line_panels, line_panels


@contextlib.contextmanager
def input_side(encoder: Encoder, side: int) -> Iterator[Encoder]:
    """The encoder run at a square input `side` inside the block; its own side is restored after."""
    before = encoder.resolution
    encoder.resolution = side
    try:
        yield encoder
    finally:
        encoder.resolution = before


@torch.no_grad()
def patches_at_sides(encoder: Encoder, images: Tensor, sides: Sequence[int]) -> dict[str, Tensor]:
    """The encoder's patch grids of the images run at each side, keyed `"<side> px"`."""
    grids = {}
    for side in sides:
        with input_side(encoder, side):
            grids[f"{side} px"] = encoder(images).patches
    return grids


@torch.no_grad()
def resolution_sweep(
    encoders: dict[str, Encoder],
    experts: dict[str, Teacher],
    images: Tensor,
    sides: Sequence[int],
    standardizers: dict[str, TeacherStandardizer] | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """Agreement with the experts of each encoder run at each input side.

    The images are resized to each side; the experts see them at that side too, except those with a
    fixed input side of their own (as in training, where e.g. `semantic` always sees 224 px).

    Args:
        encoders: name -> distilled encoder.
        experts: name -> expert.
        images: [B, 3, H, W] in [0, 1].
        sides: square input sides.
        standardizers: compare in the standardised space (see `agreement_scores`).

    Returns:
        encoder -> side -> expert -> agreement.
    """
    sweep: dict[str, dict[int, dict[str, float]]] = {name: {} for name in encoders}
    for side in sides:
        view = resize(images, side)
        targets = {name: expert(view) for name, expert in experts.items()}
        for name, encoder in encoders.items():
            with input_side(encoder, side):
                estimates = encoder(view, with_experts=True).experts
            sweep[name][side] = agreement_scores(estimates, targets, standardizers)
    return sweep


def resolution_figure(sweep: dict[str, dict[int, dict[str, float]]], marks: Sequence[int] = ()) -> Figure:
    """One panel per expert: agreement against input side, one line per encoder.

    Args:
        sweep: `resolution_sweep` output.
        marks: sides to mark with a dotted line (e.g. the sides the students trained at).
    """
    experts = list(
        dict.fromkeys(e for per_side in sweep.values() for scores in per_side.values() for e in scores)
    )
    if not experts:
        raise ValueError("resolution_figure needs a non-empty sweep")
    fig, axes = line_panels(experts, xlabel="input side (px)", ylabel="agreement with the expert")
    for ax, expert in zip(axes, experts, strict=True):
        for name, per_side in sweep.items():
            sides = sorted(s for s in per_side if expert in per_side[s])
            ax.plot(sides, [per_side[s][expert] for s in sides], marker="o", label=name)
        for side in marks:
            ax.axvline(side, color="grey", linestyle=":", linewidth=1)
    return finish_line_panels(fig, axes)
