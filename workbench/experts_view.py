"""The experts at a glance: what their features are, and what their own heads read out of images (or out
of a distilled encoder's estimates of their features): ImageNet classes, text-region and edge maps."""

from __future__ import annotations

import functools

import torch
from matplotlib.figure import Figure
from torch import Tensor

from distill.teachers import Teacher, TeacherOutput
from workbench.expert_heads import READINGS, expert_reading


def teacher_table(teachers: dict[str, Teacher]) -> str:
    """A Markdown table: parameters, summary dimension, patch dimension and stride, input side."""
    lines = [
        "| teacher | params (M) | summary dim | patch dim @ stride | input side |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, teacher in teachers.items():
        params = sum(p.numel() for p in teacher.parameters()) / 1e6
        side = teacher.resolution or f"any (multiple of {teacher.size_multiple})"
        patches = f"{teacher.patch_dim} @ /{teacher.patch_stride}"
        lines.append(f"| {name} | {params:.2f} | {teacher.summary_dim} | {patches} | {side} |")
    return "\n".join(lines) + "\n"


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (from torchvision's metadata; no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def top_classes(probabilities: Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
    """The `k` most probable ImageNet classes per row of [B, 1000] probabilities, as (name, probability)."""
    if probabilities.ndim != 2 or probabilities.shape[1] != len(imagenet_classes()):
        raise ValueError(f"probabilities must have shape [B, 1000], got {list(probabilities.shape)}")
    values, indices = probabilities.topk(k, dim=-1)
    names = imagenet_classes()
    return [
        [(names[i], float(v)) for v, i in zip(vs, ids, strict=True)]
        for vs, ids in zip(values, indices, strict=True)
    ]


@torch.no_grad()
def read_experts(
    experts: dict[str, Teacher], images: Tensor, estimates: dict[str, TeacherOutput] | None = None
) -> dict[str, Tensor]:
    """Each expert's head reading (see `workbench.expert_heads.READINGS`) of a batch of images.

    Args:
        experts: name -> expert; names without a head reading are left out.
        images: [B, 3, H, W] in [0, 1].
        estimates: read these features instead of the experts' own, e.g. a distilled encoder's
            `EncoderFeatures.experts` for the same images (experts missing from it are left out).

    Returns:
        name -> [B, 1000] ImageNet probabilities (semantic) or [B, H, W] maps (text, edges).
    """
    size = tuple(images.shape[-2:])
    readings = {}
    for name, expert in experts.items():
        if name not in READINGS or (estimates is not None and name not in estimates):
            continue
        features = expert(images) if estimates is None else estimates[name]
        readings[name] = expert_reading(name, expert, features, size)
    return readings


def readings_figure(
    images: Tensor, readings: dict[str, dict[str, Tensor]], row_titles: list[str] | None = None
) -> Figure:
    """Rows = images: the image, captioned with each source's top ImageNet class, then every map reading
    (text, edges) of every source side by side.

    Args:
        images: [B, 3, H, W] in [0, 1].
        readings: source (e.g. "expert", "student") -> `read_experts` output for these images.
        row_titles: one per image.
    """
    if not readings:
        raise ValueError("readings_figure needs at least one source of readings")
    maps = [
        (expert, source)
        for expert in READINGS
        for source in readings
        if expert in readings[source] and readings[source][expert].ndim == 3
    ]
    rows, cols = images.shape[0], 1 + len(maps)
    fig = Figure(figsize=(2.4 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    captions = {source: top_classes(r["semantic"], 1) for source, r in readings.items() if "semantic" in r}
    for row in range(rows):
        axes[row][0].imshow(images[row].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        text = [f"{source}: {top[row][0][0]} ({top[row][0][1]:.2f})" for source, top in captions.items()]
        axes[row][0].set_xlabel("\n".join(text), fontsize=7)
        if row_titles:
            axes[row][0].set_ylabel(row_titles[row], fontsize=9)
        for col, (expert, source) in enumerate(maps, start=1):
            axes[row][col].imshow(
                readings[source][expert][row].float().cpu().numpy(), cmap="magma", vmin=0, vmax=1
            )
            if row == 0:
                axes[row][col].set_title(f"{expert} map\n{source}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
