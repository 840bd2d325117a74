"""Per-teacher adaptor heads on a distilled backbone, and patch-grid matching."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.features import Features


class MLPAdaptor(nn.Sequential):
    """Linear(no bias) -> LayerNorm -> GELU -> Linear(no bias), over the last dimension."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim, bias=False),
        )


class TeacherAdaptor(nn.Module):
    """The two heads that map a backbone's features into one teacher's space: summary and patches."""

    def __init__(self, in_dim: int, hidden: int, summary_dim: int, patch_dim: int) -> None:
        super().__init__()
        self.summary = MLPAdaptor(in_dim, hidden, summary_dim)
        self.patches = MLPAdaptor(in_dim, hidden, patch_dim)

    def forward(self, features: Features) -> Features:
        """Adapt backbone features (summary [B, D], patches [B, D, h, w]) to this teacher's dims."""
        patches = self.patches(features.patches.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return Features(summary=self.summary(features.summary), patches=patches)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(size_in: int, size_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[size_out, size_in] matrix of 1-D bicubic interpolation (align_corners=False), as in F.interpolate."""
    eye = torch.eye(size_in, device=device, dtype=torch.float32)[None, None]
    return F.interpolate(eye, size=(size_out, size_in), mode="bicubic", align_corners=False)[0, 0].to(dtype)


def bicubic_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of [B, C, h, w] to `size`, as two matrix products (separable; equal to F.interpolate).

    The products run on tensor cores and have cheap gradients, where PyTorch's bicubic kernel
    (and its backward in particular) is slow on large grids.
    """
    rows = bicubic_matrix(x.shape[-2], size[0], x.device, x.dtype)
    cols = bicubic_matrix(x.shape[-1], size[1], x.device, x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", rows, x, cols)


def match_grids(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Bicubically resize two [B, C, h, w] grids up to the larger grid (per side); equal grids pass."""
    size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))

    def up(x: Tensor) -> Tensor:
        return x if tuple(x.shape[-2:]) == size else bicubic_resize(x, size)

    return up(a), up(b)
