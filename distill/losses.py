"""The EUPE distillation loss: cos(summary) + alpha cos(patches) + beta smoothL1(patches), per teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.adaptors import match_grids
from distill.features import Features


def cosine_distance(prediction: Tensor, target: Tensor, dim: int, mask: Tensor | None = None) -> Tensor:
    """Mean of 1 - cosine similarity along `dim`; with a [B] `mask`, over the samples it keeps (0 if none)."""
    distance = 1 - F.cosine_similarity(prediction.float(), target.float(), dim=dim, eps=1e-6)
    if mask is None:
        return distance.mean()
    kept = mask.to(distance.dtype).view(-1, *([1] * (distance.ndim - 1))).expand_as(distance)
    return (distance * kept).sum() / kept.sum().clamp(min=1)


def teacher_loss(
    prediction: Features,
    target: Features,
    alpha: float = 0.9,
    beta: float = 0.1,
    patch_weight: float = 1.0,
    smooth_l1_beta: float = 1.0,
    summary_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """Loss terms of one teacher.

    Args:
        prediction: the adaptor outputs (summary [B, D], patches [B, D, h, w]).
        target: the standardised teacher features; patch grids may differ (matched bicubically).
        alpha, beta: weights of the patch cosine and patch smooth-L1 terms (0.9 and 0.1 in the paper).
        patch_weight: the optional gamma multiplying this teacher's patch terms.
        smooth_l1_beta: smooth-L1 transition point.
        summary_mask: [B] bool, the samples whose summary target applies (None = all); a cropped view's
            cached summary describes the whole view, not the crop (see distill.augment).

    Returns:
        `summary_cos`, `patch_cos`, `patch_smooth_l1` (unweighted) and their weighted sum `total`.
    """
    z, y = match_grids(prediction.patches, target.patches)
    terms = {
        "summary_cos": cosine_distance(prediction.summary, target.summary, dim=-1, mask=summary_mask),
        "patch_cos": cosine_distance(z, y, dim=1),
        "patch_smooth_l1": F.smooth_l1_loss(z.float(), y.float(), beta=smooth_l1_beta),
    }
    patch = alpha * terms["patch_cos"] + beta * terms["patch_smooth_l1"]
    terms["total"] = terms["summary_cos"] + patch_weight * patch
    return terms


def distillation_loss(
    predictions: dict[str, Features],
    targets: dict[str, Features],
    alpha: float = 0.9,
    beta: float = 0.1,
    patch_weights: dict[str, float] | None = None,
    smooth_l1_beta: float = 1.0,
    summary_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum of `teacher_loss` over teachers, and every term detached (no device sync), keyed `teacher/term`."""
    total = torch.zeros((), device=next(iter(predictions.values())).summary.device)
    logs: dict[str, Tensor] = {}
    for name, target in targets.items():
        gamma = (patch_weights or {}).get(name, 1.0)
        terms = teacher_loss(predictions[name], target, alpha, beta, gamma, smooth_l1_beta, summary_mask)
        total = total + terms["total"]
        logs.update({f"{name}/{term}": value.detach() for term, value in terms.items()})
    logs["loss"] = total.detach()
    return total, logs
