"""Compare what encoders see, as numbers: similarity to a clicked patch, a distilled encoder's agreement
with the experts' own features (maps, scores, tables), CKA between encoders, and UMAP embeddings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.adaptors import match_grids
from distill.features import Features
from distill.standardize import TeacherStandardizer


def check_grid(patches: Tensor, name: str) -> None:
    """Raise a one-line ValueError unless `patches` is a [B, D, h, w] feature grid."""
    if patches.ndim != 4:
        raise ValueError(f"{name} must have shape [B, D, h, w], got {list(patches.shape)}")


def query_patch(query: tuple[float, float], grid: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) of the patch containing a point given in normalised image coordinates.

    Args:
        query: (x, y) in [0, 1], x to the right and y down, as a click on the image; the far
            edges (1.0) belong to the last row/column.
        grid: (h, w) patches.
    """
    x, y = query
    h, w = grid
    if h < 1 or w < 1:
        raise ValueError(f"grid must have positive sides, got {tuple(grid)}")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"query must be (x, y) in [0, 1], got {tuple(query)}")
    return min(int(y * h), h - 1), min(int(x * w), w - 1)


def cosine_similarity_map(patches: Tensor, query: tuple[float, float]) -> Tensor:
    """Cosine similarity of every patch with the patch under `query`, per image.

    Args:
        patches: [B, D, h, w] features, or [D, h, w] for one image (treated as a batch of one).
        query: (x, y) in normalised image coordinates, see `query_patch`.

    Returns:
        [B, h, w] similarities in [-1, 1], 1 at the query patch (0 where a feature vector is zero).
    """
    if patches.ndim == 3:
        patches = patches[None]
    check_grid(patches, "patches")
    row, col = query_patch(query, tuple(patches.shape[-2:]))
    patches = patches.float()
    reference = patches[:, :, row, col, None, None]
    return F.cosine_similarity(patches, reference, dim=1, eps=1e-12).clamp(-1, 1)


def agreement_map(adapted: Tensor, expert: Tensor) -> Tensor:
    """Per-patch cosine similarity between a student's adaptor output and the expert's features.

    The grids are matched bicubically up to the larger one (per side) first, as in training.

    Args:
        adapted: [B, D, h, w] the student's adaptor head output for the expert.
        expert: [B, D, h', w'] the expert's features for the same images.

    Returns:
        [B, H, W] similarities in [-1, 1] on the larger grid.
    """
    check_grid(adapted, "adapted")
    check_grid(expert, "expert")
    if adapted.shape[:2] != expert.shape[:2]:
        raise ValueError(
            f"adapted and expert must share batch and feature sizes, got {list(adapted.shape[:2])} "
            f"and {list(expert.shape[:2])}"
        )
    a, b = match_grids(adapted.float(), expert.float())
    return F.cosine_similarity(a, b, dim=1, eps=1e-12).clamp(-1, 1)


def agreement_score(adapted: Tensor, expert: Tensor) -> float:
    """Mean of `agreement_map` over images and patches."""
    return float(agreement_map(adapted, expert).mean())


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Centred linear CKA (Kornblith et al. 2019) between two representations of the same N inputs.

    Computed in float64 in feature space: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred,
    norm-scaled X and Y. Invariant to orthogonal transforms and isotropic scaling of either side.

    Args:
        x: [N, D1] rows.
        y: [N, D2] rows for the same inputs.

    Returns:
        Similarity in [0, 1].
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"linear_cka needs [N, D1] and [N, D2] with the same N, got {list(x.shape)}, {list(y.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"linear_cka needs at least 2 rows, got {x.shape[0]}")

    def centred(m: Tensor) -> Tensor:
        m = m.double()
        m = m - m.mean(0)
        norm = torch.linalg.matrix_norm(m)
        if norm == 0:
            raise ValueError("linear_cka is undefined for a constant representation")
        return m / norm

    x, y = centred(x), centred(y)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    return float(cross / (torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)))


def cka_matrix(features: dict[str, Tensor]) -> tuple[list[str], Tensor]:
    """Pairwise linear CKA between named representations of the same inputs.

    Args:
        features: name -> [N, D_name] rows (same N for all), e.g. summaries or `patch_rows_for_cka`.

    Returns:
        The names in order and a symmetric [K, K] float64 matrix with a unit diagonal.
    """
    names = list(features)
    if not names:
        raise ValueError("cka_matrix needs at least one representation")
    matrix = torch.eye(len(names), dtype=torch.float64)
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            matrix[i, j] = matrix[j, i] = linear_cka(features[a], features[names[j]])
    return names, matrix


def patch_rows_for_cka(patches: dict[str, Tensor], size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Resize every encoder's patch grid to a common size and flatten it to per-patch rows.

    Grids are area-averaged where they shrink and bilinearly interpolated where they grow.

    Args:
        patches: name -> [B, D_name, h, w] grids for the same images (grid sizes may differ).
        size: common (h, w); default the smallest grid per side, so no grid is upsampled.

    Returns:
        name -> [B * h * w, D_name] float32 rows, row i the same image and location for every name.
    """
    if not patches:
        raise ValueError("patch_rows_for_cka needs at least one grid")
    for name, grid in patches.items():
        check_grid(grid, f"patches[{name!r}]")
    if len({grid.shape[0] for grid in patches.values()}) > 1:
        raise ValueError("patch_rows_for_cka needs the same number of images for every encoder")
    if size is None:
        size = (min(g.shape[-2] for g in patches.values()), min(g.shape[-1] for g in patches.values()))

    def rows(grid: Tensor) -> Tensor:
        grid = grid.float()
        if tuple(grid.shape[-2:]) != tuple(size):
            shrinks = grid.shape[-2] >= size[0] and grid.shape[-1] >= size[1]
            grid = F.interpolate(grid, size=size, mode="area" if shrinks else "bilinear")
        return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])

    return {name: rows(grid) for name, grid in patches.items()}


def umap_embedding(
    vectors: Tensor | np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1
) -> np.ndarray:
    """2-D UMAP embedding of feature vectors, deterministic for a given seed.

    Args:
        vectors: [N, D] with N >= 3; `n_neighbors` is clamped to N - 1 for small N.
        seed: random state (UMAP then runs single-threaded).
        n_neighbors, min_dist: UMAP's neighbourhood size and minimum spacing.

    Returns:
        [N, 2] float32 numpy array.
    """
    import umap  # slow to import (numba): only when used

    data = vectors.detach().cpu().float().numpy() if isinstance(vectors, Tensor) else np.asarray(vectors)
    if data.ndim != 2 or data.shape[0] < 3:
        raise ValueError(f"umap_embedding needs [N, D] vectors with N >= 3, got shape {list(data.shape)}")
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, data.shape[0] - 1),
        min_dist=min_dist,
        random_state=seed,
        n_jobs=1,
        init="spectral" if data.shape[0] > 4 else "random",  # spectral init needs a few more points
    )
    return reducer.fit_transform(data.astype(np.float32)).astype(np.float32)


def standardised(
    features: dict[str, Features], standardizers: dict[str, TeacherStandardizer]
) -> dict[str, Features]:
    """Features in the standardised space training compares in (teachers without statistics are dropped)."""
    return {name: standardizers[name](out) for name, out in features.items() if name in standardizers}


def agreement_scores(
    estimates: dict[str, Features],
    targets: dict[str, Features],
    standardizers: dict[str, TeacherStandardizer] | None = None,
) -> dict[str, float]:
    """Mean per-patch cosine similarity between each expert's features and an encoder's estimate of them.

    Args:
        estimates: expert -> the encoder's estimate (`EncoderFeatures.experts`).
        targets: expert -> the expert's own features of the same images.
        standardizers: if given, both sides are standardised first (the space the loss compares in,
            where a large shared mean no longer makes every patch look alike).

    Returns:
        expert -> agreement in [-1, 1], for the experts in both mappings.
    """
    names = [n for n in targets if n in estimates]
    if standardizers is not None:
        estimates, targets = standardised(estimates, standardizers), standardised(targets, standardizers)
    return {n: agreement_score(estimates[n].patches, targets[n].patches) for n in names}


def agreement_table(scores: dict[str, dict[str, float]]) -> str:
    """A Markdown table: rows = encoders, columns = experts and their mean (see `agreement_scores`)."""
    experts = list(dict.fromkeys(e for row in scores.values() for e in row))
    if not experts:
        raise ValueError("agreement_table needs at least one score")
    lines = ["| encoder | " + " | ".join(experts) + " | mean |", "|---|" + "---:|" * (len(experts) + 1)]
    for name, row in scores.items():
        cells = [f"{row[e]:.3f}" if e in row else "—" for e in experts]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(row.values()) / len(row):.3f} |")
    return "\n".join(lines) + "\n"
