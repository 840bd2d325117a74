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


def check_mask(mask: Tensor, patches: Tensor) -> None:
    """Raise a one-line ValueError unless `mask` is a bool [B, h, w] matching the [B, D, h, w] `patches`."""
    expected = (patches.shape[0], *patches.shape[2:])
    if mask.dtype != torch.bool or tuple(mask.shape) != expected:
        raise ValueError(
            f"mask must be a bool tensor of shape {list(expected)}, got {mask.dtype} {list(mask.shape)}"
        )


def principal_directions(centred: Tensor, count: int) -> Tensor:
    """The `count` leading principal directions [count, D] of centred float64 rows [N, D], exactly (the
    eigenvectors of the smaller of the covariance and the Gram matrix), each signed by `sign_rule`."""
    rows, dim = centred.shape
    if rows >= dim:
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        directions = vectors.flip(1)[:, :count].T
    else:
        values, vectors = torch.linalg.eigh(centred @ centred.T)
        values, vectors = values.flip(0)[:count], vectors.flip(1)[:, :count]
        directions = (centred.T @ vectors / values.clamp_min(1e-300).sqrt()).T
        directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return directions * sign_rule(centred @ directions.T)[:, None]


def sign_rule(scores: Tensor) -> Tensor:
    """+1 or -1 per component of scores [N, K]: the sign that puts the heavier tail of the patches' scores
    on the positive side (a positive third moment; +1 when it is zero).

    It depends only on where the patches lie, not on how the feature axes are oriented, so negated (or
    rotated) features get the same colours, and the eigen-solver's arbitrary sign never shows.
    """
    return torch.where(scores.pow(3).sum(0) < 0, -1.0, 1.0).to(scores.dtype)


def inliers(rows: Tensor, scale: float) -> Tensor:
    """bool [N]: the rows whose distance to the coordinate-wise median is at most `scale` times the 90th
    percentile of those distances. Only rare extremes are left out (under a tenth of the rows: a group of
    patches larger than that sets the percentile itself), never a whole minority region of the image."""
    distance = (rows - rows.median(0).values).norm(dim=1)
    return distance <= scale * distance.quantile(0.9)


@dataclass
class PCABasis:
    """A PCA projection to three components with a robust colour range per component.

    The fit is exact and repeatable (float64 eigen-decomposition, every component's sign fixed by
    `sign_rule`): the same features give bit-identical colours in every call and every process.

    Attributes:
        mean: [D] feature mean (float64) of the patches the directions were fitted on.
        components: [3, D] principal directions (float64).
        low, high: [3] colour range per component: median -/+ `mad_scale` median absolute deviations.
        skipped_first: whether the first principal component was dropped (components start at the second).
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor
    skipped_first: bool = False

    @classmethod
    def fit(
        cls,
        patches: Tensor | list[Tensor],
        skip_first: bool = False,
        mad_scale: float = 2.0,
        mask: Tensor | list[Tensor] | None = None,
        outlier_scale: float = 3.0,
    ) -> PCABasis:
        """Fit on one or more patch grids (joint basis when several share a feature space).

        Args:
            patches: [B, D, h, w] grid(s) of the same dimension D.
            skip_first: drop the first component (often foreground/background or a global offset).
            mad_scale: half-width of the colour range in median absolute deviations.
            mask: bool [B, h, w] per grid (a list parallel to `patches`); only True patches are fitted,
                e.g. the output of `foreground_mask`.
            outlier_scale: patches farther from the median patch than this times the 90th percentile of
                the patches' distances to it (e.g. a ViT's few high-norm tokens) are left out of the fit,
                so they cannot take the components from the rest; they are still coloured (clipped).
        """
        grids = patches if isinstance(patches, list) else [patches]
        if mask is None:
            rows = torch.cat([flatten_patches(g) for g in grids])
        else:
            masks = mask if isinstance(mask, list) else [mask]
            if len(masks) != len(grids):
                raise ValueError(f"got {len(masks)} masks for {len(grids)} patch grids")
            for g, m in zip(grids, masks, strict=True):
                check_mask(m, g)
            rows = torch.cat([flatten_patches(g)[m.reshape(-1)] for g, m in zip(grids, masks, strict=True)])
        if rows.shape[0] < 4:
            raise ValueError(f"PCA needs at least 4 patches, got {rows.shape[0]}")
        rows = rows.double()
        fitted = rows[inliers(rows, outlier_scale)]
        mean = fitted.mean(0)
        k = 3 + int(skip_first)
        components = principal_directions(fitted - mean, min(k, *fitted.shape))[int(skip_first) : k]
        if components.shape[0] < 3:  # features of dimension < 3: pad with zero directions
            components = torch.cat([components, components.new_zeros(3 - components.shape[0], rows.shape[1])])
        projected = (rows - mean) @ components.T
        median = projected.median(0).values
        mad = (projected - median).abs().median(0).values.clamp_min(1e-6)
        return cls(mean, components, median - mad_scale * mad, median + mad_scale * mad, skip_first)

    def project(self, patches: Tensor) -> Tensor:
        """[B, D, h, w] -> [B, 3, h, w] component scores (float64, not yet scaled to colours)."""
        b, _, h, w = patches.shape
        scores = (flatten_patches(patches).double() - self.mean) @ self.components.T
        return scores.reshape(b, h, w, 3).permute(0, 3, 1, 2)

    def to_rgb(self, patches: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, D, h, w] -> [B, 3, h, w] float32 colours in [0, 1], clipped to the fitted robust range.

        Args:
            patches: [B, D, h, w] features in this basis' feature space.
            mask: optional bool [B, h, w]; False patches (background) are painted black.
        """
        scores = self.project(patches)
        low, high = self.low.view(1, 3, 1, 1), self.high.view(1, 3, 1, 1)
        rgb = ((scores - low) / (high - low)).clamp(0, 1).float()
        if mask is None:
            return rgb
        check_mask(mask, patches)
        return rgb * mask[:, None]


def pca_rgb(patches: Tensor, skip_first: bool = False) -> Tensor:
    """PCA colours of a grid with a basis fitted on that grid alone: [B, D, h, w] -> [B, 3, h, w]."""
    return PCABasis.fit(patches, skip_first=skip_first).to_rgb(patches)


def border_share(selected: Tensor) -> float:
    """Fraction of the selected patches of bool [B, h, w] that lie on the grid's outer ring (1 if none)."""
    ring = torch.ones(selected.shape[-2:], dtype=torch.bool, device=selected.device)
    ring[1:-1, 1:-1] = False
    count = int(selected.sum())
    return float((selected & ring).sum()) / count if count else 1.0


def foreground_mask(patches: Tensor, threshold: float = 0.0, basis: PCABasis | None = None) -> Tensor:
    """Foreground patches from the sign of the first principal component: [B, D, h, w] -> bool [B, h, w].

    The score of each patch is its projection on the first component, centred on the basis mean and
    divided by the scores' standard deviation over `patches`; foreground is `score > threshold` for
    the orientation of the component chosen by this rule, once for the whole batch:

    1. centre-heavy side: the candidate with the smaller share of its patches on the grid's outer ring
       (objects are framed, background surrounds them), when the two shares differ by more than 0.05;
    2. otherwise (no spatial signal, e.g. grids with no inner patches) the minority side.

    Args:
        patches: [B, D, h, w] features.
        threshold: cut in standard deviations of the first-component score; higher is stricter.
        basis: a basis fitted with `skip_first=False` (e.g. on several images); fitted on `patches` if None.
    """
    if patches.ndim != 4:
        raise ValueError(f"patches must have shape [B, D, h, w], got {list(patches.shape)}")
    basis = PCABasis.fit(patches) if basis is None else basis
    if basis.skipped_first:
        raise ValueError("foreground_mask needs a basis fitted with skip_first=False")
    score = basis.project(patches)[:, 0]
    score = score / score.std(correction=0).clamp_min(1e-12)
    positive, negative = score > threshold, -score > threshold
    share_pos, share_neg = border_share(positive), border_share(negative)
    if abs(share_pos - share_neg) > 0.05:
        return positive if share_pos < share_neg else negative
    return positive if positive.sum() <= negative.sum() else negative
