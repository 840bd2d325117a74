"""Compare what encoders see: similarity to a clicked patch, student/expert agreement, CKA and UMAP."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from distill.adaptors import match_grids


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


def new_figure(panels: int, size: float = 3.2) -> tuple[Figure, list]:
    """An Agg-backed figure with one row of `panels` axes."""
    fig = Figure(figsize=(size * panels, size))
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def line_panels(titles: Sequence[str], xlabel: str, ylabel: str = "") -> tuple[Figure, list]:
    """A row of gridded line-plot panels, one per title, sharing an x label; the first has `ylabel`.

    Plot into the axes, then call `finish_line_panels`.
    """
    fig, axes = new_figure(len(titles), size=3.6)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def finish_line_panels(fig: Figure, axes: list, legend_size: int = 8, title: str = "") -> Figure:
    """Put the legend on the first panel, add the figure title, lay it out, and return the figure."""
    axes[0].legend(fontsize=legend_size)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def umap_figure(
    embeddings: dict[str, np.ndarray],
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> Figure:
    """One scatter panel per encoder of its 2-D embedding, points coloured by class, with a legend.

    Args:
        embeddings: encoder name -> [N, 2] (e.g. from `umap_embedding`).
        labels: [N] class index per point.
        class_names: name per class index.
        title: figure title.
    """
    labels = np.asarray(labels)
    if not embeddings:
        raise ValueError("umap_figure needs at least one embedding")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must index class_names (0..{len(class_names) - 1}), got {labels.min()}..{labels.max()}"
        )
    for name, points in embeddings.items():
        if np.shape(points) != (labels.size, 2):
            raise ValueError(
                f"embedding {name!r} must have shape [{labels.size}, 2], got {list(np.shape(points))}"
            )
    fig, axes = new_figure(len(embeddings))
    cmap = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for ax, (name, points) in zip(axes, embeddings.items(), strict=True):
        for index in np.unique(labels):
            chosen = labels == index
            ax.scatter(
                *np.asarray(points)[chosen].T, s=8, color=cmap(index % cmap.N), label=class_names[index]
            )
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, markerscale=2)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig


def heatmap_figure(
    image: Tensor,
    maps: dict[str, Tensor],
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "coolwarm",
    query: tuple[float, float] | None = None,
) -> Figure:
    """The image, then one panel per encoder with its patch heatmap laid over the image.

    Args:
        image: [3, H, W] in [0, 1].
        maps: panel title -> [h, w] values (any grid; drawn as patches stretched over the image).
        vmin, vmax, cmap: colour scale shared by all panels.
        query: optional (x, y) point in [0, 1] marked on every panel.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape [3, H, W], got {list(image.shape)}")
    for name, values in maps.items():
        if values.ndim != 2:
            raise ValueError(f"map {name!r} must have shape [h, w], got {list(values.shape)}")
    height, width = image.shape[-2:]
    fig, axes = new_figure(1 + len(maps))
    picture = image.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    axes[0].imshow(picture)
    axes[0].set_title("input", fontsize=10)
    for ax, (name, values) in zip(axes[1:], maps.items(), strict=True):
        ax.imshow(picture)
        shown = ax.imshow(
            values.detach().float().cpu().numpy(),
            extent=(0, width, height, 0),
            alpha=0.65,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=10)
    for ax in axes:
        if query is not None:
            ax.plot(query[0] * width, query[1] * height, marker="x", color="lime", markersize=10, mew=2)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    if maps:
        fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01)
    return fig


def similarity_figure(image: Tensor, patches: dict[str, Tensor], query: tuple[float, float]) -> Figure:
    """Cosine-similarity maps to the patch under `query` for several encoders, over one image.

    Args:
        image: [3, H, W] in [0, 1].
        patches: encoder name -> [D, h, w] features of this image.
        query: (x, y) in normalised image coordinates.
    """
    maps = {name: cosine_similarity_map(grid, query)[0] for name, grid in patches.items()}
    return heatmap_figure(image, maps, query=query)


def agreement_figure(image: Tensor, pairs: dict[str, tuple[Tensor, Tensor]]) -> Figure:
    """Student/expert agreement maps for several experts over one image, titled with the mean.

    Args:
        image: [3, H, W] in [0, 1].
        pairs: expert name -> (adapted [D, h, w], expert [D, h', w']) features of this image.
    """
    maps = {}
    for name, (adapted, expert) in pairs.items():
        values = agreement_map(adapted[None], expert[None])[0]
        maps[f"{name}: {float(values.mean()):.2f}"] = values
    return heatmap_figure(image, maps)
