"""Figures that compare representations: CKA matrices as heatmaps, and PCA maps with shared colour bases."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from torch import Tensor

from distill.teachers import TeacherOutput
from workbench.features import new_figure
from workbench.figures import pca_columns_figure


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
