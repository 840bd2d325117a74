"""Probe metrics: classification, segmentation, depth and binary maps (tensors in, floats out).

Inputs may be numpy arrays or torch tensors of any float/int dtype; everything is computed on CPU-friendly
float32/int64 tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = Tensor | np.ndarray
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(1, 100))
DEPTH_MIN = 1e-6  # predictions are clipped to this before ratio-based depth metrics


def _tensor(x: ArrayLike) -> Tensor:
    return torch.as_tensor(x).detach().cpu()


def _same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.numel() == 0:
        raise ValueError("empty input: nothing to evaluate")


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Fraction of positions where the predicted label equals the target label (same shapes)."""
    pred, target = _tensor(pred), _tensor(target)
    _same_shape(pred, target)
    return (pred == target).double().mean().item()


def confusion_matrix(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """Counts of (target, prediction) label pairs.

    Args:
        pred, target: integer label arrays of the same shape.
        num_classes: labels must lie in [0, num_classes) (except `ignore_index` in target).
        ignore_index: target label whose positions are left out.

    Returns:
        [num_classes, num_classes] int64 tensor; row = target class, column = predicted class.
    """
    pred, target = _tensor(pred).long().flatten(), _tensor(target).long().flatten()
    _same_shape(pred, target)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, labels in (("pred", pred), ("target", target)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def mean_iou(pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean intersection-over-union over the classes present in target or prediction.

    Classes absent from both are skipped; positions where target == `ignore_index` are left out.
    """
    cm = confusion_matrix(pred, target, num_classes, ignore_index).double()
    hits = cm.diag()
    union = cm.sum(0) + cm.sum(1) - hits
    present = union > 0
    if not present.any():
        raise ValueError("no labelled pixels left to evaluate (all ignored)")
    return (hits[present] / union[present]).mean().item()


def depth_metrics(pred: ArrayLike, target: ArrayLike, valid: ArrayLike | None = None) -> dict[str, float]:
    """Standard monocular depth errors over the valid pixels.

    Args:
        pred, target: depths of the same shape; target must be > 0 where valid. Predictions are clipped
            to `DEPTH_MIN` so the ratio metrics stay defined.
        valid: optional boolean mask of the pixels to evaluate (default: all).

    Returns:
        {"rmse": sqrt(mean (p - t)^2), "absrel": mean |p - t| / t,
         "delta1": fraction of pixels with max(p / t, t / p) < 1.25}.
    """
    pred, target = _tensor(pred).double(), _tensor(target).double()
    _same_shape(pred, target)
    if valid is not None:
        valid = _tensor(valid).bool()
        if valid.shape != target.shape:
            raise ValueError(
                f"valid mask shape {tuple(valid.shape)} differs from target shape {tuple(target.shape)}"
            )
        pred, target = pred[valid], target[valid]
    if target.numel() == 0:
        raise ValueError("no valid pixels to evaluate")
    if not (target > 0).all():
        raise ValueError("target depth must be > 0 at every valid pixel")
    pred = pred.clamp_min(DEPTH_MIN)
    ratio = torch.maximum(pred / target, target / pred)
    return {
        "rmse": (pred - target).square().mean().sqrt().item(),
        "absrel": ((pred - target).abs() / target).mean().item(),
        "delta1": (ratio < 1.25).double().mean().item(),
    }


def _count_at_least(values: Tensor, thresholds: Tensor) -> Tensor:
    """[T] number of `values` >= each of the ascending `thresholds`."""
    bins = torch.bucketize(values.contiguous(), thresholds, right=True)  # how many thresholds are <= value
    hist = torch.bincount(bins, minlength=thresholds.numel() + 1)
    return hist.flip(0).cumsum(0).flip(0)[1:]


def _dilate(x: Tensor, radius: int) -> Tensor:
    """Max over a (2 radius + 1)^2 square window of each [N, H, W] map."""
    if radius == 0:
        return x
    return F.max_pool2d(x[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]


def binary_f_score(
    prob: ArrayLike,
    target: ArrayLike,
    thresholds: Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
    tolerance: int = 0,
) -> dict[str, float]:
    """Precision, recall and F-measure at the single best threshold for the whole set (ODS-style).

    A pixel is predicted positive when prob >= threshold. With `tolerance` r > 0 a predicted positive
    counts as correct when a target pixel lies within r px (square window, i.e. Chebyshev distance) and
    a target pixel counts as recalled when a predicted positive lies within r px; both via max-pool
    dilation, so a 1-px shifted edge scores perfectly at r = 1. Precision is 0 when nothing is predicted.

    Args:
        prob: scores [..., H, W] (any real range; compared against the thresholds).
        target: boolean (or 0/1) maps of the same shape with at least one positive pixel.
        thresholds: candidate thresholds.
        tolerance: matching radius in pixels.

    Returns:
        {"f", "precision", "recall", "threshold"} at the threshold with the highest F (lowest on ties).
    """
    prob, target = _tensor(prob).float(), _tensor(target)
    _same_shape(prob, target)
    if prob.ndim < 2:
        raise ValueError(f"binary maps need at least 2 dims [..., H, W], got shape {tuple(prob.shape)}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    thresholds = torch.as_tensor(thresholds, dtype=torch.float32).flatten().sort().values
    if thresholds.numel() == 0:
        raise ValueError("thresholds must not be empty")
    prob = prob.reshape(-1, *prob.shape[-2:])
    target = target.reshape(prob.shape).bool()
    num_target = int(target.sum())
    if num_target == 0:
        raise ValueError("target has no positive pixels: recall is undefined")
    near_target = _dilate(target.float(), tolerance).bool()  # where a predicted positive is correct
    best_nearby = _dilate(prob, tolerance)  # a target pixel is recalled when this reaches the threshold
    predicted = _count_at_least(prob.flatten(), thresholds).double()
    correct = _count_at_least(prob[near_target], thresholds).double()
    recalled = _count_at_least(best_nearby[target], thresholds).double()
    precision = correct / predicted.clamp_min(1)
    recall = recalled / num_target
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(f.argmax())
    return {
        "f": f[best].item(),
        "precision": precision[best].item(),
        "recall": recall[best].item(),
        "threshold": thresholds[best].item(),
    }


def mean_pearson(pred: ArrayLike, target: ArrayLike) -> float:
    """The mean over rows (images) of the Pearson correlation of `pred` and `target`, each row flattened;
    a row where either side is constant counts as 0."""
    pred, target = _tensor(pred).double(), _tensor(target).double()
    _same_shape(pred, target)
    pred, target = pred.reshape(len(pred), -1), target.reshape(len(target), -1)
    pred, target = pred - pred.mean(1, keepdim=True), target - target.mean(1, keepdim=True)
    norms = pred.norm(dim=1) * target.norm(dim=1)
    r = torch.where(norms > 0, (pred * target).sum(1) / norms.clamp_min(1e-300), torch.zeros_like(norms))
    return r.mean().item()
