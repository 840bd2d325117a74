"""A check every export gets: its output must depend on its input (a known failure of community EUPE
exports is an output that barely changes between a blank and a real image)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MIN_INPUT_DEPENDENCE = 1e-3  # relative change of the patch outputs between a blank and a random image


def input_dependence(patches_of: Callable[[Tensor], Tensor], side: int) -> float:
    """How much the patch outputs change between a blank (mid-grey) and a random image, relative to their
    scale: mean |difference| / mean |value|.

    Raises:
        ValueError: below `MIN_INPUT_DEPENDENCE` (the export is broken, whatever else agrees).
    """
    generator = torch.Generator().manual_seed(0)
    blank = torch.full((1, 3, side, side), 0.5)
    noise = torch.rand(1, 3, side, side, generator=generator)
    a, b = patches_of(blank).float(), patches_of(noise).float()
    change = ((a - b).abs().mean() / torch.cat([a, b]).abs().mean().clamp_min(1e-12)).item()
    if not change >= MIN_INPUT_DEPENDENCE:
        raise ValueError(f"the exported model's output barely depends on its input (relative change "
                         f"{change:.2e} between a blank and a random image)")  # fmt: skip
    return change
