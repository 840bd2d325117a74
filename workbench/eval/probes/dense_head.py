"""Linear dense probes on patch grids: one head and trainer for segmentation, depth and binary maps.

A `DenseProbe` is BatchNorm2d(D) + Conv2d(D, C, 1) on the patch grid (evaluated on channels-last patch
rows), its logits upsampled bilinearly; it is trained on the CPU, deterministically from `seed`, with
minibatch AdamW and a cosine-decayed learning rate for a fixed number of steps. The loss is computed at a
capped resolution (`loss_size`, default 32 px on the longer side, never below the patch grid): labels are
area-downsampled to it once, before training (class fractions for segmentation, mean log-depth for depth,
positive fraction for binary maps). Evaluation always runs at full label resolution, on test images in
chunks: the C-channel output at label resolution exists for one chunk at a time, and one prediction map
per test image is kept. Use `train_dense_probe` + `evaluate_dense_probe` to keep the trained `DenseProbe`
(e.g. to show its predictions or save it with `workbench.eval.probes.saved.save_probe`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.seeds import seeded
from workbench.eval.metrics import accuracy, binary_f_score, depth_metrics, mean_iou

Task = Literal["segmentation", "depth", "binary"]
TASKS: tuple[str, ...] = get_args(Task)
PATCHES_PER_STEP = 16384  # default dense-probe batch: 32 images, down to 8 when their grids are large


def _batches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[Tensor]:
    """`steps` index batches: consecutive slices of seeded permutations (full batch if n <= batch_size)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if order.numel() < min(batch_size, n):
            order = torch.randperm(n, generator=gen)
        yield order[:batch_size]
        order = order[batch_size:]


def _train(
    model: nn.Module,
    batch_loss: Callable[[Tensor], Tensor],
    n: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> None:
    """Minimise `batch_loss(indices)` with AdamW (cosine-decayed lr) over seeded minibatches of range(n)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for idx in _batches(n, batch_size, steps, seed):
        loss = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown dense probe task {task!r}; expected one of {TASKS}")


def _decode(task: str, logits: Tensor) -> Tensor:
    """Head output at label resolution -> class ids, depth or probability [B, H, W]."""
    if task == "segmentation":
        return logits.argmax(1)
    return logits[:, 0].exp() if task == "depth" else logits[:, 0].sigmoid()


class DenseProbe(nn.Module):
    """A linear head on a patch grid: BatchNorm2d(D) + Conv2d(D, C, 1).

    Evaluated on channels-last patch rows (the same function; faster on CPU than NCHW). Outputs per
    task: segmentation -> C class logits; depth -> log-depth; binary -> one logit. Save with
    `{"config": probe.config, "state_dict": probe.state_dict()}` and restore with
    `DenseProbe(**config).load_state_dict(state_dict)`.
    """

    def __init__(self, in_dim: int, task: Task, num_classes: int | None = None) -> None:
        super().__init__()
        _check_task(task)
        if (task == "segmentation") != (num_classes is not None) or (
            num_classes is not None and num_classes < 2
        ):
            raise ValueError("num_classes (>= 2) is required for segmentation and only for segmentation")
        self.task = task
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(in_dim)
        self.head = nn.Conv2d(in_dim, num_classes or 1, 1)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the module before `load_state_dict`."""
        return {"in_dim": self.norm.num_features, "task": self.task, "num_classes": self.num_classes}

    def forward(self, patches: Tensor) -> Tensor:
        """[B, D, h, w] patches (any float dtype) -> [B, C, h, w] logits (log-depth for depth)."""
        b, d, h, w = patches.shape
        rows = self.norm(patches.permute(0, 2, 3, 1).reshape(-1, d, 1, 1).float()).flatten(1)
        logits = F.linear(rows, self.head.weight.flatten(1), self.head.bias)
        return logits.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def predict(self, patches: Tensor, size: int | tuple[int, int], batch_size: int = 32) -> Tensor:
        """Predictions at label resolution, computed in chunks of `batch_size` images.

        Args:
            patches: [B, D, h, w] features.
            size: output (H, W) or side.

        Returns:
            [B, H, W]: int64 class ids (segmentation), depth (depth) or probability (binary).
        """
        if patches.ndim != 4 or patches.shape[1] != self.norm.num_features:
            raise ValueError(
                f"patches must be [B, {self.norm.num_features}, h, w], got shape {tuple(patches.shape)}"
            )
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.eval()
        with torch.no_grad():
            chunks = [
                _decode(self.task, _resize(self(patches[i : i + batch_size]), size))
                for i in range(0, patches.shape[0], batch_size)
            ]
        return torch.cat(chunks)


def _resize(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _loss_size(grid: tuple[int, int], label: tuple[int, int], loss_size: int) -> tuple[int, int]:
    """Label size scaled so its longer side is max(loss_size, longer grid side), never upscaled."""
    scale = min(1.0, max(loss_size, *grid) / max(label))
    return max(1, round(label[0] * scale)), max(1, round(label[1] * scale))


@dataclass(frozen=True)
class _Objective:
    """A task's training targets (all train images, at loss resolution) and loss."""

    targets: Tensor  # [N, C, h', w'] float16
    loss: Callable[[Tensor, Tensor], Tensor]
    initial_bias: float | None = None


def _loss_targets(labels: Tensor, size: tuple[int, int], to_maps: Callable[[Tensor], Tensor]) -> Tensor:
    """Area-downsample `to_maps(labels)` ([B, C, H, W] float) to `size`, 8 images at a time, as float16."""
    chunks = []
    for start in range(0, labels.shape[0], 8):
        maps = to_maps(labels[start : start + 8])
        chunks.append(
            (maps if tuple(maps.shape[-2:]) == size else F.interpolate(maps, size, mode="area")).half()
        )
    return torch.cat(chunks)


def _objective(task: str, labels: Tensor, num_classes: int | None, size: tuple[int, int]) -> _Objective:
    """The training objective of a task, after checking the whole train label set."""
    if task == "segmentation":
        if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"segmentation labels must be integers in [0, {num_classes})")

        def one_hot(y: Tensor) -> Tensor:
            return torch.zeros(y.shape[0], num_classes, *y.shape[1:]).scatter_(1, y[:, None].long(), 1.0)

        # soft targets: the fraction of each class in a loss pixel
        return _Objective(_loss_targets(labels, size, one_hot), F.cross_entropy)
    if task == "depth":
        if not (labels > 0).all():
            raise ValueError("depth labels must be > 0 everywhere")
        targets = _loss_targets(labels, size, lambda y: y.float().log()[:, None])
        return _Objective(targets, F.l1_loss, targets.float().mean().item())
    if labels.dtype != torch.bool:
        raise ValueError(f"binary masks must be bool, got {labels.dtype}")
    positive = labels.float().mean().item()
    if not 0 < positive < 1:
        raise ValueError("binary masks must contain both positive and negative pixels")
    pos_weight = torch.tensor((1 - positive) / positive)
    return _Objective(
        _loss_targets(labels, size, lambda y: y.float()[:, None]),
        lambda logits, t: F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight),
    )


def train_dense_probe(
    task: Task,
    patches: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    steps: int = 300,
    batch_size: int | None = None,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
    loss_size: int = 32,
) -> DenseProbe:
    """Train a `DenseProbe` on patch grids against full-resolution labels.

    Args:
        task: "segmentation" (cross-entropy), "depth" (L1 on log-depth) or "binary" (BCE with
            pos_weight = negatives / positives over the train set).
        patches: [N, D, h, w] features (any float dtype).
        labels: [N, H, W]: int64 classes, positive depths, or bool masks; H, W may exceed h, w.
        num_classes: segmentation classes (segmentation only).
        steps, lr, weight_decay: AdamW schedule.
        batch_size: images per step; default 32, fewer on big grids so a step sees about
            `PATCHES_PER_STEP` patches, but at least 8 images (16 of 32x32, 8 of 64x64).
        seed: seeds initialisation and batch order.
        loss_size: longer side of the loss map, at least the grid's (labels are area-downsampled to it
            once, before training; see the module docstring).
    """
    if patches.ndim != 4 or labels.ndim != 3 or patches.shape[0] != labels.shape[0] or patches.shape[0] == 0:
        raise ValueError(
            f"patches must be [N, D, h, w] and labels [N, H, W] with N > 0, "
            f"got {tuple(patches.shape)} and {tuple(labels.shape)}"
        )
    _check_task(task)
    size = _loss_size(tuple(patches.shape[-2:]), tuple(labels.shape[-2:]), loss_size)
    objective = _objective(task, labels, num_classes, size)
    with seeded(seed):
        probe = DenseProbe(patches.shape[1], task, num_classes)
    if objective.initial_bias is not None:
        nn.init.constant_(probe.head.bias, objective.initial_bias)

    def batch_loss(idx: Tensor) -> Tensor:
        return objective.loss(_resize(probe(patches[idx]), size), objective.targets[idx].float())

    if batch_size is None:
        batch_size = min(32, max(8, PATCHES_PER_STEP // (patches.shape[-2] * patches.shape[-1])))
    _train(probe, batch_loss, patches.shape[0], steps, batch_size, lr, weight_decay, seed)
    return probe


def evaluate_dense_probe(
    probe: DenseProbe, patches: Tensor, labels: Tensor, tolerance: int = 0, batch_size: int = 32
) -> dict[str, float]:
    """Score a trained probe on held-out patch grids at full label resolution.

    Args:
        probe: a trained `DenseProbe`.
        patches: [M, D, h, w] features.
        labels: [M, H, W] labels of the probe's task (depth > 0 everywhere).
        tolerance: pixel tolerance of the binary F-score (binary only).
        batch_size: test images predicted at once.

    Returns:
        segmentation: {"miou", "pixel_accuracy"}; depth: {"rmse", "absrel", "delta1"};
        binary: {"f", "precision", "recall", "threshold"}.
    """
    if labels.ndim != 3 or labels.shape[0] != patches.shape[0]:
        raise ValueError(
            f"labels must be [M, H, W] matching {patches.shape[0]} patch grids, got {tuple(labels.shape)}"
        )
    pred = probe.predict(patches, tuple(labels.shape[-2:]), batch_size)
    if probe.task == "segmentation":
        return {"miou": mean_iou(pred, labels, probe.num_classes), "pixel_accuracy": accuracy(pred, labels)}
    if probe.task == "depth":
        return depth_metrics(pred, labels)
    return binary_f_score(pred, labels, tolerance=tolerance)


def linear_segmentation(
    train_patches: Tensor,
    train_labels: Tensor,
    test_patches: Tensor,
    test_labels: Tensor,
    num_classes: int,
    **train_options: Any,
) -> dict[str, float]:
    """Linear segmentation probe: {"miou", "pixel_accuracy"} on the test split.

    `train_options` are the keyword arguments of `train_dense_probe` (steps, batch_size, lr,
    weight_decay, seed, loss_size).
    """
    probe = train_dense_probe("segmentation", train_patches, train_labels, num_classes, **train_options)
    return evaluate_dense_probe(probe, test_patches, test_labels)


def linear_depth(
    train_patches: Tensor, train_depth: Tensor, test_patches: Tensor, test_depth: Tensor, **train_options: Any
) -> dict[str, float]:
    """Linear depth probe (L1 loss on log-depth): {"rmse", "absrel", "delta1"} on the test split.

    Log-depth suits scene depths spanning 0.5..20 units (errors become relative, matching absrel and
    delta1); the head's bias starts at the mean train log-depth. Depths must be > 0 everywhere.
    `train_options` as in `linear_segmentation`.
    """
    probe = train_dense_probe("depth", train_patches, train_depth, **train_options)
    return evaluate_dense_probe(probe, test_patches, test_depth)


def linear_binary_map(
    train_patches: Tensor,
    train_masks: Tensor,
    test_patches: Tensor,
    test_masks: Tensor,
    tolerance: int = 0,
    **train_options: Any,
) -> dict[str, float]:
    """Linear probe for sparse binary maps (edges, text): {"f", "precision", "recall", "threshold"}.

    Trained with positive-weighted BCE; scored with `binary_f_score` (one threshold for the whole test
    set, match radius `tolerance` px). `train_options` as in `linear_segmentation`.
    """
    probe = train_dense_probe("binary", train_patches, train_masks, **train_options)
    return evaluate_dense_probe(probe, test_patches, test_masks, tolerance=tolerance)
