"""Figures that compare representations: CKA matrices as heatmaps, and PCA maps with shared colour bases."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from torch import Tensor

from workbench.features import new_figure


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
