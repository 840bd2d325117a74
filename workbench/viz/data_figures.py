"""Pictures of the training data: generated scenes next to their exact labels, and grids of images."""

from __future__ import annotations

import math

from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from distill.data.scenes import SCENE_CLASSES, SEGMENT_CLASSES, SceneBatch

LABEL_PANELS = ("image", "segmentation", "depth", "edges", "text")


def scene_labels_figure(batch: SceneBatch, count: int | None = None) -> Figure:
    """Rows = scenes (titled with their class), columns = the image and each of its labels.

    Segmentation is coloured per segment class (legend below), depth with near = bright, edges and
    text masks in white.

    Args:
        batch: generated scenes (`SceneGenerator.batch`).
        count: rows to draw (default all).
    """
    count = len(batch) if count is None else count
    if not 1 <= count <= len(batch):
        raise ValueError(f"count must be between 1 and the batch size {len(batch)}, got {count}")
    segment_colours = ListedColormap(colormaps["tab20"].colors[: len(SEGMENT_CLASSES)])
    fig = Figure(figsize=(2.2 * len(LABEL_PANELS), 2.2 * count + 0.8))
    axes = fig.subplots(count, len(LABEL_PANELS), squeeze=False)
    for row in range(count):
        panels = {
            "image": (batch.images[row].permute(1, 2, 0).clamp(0, 1), {}),
            "segmentation": (batch.segmentation[row], {"cmap": segment_colours, "vmin": -0.5,
                                                       "vmax": len(SEGMENT_CLASSES) - 0.5,
                                                       "interpolation": "nearest"}),
            "depth": (-batch.depth[row], {"cmap": "viridis"}),
            "edges": (batch.edges[row].float(), {"cmap": "gray", "vmin": 0, "vmax": 1}),
            "text": (batch.text[row].float(), {"cmap": "gray", "vmin": 0, "vmax": 1}),
        }  # fmt: skip
        for col, (name, (values, style)) in enumerate(panels.items()):
            axes[row][col].imshow(values.cpu().numpy(), **style)
            if row == 0:
                axes[row][col].set_title(name, fontsize=10)
        axes[row][0].set_ylabel(SCENE_CLASSES[int(batch.scene_class[row])], fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    legend = [Patch(color=segment_colours(i), label=name) for i, name in enumerate(SEGMENT_CLASSES)]
    fig.legend(handles=legend, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (2.2 * count + 0.8), 1, 1))
    return fig


def image_grid_figure(images: dict[str, Tensor], columns: int = 6) -> Figure:
    """Images [3, H, W] in [0, 1] in a grid, each titled with its name.

    Args:
        images: title -> image (sizes may differ).
        columns: images per row.
    """
    if not images:
        raise ValueError("image_grid_figure needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    rows = math.ceil(len(images) / columns)
    cols = min(columns, len(images))
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, image) in zip(axes.flat, images.items(), strict=False):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image {title!r} must have shape [3, H, W], got {list(image.shape)}")
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
