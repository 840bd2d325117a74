"""Side-by-side figures of encoders' PCA feature maps."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from distill.atomic import atomic_path
from distill.teachers.base import Teacher
from workbench.pca import PCABasis


def to_image(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    """[3, h, w] in [0, 1] -> [H, W, 3] numpy-ready, nearest-upsampled so patches stay visible."""
    return F.interpolate(tensor[None], size=size, mode="nearest")[0].permute(1, 2, 0).clamp(0, 1).cpu()


@torch.no_grad()
def pca_grid_figure(encoders: dict[str, Teacher], images: dict[str, Tensor], path: str | Path) -> Path:
    """A PNG grid: one row per image, the image then each encoder's PCA map of its patch features.

    Each encoder's PCA basis and colour range are fitted jointly on all the images, so a colour
    means the same feature direction in every row of that column.

    Args:
        encoders: column title -> teacher.
        images: row title -> [3, H, W] image in [0, 1] (all the same size).
        path: output PNG path (written atomically).
    """
    batch = torch.stack(list(images.values()))
    size = tuple(batch.shape[-2:])
    columns = {}
    for name, encoder in encoders.items():
        patches = encoder(batch).patches
        columns[name] = (PCABasis.fit(patches).to_rgb(patches), tuple(patches.shape[-2:]))
    rows, cols = len(images), 1 + len(encoders)
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, title in enumerate(images):
        axes[r][0].imshow(batch[r].permute(1, 2, 0).cpu())
        axes[r][0].set_ylabel(title, fontsize=10)
        for c, (name, (rgb, grid)) in enumerate(columns.items(), start=1):
            axes[r][c].imshow(to_image(rgb[r], size))
            if r == 0:
                axes[r][c].set_title(f"{name}\n{grid[0]}x{grid[1]} patches", fontsize=10)
    axes[0][0].set_title("input", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
