"""Video label propagation by patch-feature affinity (the DINO video segmentation protocol) and its scores.

Given a clip's patch grids and its first frame's labels, each later frame's labels are a weighted sum of the
labels of its `top_k` most similar patches (cosine of L2-normalised features) among a context of frames:
the first frame (its given labels) and the `context` frames before the target (their propagated soft
labels). Weights are a softmax of those similarities at `temperature`. Optionally only patches within
`neighbourhood` patches (each axis) of the query are candidates. The facts follow facebookresearch/dino's
`eval_video_segmentation.py` (top-k 5, 7 previous frames, temperature 0.1; first-frame labels downsampled to
the patch grid by nearest neighbour as one-hot; soft labels upsampled bilinearly, each channel min-max
normalised, then argmax). DINO restricts the neighbourhood to 12 patches on its 30- to 60-patch grids; here
it is off by default: on a scoreboard's 8x8 to 16x16 grids a neighbourhood of a few patches would let an
encoder whose patches are noise copy the labels of the same place, which scores well where objects move a
patch or two per frame.

Scores follow DAVIS: J is the IoU of each first-frame object's predicted and true mask (1 when both are
empty), F the boundary F-measure (boundaries as the object's pixels with a 4-neighbour outside it; a
predicted boundary pixel counts as correct within a disc of `boundary_radius` of a true one and vice
versa; DAVIS's radius is 0.008 of the image diagonal, at least one pixel: 2 px at 128 px). Both are averaged
over the frames after the first per object, then over all objects of all clips; J&F is their mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data.clips import ClipBatch
from workbench.eval.encoders import EncoderFeatures

BOUNDARY_SHARE = 0.008  # DAVIS's boundary tolerance, as a share of the image diagonal


@dataclass(frozen=True)
class PropagationSettings:
    """How labels propagate (see the module docstring): DINO's defaults, neighbourhood off."""

    top_k: int = 5
    context: int = 7
    temperature: float = 0.1
    neighbourhood: int | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.context < 0 or self.temperature <= 0:
            raise ValueError(f"need top_k >= 1, context >= 0 and temperature > 0, got {self}")
        if self.neighbourhood is not None and self.neighbourhood < 0:
            raise ValueError(f"neighbourhood must be None or >= 0 patches, got {self.neighbourhood}")


class PatchEncoder(Protocol):
    """What propagation needs of an encoder (`workbench.eval.encoders.Encoder` is one): patch grids."""

    def __call__(self, images: Tensor) -> EncoderFeatures: ...


def one_hot(labels: Tensor, count: int) -> Tensor:
    """Integer labels [..., h, w] (0 .. count - 1) as one-hot [..., count, h, w] float."""
    return F.one_hot(labels.long(), count).movedim(-1, -3).float()


def at_grid(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Integer label maps [..., H, W] downsampled to `size` by nearest neighbour (the pixel at each cell's
    centre), as DINO reads its first-frame mask."""
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).float()
    small = F.interpolate(flat, size=size, mode="nearest-exact")
    return small.long().reshape(*labels.shape[:-2], *size)


def neighbourhood_mask(height: int, width: int, radius: int) -> Tensor:
    """[h*w, h*w] bool: target patch i may take labels from source patch j (within `radius`, each axis)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    near_rows = (rows[:, None] - rows[None]).abs() <= radius
    return near_rows & ((cols[:, None] - cols[None]).abs() <= radius)


def propagate(grids: Tensor, first: Tensor, settings: PropagationSettings = PropagationSettings()) -> Tensor:
    """Soft labels of every frame of a clip from its first frame's.

    Args:
        grids: [T, D, h, w] patch features of the frames.
        first: [C, h, w] first-frame labels at the patch grid (one-hot, or any soft labels).
        settings: top-k, context, temperature, neighbourhood.

    Returns:
        [T, C, h, w] soft labels; frame 0 is `first`.
    """
    if grids.ndim != 4 or first.ndim != 3 or grids.shape[-2:] != first.shape[-2:]:
        raise ValueError(
            f"need grids [T, D, h, w] and first-frame labels [C, h, w] on one grid, got "
            f"{list(grids.shape)} and {list(first.shape)}"
        )
    frames, _, height, width = grids.shape
    keys = F.normalize(grids.float().flatten(2).transpose(1, 2), dim=-1)  # [T, h*w, D]
    outside = None
    if settings.neighbourhood is not None:
        outside = ~neighbourhood_mask(height, width, settings.neighbourhood).to(grids.device)
    labels = [first.float().flatten(1).T]  # each [h*w, C]
    for t in range(1, frames):
        sources = [0, *range(max(1, t - settings.context), t)]
        similarity = torch.stack([keys[t] @ keys[s].T for s in sources], 1)  # [h*w, S, h*w]
        if outside is not None:
            similarity = similarity.masked_fill(outside[:, None], -math.inf)
        similarity = similarity.flatten(1)
        top, index = similarity.topk(min(settings.top_k, similarity.shape[1]), dim=1)
        weights = torch.softmax(top / settings.temperature, dim=1)  # [h*w, k]
        candidates = torch.cat([labels[s] for s in sources])  # [S*h*w, C]
        labels.append(torch.einsum("qk,qkc->qc", weights, candidates[index]))
    return torch.stack(labels).transpose(1, 2).reshape(frames, -1, height, width)


def segment(soft: Tensor, size: tuple[int, int]) -> Tensor:
    """Label maps [T, H, W] from soft labels [T, C, h, w]: bilinear upsampling to `size`, each channel of
    each frame min-max normalised (as DINO does, so that a small object's weak channel can still win),
    argmax."""
    big = F.interpolate(soft.float(), size=size, mode="bilinear", align_corners=False)
    low = big.amin(dim=(-2, -1), keepdim=True)
    span = big.amax(dim=(-2, -1), keepdim=True) - low
    normalised = torch.where(span > 0, (big - low) / span.clamp(min=1e-12), big)
    return normalised.argmax(1)


def boundary(masks: Tensor) -> Tensor:
    """[..., H, W] bool: pixels of the masks with a 4-neighbour outside (the image border is not one)."""
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    padded = F.pad(flat, (1, 1, 1, 1), mode="replicate")
    neighbours = torch.stack(
        [padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]
    ).amin(0)
    return ((flat > 0) & (neighbours == 0)).reshape(masks.shape)


def dilate(masks: Tensor, radius: int) -> Tensor:
    """[..., H, W] bool masks grown by a disc of `radius` pixels."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disc = (offsets[:, None] ** 2 + offsets[None] ** 2 <= radius**2).float()[None, None]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    return (F.conv2d(flat, disc, padding=radius) > 0).reshape(masks.shape)


def boundary_radius(size: tuple[int, int]) -> int:
    """DAVIS's boundary tolerance in pixels at an image size: 0.008 of the diagonal, rounded up."""
    return max(1, math.ceil(BOUNDARY_SHARE * math.hypot(*size)))


def region_and_boundary(predicted: Tensor, truth: Tensor, objects: int) -> tuple[Tensor, Tensor]:
    """J and F per object and frame: [objects, T] each, for label maps [T, H, W] and objects 1..`objects`."""
    ids = torch.arange(1, objects + 1, device=truth.device)[:, None, None, None]
    pred, true = predicted[None] == ids, truth[None] == ids  # [K, T, H, W]
    union = (pred | true).sum((-2, -1))
    iou = torch.where(union > 0, (pred & true).sum((-2, -1)) / union.clamp(min=1), 1.0)
    radius = boundary_radius(tuple(truth.shape[-2:]))
    edge_pred, edge_true = boundary(pred), boundary(true)
    found_pred, found_true = edge_pred.sum((-2, -1)), edge_true.sum((-2, -1))
    hit_pred = (edge_pred & dilate(edge_true, radius)).sum((-2, -1))
    hit_true = (edge_true & dilate(edge_pred, radius)).sum((-2, -1))
    precision = torch.where(found_pred > 0, hit_pred / found_pred.clamp(min=1), 1.0)
    recall = torch.where(found_true > 0, hit_true / found_true.clamp(min=1), 1.0)
    total = precision + recall
    f_measure = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12), 0.0)
    return iou.float(), f_measure.float()


def clip_scores(predicted: list[Tensor], truths: list[Tensor]) -> dict[str, float]:
    """`propagation_j`, `propagation_f` and `propagation_jf` of label maps [T, H, W] per clip against the
    true masks (objects 1..K of the first frame): per object the mean over frames 1..T-1, then the mean
    over every object of every clip (NaN when no clip has an object)."""
    j_means, f_means = [], []
    for pred, truth in zip(predicted, truths, strict=True):
        objects = int(truth[0].max())
        if objects:
            j, f = region_and_boundary(pred[1:], truth[1:], objects)
            j_means.append(j.mean(1))
            f_means.append(f.mean(1))
    if not j_means:
        return {"propagation_j": math.nan, "propagation_f": math.nan, "propagation_jf": math.nan}
    j_mean, f_mean = torch.cat(j_means).mean().item(), torch.cat(f_means).mean().item()
    return {"propagation_j": j_mean, "propagation_f": f_mean, "propagation_jf": (j_mean + f_mean) / 2}


def propagate_clip(grids: Tensor, first_mask: Tensor, settings: PropagationSettings) -> Tensor:
    """Label maps [T, H, W] of a clip from its patch grids [T, D, h, w] and first-frame mask [H, W]."""
    first = one_hot(at_grid(first_mask, tuple(grids.shape[-2:])), int(first_mask.max()) + 1)
    return segment(propagate(grids, first, settings), tuple(first_mask.shape[-2:]))


def propagation_scores(
    encoder: PatchEncoder, clips: ClipBatch, settings: PropagationSettings = PropagationSettings()
) -> dict[str, float]:
    """The propagation probe: J, F and J&F (see `clip_scores`) of an encoder on generated clips, the first
    frame's masks given. Each clip's frames go through the encoder as one batch."""
    predicted = []
    for frames, masks in zip(clips.frames, clips.masks, strict=True):
        grids = encoder(frames).patches.float().cpu()
        predicted.append(propagate_clip(grids, masks[0].cpu(), settings))
    return clip_scores(predicted, [m.cpu() for m in clips.masks])
