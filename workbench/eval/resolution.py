"""A distilled encoder across input resolutions: its feature grids, and its agreement with the experts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from distill.data.images import resize
from distill.standardize import TeacherStandardizer
from distill.teachers import Teacher
from workbench.eval.encoders import Encoder
from workbench.eval.similarity import agreement_scores


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
