"""The experts' own readings (ImageNet probabilities, text-region map, edge map) of any features in
their space: the expert's own features, or a distilled encoder's estimate of them passed through the
expert's head; and the experts at a glance (feature shapes, top ImageNet classes)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from distill.adaptors import bicubic_resize
from distill.features import Features
from distill.teachers import Teacher
from distill.teachers.registry import expert_spec, registered_teachers

READINGS = {  # built-in expert -> what `expert_reading` gives (its spec's reading description)
    name: expert_spec(name).reading_description for name in registered_teachers()
}


def expert_grid(expert: Teacher, size: tuple[int, int]) -> tuple[int, int]:
    """The patch grid the expert produces for images of `size` (height, width)."""
    height, width = expert.input_size(*size)
    return height // expert.patch_stride, width // expert.patch_stride


@torch.no_grad()
def expert_reading(name: str, expert: Teacher, features: Features, size: tuple[int, int]) -> Tensor:
    """The expert's head applied to features in its space, read as its spec's `reading` says.

    Args:
        name: a registered expert (e.g. "semantic", "text", "edges").
        expert: the expert teacher (its head is used).
        features: features in the expert's space; for a "map" reading, patches on any grid are
            bicubically resized to the grid the expert itself produces for images of `size`.
        size: (height, width) of the images the features come from.

    Returns:
        "classes": [B, 1000] ImageNet probabilities (softmax of the head's logits); "map": channel 0
        of the head's map, [B, H, W]. The expert's `ExpertSpec.reading_description` says what it is.
    """
    if expert_spec(name).reading == "classes":
        return expert.head(Features(features.summary.float(), features.patches), size).softmax(-1)
    grid = expert_grid(expert, size)
    patches = features.patches.float()
    if tuple(patches.shape[-2:]) != grid:
        patches = bicubic_resize(patches, grid)
    return expert.head(Features(features.summary, patches), size)[:, 0]


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
    experts: dict[str, Teacher], images: Tensor, estimates: dict[str, Features] | None = None
) -> dict[str, Tensor]:
    """Each expert's head reading (see `expert_reading`) of a batch of images.

    Args:
        experts: name -> teacher; teachers that are not registered experts (no head) are left out.
        images: [B, 3, H, W] in [0, 1].
        estimates: read these features instead of the experts' own, e.g. a distilled encoder's
            `EncoderFeatures.experts` for the same images (experts missing from it are left out).

    Returns:
        name -> [B, 1000] ImageNet probabilities (e.g. semantic) or [B, H, W] maps (e.g. text, edges).
    """
    size = tuple(images.shape[-2:])
    readings = {}
    for name, expert in experts.items():
        if name not in registered_teachers() or (estimates is not None and name not in estimates):
            continue
        features = expert(images) if estimates is None else estimates[name]
        readings[name] = expert_reading(name, expert, features, size)
    return readings
