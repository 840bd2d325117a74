"""The experts' own readings (ImageNet probabilities, text-region map, edge map) of any features in
their space: the expert's own features, or a distilled encoder's estimate of them passed through the
expert's head."""

from __future__ import annotations

import torch
from torch import Tensor

from distill.adaptors import bicubic_resize
from distill.teachers import Teacher, TeacherOutput

READINGS = {  # expert -> what its head reads out
    "semantic": "ImageNet-1k class probabilities [B, 1000]",
    "text": "CRAFT text-region score [B, H, W]",
    "edges": "HED dsn4 edge probability [B, H, W]",
}


def expert_grid(expert: Teacher, size: tuple[int, int]) -> tuple[int, int]:
    """The patch grid the expert produces for images of `size` (height, width)."""
    height, width = expert.input_size(*size)
    return height // expert.patch_stride, width // expert.patch_stride


@torch.no_grad()
def expert_reading(name: str, expert: Teacher, features: TeacherOutput, size: tuple[int, int]) -> Tensor:
    """The expert's head applied to features in its space.

    Args:
        name: "semantic", "text" or "edges".
        expert: the expert teacher (its head is used).
        features: features in the expert's space; patches on any grid are bicubically resized to the
            grid the expert itself produces for images of `size`.
        size: (height, width) of the images the features come from.

    Returns:
        See `READINGS`.
    """
    if name not in READINGS:
        raise ValueError(f"no head reading for '{name}'; experts with heads: {', '.join(READINGS)}")
    if name == "semantic":
        return expert.head(features.summary.float()).softmax(-1)
    grid = expert_grid(expert, size)
    patches = features.patches.float()
    if tuple(patches.shape[-2:]) != grid:
        patches = bicubic_resize(patches, grid)
    return expert.head(patches, size)[:, 0]
