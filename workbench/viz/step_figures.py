"""Figures of one training step: per-coordinate scales before and after standardisation, and the views
the step trains on."""

from __future__ import annotations

from matplotlib.figure import Figure
from torch import Tensor

from distill.augment import ViewTransforms
from distill.features import Features
from distill.standardize import patch_rows
from workbench.viz.comparison_figures import finish_line_panels, line_panels
from workbench.viz.data_figures import image_grid_figure


def transform_title(transforms: ViewTransforms | None, position: int) -> str:
    """What a step's transforms did to its view at `position`: `flipped`, `crop 75%` (of the view's side),
    both, or `as is`."""
    if transforms is None:
        return "as is"
    parts = ["flipped"] if bool(transforms.flips[position]) else []
    if bool(transforms.cropped[position]):
        x0, _, x1, _ = transforms.boxes[position].tolist()
        parts.append(f"crop {x1 - x0:.0%}")
    return ", ".join(parts) or "as is"


def coordinate_scale_figure(raw: dict[str, Features], standardised: dict[str, Features]) -> Figure:
    """One panel per teacher: the per-coordinate std of its features on a batch, before and after
    standardisation, coordinates sorted from the widest (log scale).

    Args:
        raw: teacher name -> its features of a batch (at least 2 images).
        standardised: the same features standardised.
    """
    if set(raw) != set(standardised):
        raise ValueError(
            f"raw and standardised features name different teachers: {sorted(raw)}, {sorted(standardised)}"
        )
    fig, axes = line_panels(list(raw), xlabel="coordinate (sorted)", ylabel="std over the batch")
    for ax, name in zip(axes, raw, strict=True):
        for label, out, style in (("raw", raw[name], "-"), ("standardised", standardised[name], "--")):
            if out.summary.shape[0] < 2:
                raise ValueError(
                    f"{name}: a batch of at least 2 images is needed, got {out.summary.shape[0]}"
                )
            for kind, rows in (("patches", patch_rows(out.patches)), ("summary", out.summary)):
                std = rows.float().std(0).sort(descending=True).values.clamp_min(1e-8).cpu()
                ax.plot(std, style, label=f"{kind}, {label}")
        ax.set_yscale("log")
    return finish_line_panels(fig, axes, legend_size=7)


def step_views_figure(
    whole: Tensor, step_views: Tensor, index: Tensor, transforms: ViewTransforms | None, count: int = 6
) -> Figure:
    """A step's first `count` views: whole (top row, titled with their index in the view set) and as the
    model sees them after the step's flips and crops (bottom row).

    Args:
        whole: the step's views [B, 3, R, R] in [0, 1].
        step_views: the same views through the step's transforms (`distill.trainer.transformed`).
        index: [B] their indices in the view set (`distill.trainer.batch_indices`).
        transforms: the step's transforms (`distill.trainer.view_transforms`; None = none).
    """
    if not len(whole) == len(step_views) == len(index):
        raise ValueError(f"{len(whole)} whole views, {len(step_views)} step views and {len(index)} indices")
    count = min(count, len(whole))
    images = {f"{k}: view {int(index[k])}": whole[k] for k in range(count)}
    images |= {f"{k}: {transform_title(transforms, k)}": step_views[k] for k in range(count)}
    return image_grid_figure(images, columns=count)
