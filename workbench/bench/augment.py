"""`eupe bench augment`: how closely the real experts' cached targets, flipped and cropped, match the
experts run on the flipped and cropped views.

The experts are CNNs, hence only roughly equivariant, and a cropped cached grid is upsampled where the
expert sees the zoomed crop at full detail; the agreement with the features of *other* views (a
shuffled baseline) says what the figures mean. Features are standardised per coordinate, as the
feature cache stores them, with statistics of all the features compared (untransformed and
transformed views): a few dozen views leave some coordinates of the untransformed ones constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.adaptors import bicubic_resize
from distill.augment import ViewTransforms, draw_transforms, transform_grid, transform_images
from distill.data.views import build_views
from distill.features import Features
from distill.standardize import TeacherStandardizer
from distill.teachers import EXPERTS, Teacher, build_teacher


def patch_agreement(live: Tensor, cached: Tensor) -> dict[str, float]:
    """Mean cosine over cells and relative L2 error of grids [B, D, h, w], `live` resized to `cached`."""
    if live.shape[-2:] != cached.shape[-2:]:
        live = bicubic_resize(live, (cached.shape[-2], cached.shape[-1]))
    return {
        "patch_cos": F.cosine_similarity(live, cached, dim=1).mean().item(),
        "patch_rel_l2": ((live - cached).norm() / cached.norm()).item(),
    }


def summary_cosine(live: Tensor, cached: Tensor) -> float:
    """Mean cosine between summaries [B, D]."""
    return F.cosine_similarity(live, cached, dim=-1).mean().item()


def fitted_standardizer(teacher: Teacher, outputs: list[Features]) -> TeacherStandardizer:
    """A per-coordinate standardiser fitted on all of `outputs`."""
    standardizer = TeacherStandardizer(teacher.summary_dim, teacher.patch_dim)
    standardizer.fit(outputs)
    return standardizer


def bench_augment(
    names: tuple[str, ...] = EXPERTS,
    count: int = 32,
    resolution: int = 128,
    cells: int = 8,
    seed: int = 0,
    min_cells: int = 4,
) -> list[dict]:
    """Agreement of expert(transformed views) with transformed cached expert grids, per expert.

    Args:
        names: experts (the semantic one runs at its own 224 px input).
        count: number of views (`mixed` source).
        resolution: view side in pixels.
        cells: the crop grid's side in cells.
        seed: seed of the views and of the transforms.
        min_cells: smallest crop side in cells.

    Returns:
        One row per expert and transform set (`flip`: every view flipped; `crop`: every view cropped;
        `crop+flip`: every view cropped, half flipped; `shuffled`: the baseline, features of other
        views): teacher, transform, grid, patch_cos, patch_rel_l2 and summary_cos (None where crops
        leave the summary target invalid).
    """
    views = build_views("mixed", count, resolution, seed).float().div(255)
    generator = torch.Generator().manual_seed(seed)
    sets: dict[str, ViewTransforms] = {
        "flip": draw_transforms(count, cells, generator, flip_p=1.0, crop_p=0.0, min_cells=min_cells),
        "crop": draw_transforms(count, cells, generator, flip_p=0.0, crop_p=1.0, min_cells=min_cells),
        "crop+flip": draw_transforms(count, cells, generator, flip_p=0.5, crop_p=1.0, min_cells=min_cells),
    }
    rows = []
    for name in names:
        teacher = build_teacher(name, resolution=224 if name == "semantic" else None)
        raw = teacher(views)
        live_raw = {label: teacher(transform_images(views, t, resolution)) for label, t in sets.items()}
        standardize = fitted_standardizer(teacher, [raw, *live_raw.values()])
        cached = standardize(raw)
        grid = "x".join(map(str, cached.patches.shape[-2:]))
        other = Features(cached.summary.roll(1, 0), cached.patches.roll(1, 0))
        rows.append(
            {"teacher": name, "transform": "shuffled", "grid": grid,
             **patch_agreement(other.patches, cached.patches),
             "summary_cos": summary_cosine(other.summary, cached.summary)}
        )  # fmt: skip
        for label, t in sets.items():
            live = standardize(live_raw[label])
            valid = bool(t.summary_valid.all())
            rows.append(
                {"teacher": name, "transform": label, "grid": grid,
                 **patch_agreement(live.patches, transform_grid(cached.patches, t)),
                 "summary_cos": summary_cosine(live.summary, cached.summary) if valid else None}
            )  # fmt: skip
    return rows


def format_augment_bench(rows: list[dict]) -> str:
    """A plain-text table of `bench_augment` rows."""
    lines = [f"{'teacher':9s} {'transform':10s} {'grid':>6s} {'patch cos':>10s} {'patch relL2':>12s} "
             f"{'summary cos':>12s}"]  # fmt: skip
    for r in rows:
        summary = "-" if r["summary_cos"] is None else f"{r['summary_cos']:.3f}"
        lines.append(
            f"{r['teacher']:9s} {r['transform']:10s} {r['grid']:>6s} {r['patch_cos']:10.3f} "
            f"{r['patch_rel_l2']:12.3f} {summary:>12s}"
        )
    return "\n".join(lines)
