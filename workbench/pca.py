"""Robust PCA of patch features to RGB: a basis fitted once, reusable across images and encoders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def flatten_patches(patches: Tensor) -> Tensor:
    """[B, D, h, w] (or [D, h, w]) -> [B*h*w, D] rows, float32."""
    if patches.ndim == 3:
        patches = patches[None]
    return patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]).float()


@dataclass
class PCABasis:
    """A PCA projection to three components with a robust colour range per component.

    Attributes:
        mean: [D] feature mean.
        components: [3, D] principal directions.
        low, high: [3] colour range per component: median -/+ `mad_scale` median absolute deviations.
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor

    @classmethod
    def fit(
        cls, patches: Tensor | list[Tensor], skip_first: bool = False, mad_scale: float = 2.0
    ) -> PCABasis:
        """Fit on one or more patch grids (joint basis when several share a feature space).

        Args:
            patches: [B, D, h, w] grid(s) of the same dimension D.
            skip_first: drop the first component (often foreground/background or a global offset).
            mad_scale: half-width of the colour range in median absolute deviations.
        """
        grids = patches if isinstance(patches, list) else [patches]
        rows = torch.cat([flatten_patches(g) for g in grids])
        if rows.shape[0] < 4:
            raise ValueError(f"PCA needs at least 4 patches, got {rows.shape[0]}")
        mean = rows.mean(0)
        k = 3 + int(skip_first)
        _, _, v = torch.pca_lowrank(rows - mean, q=min(k, *rows.shape), center=False, niter=6)
        components = v[:, int(skip_first) : k].T
        if components.shape[0] < 3:  # features of dimension < 3: pad with zero directions
            components = torch.cat([components, components.new_zeros(3 - components.shape[0], rows.shape[1])])
        projected = (rows - mean) @ components.T
        median = projected.median(0).values
        mad = (projected - median).abs().median(0).values.clamp_min(1e-6)
        return cls(mean, components, median - mad_scale * mad, median + mad_scale * mad)

    def project(self, patches: Tensor) -> Tensor:
        """[B, D, h, w] -> [B, 3, h, w] component scores (not yet scaled to colours)."""
        b, _, h, w = patches.shape
        scores = (flatten_patches(patches) - self.mean) @ self.components.T
        return scores.reshape(b, h, w, 3).permute(0, 3, 1, 2)

    def to_rgb(self, patches: Tensor) -> Tensor:
        """[B, D, h, w] -> [B, 3, h, w] colours in [0, 1], clipped to the fitted robust range."""
        scores = self.project(patches)
        low, high = self.low.view(1, 3, 1, 1), self.high.view(1, 3, 1, 1)
        return ((scores - low) / (high - low)).clamp(0, 1)


def pca_rgb(patches: Tensor, skip_first: bool = False) -> Tensor:
    """PCA colours of a grid with a basis fitted on that grid alone: [B, D, h, w] -> [B, 3, h, w]."""
    return PCABasis.fit(patches, skip_first=skip_first).to_rgb(patches)
