"""Side-by-side figures of encoders' PCA feature maps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from distill.atomic import atomic_path
from distill.features import Features
from distill.teachers.base import Teacher
from workbench.eval.encoders import Encoder
from workbench.viz.pca import PCABasis


def to_image(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    """[3, h, w] in [0, 1] -> [H, W, 3] numpy-ready, nearest-upsampled so patches stay visible."""
    return F.interpolate(tensor[None], size=size, mode="nearest")[0].permute(1, 2, 0).clamp(0, 1).cpu()


@torch.no_grad()
def pca_columns_figure(
    images: Tensor,
    columns: dict[str, Tensor],
    groups: dict[str, str] | None = None,
    row_titles: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Rows = images: the image, then each column's PCA map (first three components as RGB).

    Columns in the same group share one PCA basis and colour range, fitted on the group's first column
    (the reference), so that the same colour means the same feature direction across them (e.g. an
    expert's features and a student's estimate of them, or one encoder at several input sides), and
    adding a column to a group recolours none of the others.

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
    for name, grid in columns.items():
        if grid.ndim != 4 or grid.shape[0] != images.shape[0]:
            raise ValueError(f"column {name!r} must be [{images.shape[0]}, D, h, w], got {list(grid.shape)}")
    members: dict[str, list[str]] = {}
    for name in columns:
        members.setdefault(groups.get(name, f"own:{name}"), []).append(name)
    bases = {}
    for titles in members.values():
        basis = PCABasis.fit(columns[titles[0]].float())
        bases |= dict.fromkeys(titles, basis)
    size = tuple(images.shape[-2:])
    rows, cols = images.shape[0], 1 + len(columns)
    fig = Figure(figsize=(2.4 * cols, 2.4 * rows + 0.3))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(images[r].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        if row_titles:
            axes[r][0].set_ylabel(row_titles[r], fontsize=9)
        for c, (name, grid) in enumerate(columns.items(), start=1):
            axes[r][c].imshow(to_image(bases[name].to_rgb(grid[r : r + 1].float())[0], size).numpy())
            if r == 0:
                axes[r][c].set_title(f"{name}\n{grid.shape[-2]}x{grid.shape[-1]} patches", fontsize=9)
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
    experts: dict[str, Features],
    estimates: dict[str, dict[str, Features]],
    row_titles: Sequence[str] | None = None,
    own: dict[str, Tensor] | None = None,
) -> Figure:
    """Each expert's PCA map next to distilled encoders' estimates of it, in the expert's colours.

    Per expert, one basis is fitted on the expert's own patches and the estimates are drawn in it, so a
    colour means the same direction of that expert's feature space in all its columns.

    Args:
        images: [B, 3, H, W] in [0, 1].
        experts: expert name -> its own features of the images.
        estimates: encoder name -> expert name -> the encoder's estimate (`EncoderFeatures.experts`).
        row_titles: one per image.
        own: encoder name -> its own [B, D, h, w] patch grid, drawn last with a basis of its own.
    """
    columns, groups = {}, {}
    for expert, features in experts.items():
        columns[expert] = features.patches
        groups[expert] = expert
        for encoder, guesses in estimates.items():
            if expert in guesses:
                columns[f"{encoder} -> {expert}"] = guesses[expert].patches
                groups[f"{encoder} -> {expert}"] = expert
    columns |= {f"{encoder} (own)": grid for encoder, grid in (own or {}).items()}
    return pca_columns_figure(images, columns, groups, row_titles)


@torch.no_grad()
def pca_grid_figure(
    encoders: dict[str, Teacher],
    images: dict[str, Tensor],
    path: str | Path,
    students: dict[str, Encoder] | None = None,
) -> Path:
    """A PNG grid: one row per image, the image then each encoder's PCA map of its patch features.

    Each encoder's PCA basis and colour range are fitted on all the images at once, so a colour
    means the same feature direction in every row of that column. Each student adds its estimate of
    every encoder it was taught (through the proxy or directly) next to it, in that encoder's basis,
    and its own features last.

    Args:
        encoders: column title -> teacher.
        images: row title -> [3, H, W] image in [0, 1] (all the same size).
        path: output PNG path (written atomically).
        students: column title -> distilled encoder (see `workbench.eval.encoders.distilled_encoder`).
    """
    batch = torch.stack(list(images.values()))
    features = {name: student(batch, with_experts=True) for name, student in (students or {}).items()}
    fig = estimate_pca_figure(
        batch,
        {name: encoder(batch) for name, encoder in encoders.items()},
        {name: f.experts for name, f in features.items()},
        list(images),
        {name: f.patches for name, f in features.items()},
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
