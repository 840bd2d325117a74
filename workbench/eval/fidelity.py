"""Label-free fidelity of an encoder to its experts, from features alone: linear CKA of its patch features
with each expert's, the cosine of each adaptor estimate with its expert's target, and the effective rank
(RankMe) of its patch features; per snapshot of a training stage (`stage_timeline`) or for a finished encoder
(`fidelity_scores`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from distill.features import Features
from distill.run_dir import RunDir
from distill.snapshots import (
    TARGETS_FILE,
    estimates_of,
    features_of,
    read_snapshot,
    snapshot_series,
    step_file,
)
from distill.stages import EXPERTS, stage_named
from distill.standardize import TeacherStandardizer
from workbench.eval.encoders import Encoder
from workbench.eval.similarity import agreement_score, linear_cka, patch_rows_for_cka, standardised


def grid_cka(a: Tensor, b: Tensor) -> float:
    """Linear CKA between two patch grids of the same images ([B, D1, h, w], [B, D2, h', w']; the larger
    grid is area-averaged to the smaller), one row per patch."""
    rows = patch_rows_for_cka({"a": a, "b": b})
    return linear_cka(rows["a"], rows["b"])


def rankme(patches: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of the [N, D]
    rows (a [B, D, h, w] grid gives a row per patch); from 1 (rank one) to min(N, D) (a flat spectrum)."""
    rows = patches.flatten(2).transpose(1, 2).reshape(-1, patches.shape[1]) if patches.ndim == 4 else patches
    singular = torch.linalg.svdvals(rows.double())
    p = singular / singular.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def fidelity_scores(
    features: Tensor, estimates: dict[str, Features], expert_targets: dict[str, Features]
) -> dict[str, float]:
    """An encoder's label-free fidelity on one image set.

    Args:
        features: [B, D, h, w] the encoder's own patch features.
        estimates: teacher -> the encoder's estimate of its features (adaptor output); may be empty.
        expert_targets: teacher -> the teacher's own (standardised) features of the same images.

    Returns:
        `<teacher>_cka` (its patches with the encoder's) for every target, `<teacher>_cos` (mean per-patch
        cosine of the estimate with the target, grids matched as in training) where there is an estimate,
        and `rankme` of the encoder's patch features.
    """
    scores = {f"{name}_cka": grid_cka(features, target.patches) for name, target in expert_targets.items()}
    for name, target in expert_targets.items():
        if name in estimates:
            scores[f"{name}_cos"] = agreement_score(estimates[name].patches, target.patches)
    scores["rankme"] = rankme(features)
    return scores


def encoder_fidelity(
    encoder: Encoder,
    experts: dict[str, Encoder],
    images: Tensor,
    standardizers: dict[str, TeacherStandardizer] | None = None,
) -> dict[str, float]:
    """`fidelity_scores` of a finished encoder on `images` (for the scoreboard: the held-out photo crops,
    `EvalData.photos`): its patch features and its estimates (distilled encoders) against each expert's own
    features, both standardised first where `standardizers` are given (the space training compares in)."""
    with torch.no_grad():
        out = encoder(images, with_experts=True)
        targets = {
            name: Features(t.summary, t.patches) for name, t in ((n, e(images)) for n, e in experts.items())
        }
    estimates = out.experts
    if standardizers is not None:
        estimates, targets = standardised(estimates, standardizers), standardised(targets, standardizers)
    return fidelity_scores(out.patches, estimates, targets)


@dataclass
class Timeline:
    """A stage's fidelity at each snapshot: `steps`, and per figure (`fidelity_scores`' keys) its values."""

    run: str
    stage: str
    steps: list[int]
    scores: dict[str, list[float]]


def stage_targets(run: RunDir, stage: str) -> dict[str, Features]:
    """The targets a stage's snapshots are compared with: its own teachers', and for a stage taught by a
    distilled teacher also those of that teacher's stage (the experts', for a student): the same probe images,
    perhaps at another side, so their grids are matched by `grid_cka`."""
    tensors, _ = read_snapshot(run.snapshots(stage) / TARGETS_FILE)
    targets = estimates_of(tensors)
    taught_by = stage_named(stage).taught_by
    upstream = run.snapshots(taught_by) / TARGETS_FILE if taught_by != EXPERTS else None
    if upstream is not None and upstream.is_file():
        targets = estimates_of(read_snapshot(upstream)[0]) | targets
    return targets


def stage_timeline(run_dir: str | Path, stage: str) -> Timeline:
    """The fidelity of every snapshot of a stage, from its snapshot files alone.

    Raises:
        FileNotFoundError: the stage has no snapshots (trained with `train.snapshot_every` 0).
    """
    run = RunDir(run_dir)
    folder = run.snapshots(stage)
    steps = snapshot_series(folder)
    targets = stage_targets(run, stage)
    scores: dict[str, list[float]] = {}
    for step in steps:
        tensors, _ = read_snapshot(step_file(folder, step))
        row = fidelity_scores(features_of(tensors, "features").patches, estimates_of(tensors), targets)
        for key, value in row.items():
            scores.setdefault(key, []).append(value)
    return Timeline(run.name, stage, steps, scores)
