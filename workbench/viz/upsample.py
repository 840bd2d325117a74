"""Patch grids brought to picture size for display: blocky (nearest, each patch a visible block) or smooth
(bicubic, for maps read as continuous fields: PCA colours, attention, similarity)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def upsample(grid: Tensor, size: tuple[int, int], smooth: bool = False) -> Tensor:
    """A grid [C, h, w] or [h, w] at `size` (H, W): nearest, or with `smooth` bicubic kept inside each
    channel's own range (bicubic overshoots: colours would leave [0, 1], values their colour map's span)."""
    if grid.ndim not in (2, 3):
        raise ValueError(f"a display grid must have shape [h, w] or [C, h, w], got {list(grid.shape)}")
    channels = grid.float()[None] if grid.ndim == 3 else grid.float()[None, None]
    if not smooth:
        return F.interpolate(channels, size=size, mode="nearest")[0].reshape(*grid.shape[:-2], *size)
    big = F.interpolate(channels, size=size, mode="bicubic", align_corners=False)
    low = channels.amin(dim=(-2, -1), keepdim=True)
    high = channels.amax(dim=(-2, -1), keepdim=True)
    return big.clamp(low, high)[0].reshape(*grid.shape[:-2], *size)
