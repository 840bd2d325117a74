"""Figures that compare representations: CKA matrices as heatmaps, and PCA maps with shared colour bases."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from distill.teachers import TeacherOutput
from workbench.features import new_figure
from workbench.figures import to_image
from workbench.pca import PCABasis


def cka_figure(
    matrices: dict[str, tuple[Sequence[str], Tensor]], vmin: float = 0.0, vmax: float = 1.0
) -> Figure:
    """One annotated heatmap per matrix (e.g. `workbench.features.cka_matrix` of summaries and of patches).

    Args:
        matrices: panel title -> (names, [K, K] matrix).
        vmin, vmax: shared colour range.
    """
    if not matrices:
        raise ValueError("cka_figure needs at least one matrix")
    for title, (names, matrix) in matrices.items():
        if tuple(matrix.shape) != (len(names), len(names)):
            raise ValueError(
                f"matrix {title!r} must be [{len(names)}, {len(names)}], got {list(matrix.shape)}"
            )
    size = max(3.2, 0.9 * max(len(names) for names, _ in matrices.values()) + 1.2)
    fig, axes = new_figure(len(matrices), size=size)
    fig.set_layout_engine("constrained")
    for ax, (title, (names, matrix)) in zip(axes, matrices.items(), strict=True):
        values = matrix.double().cpu().numpy()
        shown = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="viridis")
        for i in range(len(names)):
            for j in range(len(names)):
                colour = "black" if values[i, j] > (vmin + vmax) / 2 else "white"
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=axes, fraction=0.03)
    return fig


@torch.no_grad()
def pca_columns_figure(
    images: Tensor,
    columns: dict[str, Tensor],
    groups: dict[str, str] | None = None,
    row_titles: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Rows = images: the image, then each column's PCA map (first three components as RGB).

    Columns in the same group share one PCA basis and colour range, fitted jointly on all their
    grids, so that the same colour means the same feature direction across them (e.g. an expert's
    features and a student's estimate of them, or one encoder at several input sides).

    Args:
        images: [B, 3, H, W] in [0, 1].
        columns: title -> [B, D, h, w] patch grid of the images (grid sizes may differ; D is shared
            within a group).
        groups: column title -> group name; a column not named here gets a basis of its own.
        row_titles: one per image.
        title: figure title.
    """
    if not columns:
        raise ValueError("pca_columns_figure needs at least one column")
    groups = groups or {}
    for title, grid in columns.items():
        if grid.ndim != 4 or grid.shape[0] != images.shape[0]:
            raise ValueError(f"column {title!r} must be [{images.shape[0]}, D, h, w], got {list(grid.shape)}")
    members: dict[str, list[str]] = {}
    for title in columns:
        members.setdefault(groups.get(title, f"own:{title}"), []).append(title)
    bases = {}
    for titles in members.values():
        basis = PCABasis.fit([columns[t].float() for t in titles])
        bases |= dict.fromkeys(titles, basis)
    size = tuple(images.shape[-2:])
    rows, cols = images.shape[0], 1 + len(columns)
    fig = Figure(figsize=(2.4 * cols, 2.4 * rows + 0.3))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(images[r].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        if row_titles:
            axes[r][0].set_ylabel(row_titles[r], fontsize=9)
        for c, (title, grid) in enumerate(columns.items(), start=1):
            axes[r][c].imshow(to_image(bases[title].to_rgb(grid[r : r + 1].float())[0], size).numpy())
            if r == 0:
                axes[r][c].set_title(f"{title}\n{grid.shape[-2]}x{grid.shape[-1]}", fontsize=9)
    axes[0][0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def estimate_pca_figure(
    images: Tensor,
    experts: dict[str, TeacherOutput],
    estimates: dict[str, dict[str, TeacherOutput]],
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """Each expert's PCA map next to distilled encoders' estimates of it, in the expert's colours.

    Per expert, one basis is fitted jointly on the expert's patches and the estimates, so a colour
    means the same direction of that expert's feature space in all its columns.

    Args:
        images: [B, 3, H, W] in [0, 1].
        experts: expert name -> its own features of the images.
        estimates: encoder name -> expert name -> the encoder's estimate (`EncoderFeatures.experts`).
        row_titles: one per image.
    """
    columns, groups = {}, {}
    for expert, own in experts.items():
        columns[expert] = own.patches
        groups[expert] = expert
        for encoder, guesses in estimates.items():
            if expert in guesses:
                columns[f"{encoder} -> {expert}"] = guesses[expert].patches
                groups[f"{encoder} -> {expert}"] = expert
    return pca_columns_figure(images, columns, groups, row_titles)
