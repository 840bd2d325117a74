"""Per-teacher adaptor heads on a distilled backbone, and patch-grid matching."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.teachers.base import TeacherOutput


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

    def forward(self, features: TeacherOutput) -> TeacherOutput:
        """Adapt backbone features (summary [B, D], patches [B, D, h, w]) to this teacher's dims."""
        patches = self.patches(features.patches.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return TeacherOutput(summary=self.summary(features.summary), patches=patches)


def match_grids(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Bicubically resize two [B, C, h, w] grids up to the larger grid (per side); equal grids pass through."""
    size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))

    def up(x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False).to(x.dtype)

    return up(a), up(b)
