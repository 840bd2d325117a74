"""Match points between two images by the cosine similarity of their patch features.

Points are (x, y) in normalised image coordinates, x to the right and y down, in [0, 1]; a point
belongs to the patch containing it (the far edges, 1.0, to the last row/column, as
`workbench.eval.similarity.query_patch`), and a matched patch is reported by its centre. The two grids
may have different sizes and aspect ratios; only their channel counts must agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_grid(name: str, grid: Tensor) -> None:
    if grid.ndim != 3 or min(grid.shape) < 1:
        raise ValueError(f"{name} must have shape [C, H, W] with positive sides, got {list(grid.shape)}")


def _check_grids(grid_a: Tensor, grid_b: Tensor) -> None:
    _check_grid("grid_a", grid_a)
    _check_grid("grid_b", grid_b)
    if grid_a.shape[0] != grid_b.shape[0]:
        raise ValueError(f"grids must have the same channels, got {grid_a.shape[0]} and {grid_b.shape[0]}")


def _unit_rows(grid: Tensor) -> Tensor:
    """[H*W, C] L2-normalised patch vectors (a zero vector stays zero), row-major over the grid."""
    return F.normalize(grid.float().flatten(1).T, dim=1, eps=1e-12)


def patch_centres(height: int, width: int) -> Tensor:
    """[height*width, 2] normalised (x, y) centres of a grid's patches, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([(cols.flatten() + 0.5) / width, (rows.flatten() + 0.5) / height], dim=1)


def patch_index(points: Tensor, height: int, width: int) -> Tensor:
    """[N] row-major index of the patch of a height x width grid containing each normalised point."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2], got {list(points.shape)}")
    if points.numel() and not bool(((points >= 0) & (points <= 1)).all()):
        raise ValueError("points must be normalised (x, y) in [0, 1]")
    cols = (points[:, 0] * width).long().clamp(max=width - 1)
    rows = (points[:, 1] * height).long().clamp(max=height - 1)
    return rows * width + cols


def match_points(grid_a: Tensor, grid_b: Tensor, points: Tensor) -> Tensor:
    """Where each point of image A lands in image B by nearest-neighbour patch matching.

    Args:
        grid_a: [C, Ha, Wa] patch features of image A.
        grid_b: [C, Hb, Wb] patch features of image B.
        points: [N, 2] normalised (x, y) points of image A.

    Returns:
        [N, 2] normalised (x, y) centre of the patch of B most cosine-similar to the patch of A under
        each point (ties go to the first patch in row-major order).
    """
    _check_grids(grid_a, grid_b)
    return match_features(grid_a.flatten(1).T[patch_index(points, *grid_a.shape[1:])], grid_b)


def match_features(queries: Tensor, grid_b: Tensor) -> Tensor:
    """[N, 2] normalised (x, y) centre of the patch of `grid_b` [C, Hb, Wb] most cosine-similar to each
    of the feature vectors `queries` [N, C] (ties go to the first patch in row-major order)."""
    _check_grid("grid_b", grid_b)
    if queries.ndim != 2 or queries.shape[1] != grid_b.shape[0]:
        raise ValueError(f"queries must have shape [N, {grid_b.shape[0]}], got {list(queries.shape)}")
    unit = F.normalize(queries.float(), dim=1, eps=1e-12)
    best = (unit @ _unit_rows(grid_b).T).argmax(dim=1)
    return patch_centres(*grid_b.shape[1:])[best]


def mutual_matches(grid_a: Tensor, grid_b: Tensor, limit: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Mutual nearest neighbours between the patches of two grids, by cosine similarity.

    Args:
        grid_a: [C, Ha, Wa] patch features of image A.
        grid_b: [C, Hb, Wb] patch features of image B.
        limit: keep at most this many matches (the most similar); None keeps all.

    Returns:
        (points_a [M, 2], points_b [M, 2], similarity [M]): normalised (x, y) patch centres of each
        pair whose patches are each other's nearest neighbour, sorted by similarity, highest first.
    """
    _check_grids(grid_a, grid_b)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    similarity = _unit_rows(grid_a) @ _unit_rows(grid_b).T
    a_to_b = similarity.argmax(dim=1)
    b_to_a = similarity.argmax(dim=0)
    index_a = torch.nonzero(b_to_a[a_to_b] == torch.arange(len(a_to_b))).flatten()
    index_b = a_to_b[index_a]
    scores = similarity[index_a, index_b]
    order = scores.argsort(descending=True, stable=True)[:limit]
    centres_a = patch_centres(*grid_a.shape[1:])
    centres_b = patch_centres(*grid_b.shape[1:])
    return centres_a[index_a[order]], centres_b[index_b[order]], scores[order]
