"""Video label propagation for the live demo: a generated clip (its true first-frame masks, and J&F against
the rest) or an uploaded video (the first-frame labels from a mask image, or from k-means of an encoder's
features of the first frame), propagated through each chosen encoder's features and drawn frame by frame.

Frames are centre squares at the explorer's display side; each encoder sees them at the chosen resolution,
one batch per video, under its feature store lock (see `EncoderCache.using`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from distill.data.clips import ClipGenerator
from distill.data.images import pil_to_tensor, square_view
from workbench.eval.propagation import PropagationSettings, clip_scores, propagate_clip
from workbench.explore.explorer import Explorer
from workbench.explore.live import frame_tensor, video_frames
from workbench.explore.segments_view import kmeans_segments
from workbench.viz.panels import label_colours, overlay, to_picture
from workbench.viz.upsample import upsample

MAX_LABELS = 16  # colours of a mask image (the background included)
GAP = 4  # white pixels between the panels of a frame


@dataclass
class Video:
    """Frames to propagate through: [T, 3, S, S] in [0, 1], and for a generated clip its masks [T, S, S]."""

    frames: Tensor
    fps: float
    truth: Tensor | None = None


@dataclass
class Propagation:
    """What the tab shows: per frame one picture (the frame, the truth if known, each encoder's labels) and
    notes (J&F per encoder on a generated clip)."""

    pictures: list[np.ndarray] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def generated_video(seed: int, frames: int, side: int) -> Video:
    """The first clip of a seed (see `ClipGenerator`), with its masks."""
    clip = ClipGenerator(side, frames=frames, seed=seed).batch(0, 1)
    return Video(clip.frames[0], 4.0, clip.masks[0])


def uploaded_video(path: str | Path, side: int, max_frames: int) -> Video:
    """The first `max_frames` frames of a video file (MP4, WebM, GIF, ...), each its centre square."""
    frames, fps = video_frames(path, max_frames)
    squares = [square_view(frame_tensor(frame), side) for frame in frames]
    if len(squares) < 2:
        raise ValueError(f"{Path(path).name} has {len(squares)} frame(s): propagation needs at least 2")
    return Video(torch.stack(squares), fps)


def mask_image(path: str | Path, side: int) -> Tensor:
    """Labels [S, S] from a mask image's centre square: each colour one label, the darkest the background."""
    try:
        with Image.open(path) as image:
            colours = pil_to_tensor(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(
            f"{Path(path).name} is not a readable mask image ({type(error).__name__})"
        ) from error
    height, width = colours.shape[-2:]
    crop = min(height, width)  # the centre square, as `square_view` takes of the frames
    top, left = (height - crop) // 2, (width - crop) // 2
    square = colours[None, :, top : top + crop, left : left + crop]
    small = F.interpolate(square, size=(side, side), mode="nearest-exact")[0]
    found, labels = torch.unique(small.flatten(1).T, dim=0, return_inverse=True)
    if len(found) > MAX_LABELS:
        raise ValueError(f"{Path(path).name} has {len(found)} colours; a mask may have at most {MAX_LABELS}")
    darkest = found.sum(1).argsort()  # label 0: the darkest colour
    return torch.argsort(darkest)[labels].reshape(side, side)


def encoder_grids(explorer: Explorer, spec: str, frames: Tensor, resolution: int) -> Tensor:
    """[T, D, h, w] patch features of the frames by one encoder, in one batch under its lock."""
    with explorer.cache.using(spec) as slot:
        slot.encoder.resolution = resolution
        return slot.encoder(frames).patches.float().cpu()


def first_labels(explorer: Explorer, video: Video, spec: str, resolution: int, k: int) -> Tensor:
    """First-frame labels [S, S] for a video without masks: k-means of the encoder's first-frame features,
    its largest cluster taken as the background."""
    grid = encoder_grids(explorer, spec, video.frames[:1], resolution)[0]
    return upsample(kmeans_segments(grid, k), tuple(video.frames.shape[-2:])).long()


def labelled(frame: Tensor, labels: Tensor, count: int) -> np.ndarray:
    """A frame [3, S, S] with labels [S, S] blended over it (label 0 left as the frame)."""
    colours = label_colours(labels, count)
    return np.where(
        (labels > 0)[..., None].numpy(), overlay(frame, colours, 0.55), to_picture(frame, frame.shape[-1])
    )


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """Pictures of one height in a row on white."""
    height = panels[0].shape[0]
    gap = np.full((height, GAP, 3), 255, np.uint8)
    return np.concatenate([part for panel in panels for part in (panel, gap)][:-1], 1)


def propagation(
    explorer: Explorer,
    video: Video,
    specs: list[str],
    resolution: int,
    first: Tensor,
    settings: PropagationSettings,
) -> Iterator[Propagation]:
    """Each encoder's propagation of the first-frame labels [S, S] through the video, yielded after each
    encoder: per frame the frame, the truth (a generated clip) and every encoder so far, side by side."""
    count = int(first.max()) + 1
    if count < 2:
        raise ValueError("the first-frame labels name no object: every pixel is background")
    shown = Propagation(captions=["frame", *(["truth"] if video.truth is not None else [])])
    columns = [[to_picture(f, f.shape[-1]) for f in video.frames]]
    if video.truth is not None:
        columns.append([labelled(f, m, count) for f, m in zip(video.frames, video.truth, strict=True)])
    for spec in specs:
        try:
            grids = encoder_grids(explorer, spec, video.frames, resolution)
        except ValueError as error:
            shown.notes.append(str(error))
            continue
        predicted = propagate_clip(grids, first, settings)
        name = explorer.encoder_name(spec)
        columns.append([labelled(f, p, count) for f, p in zip(video.frames, predicted, strict=True)])
        shown.captions.append(name)
        if video.truth is not None:
            scores = clip_scores([predicted], [video.truth])
            shown.notes.append(
                f"{name}: J {scores['propagation_j']:.3f} · F {scores['propagation_f']:.3f} · "
                f"J&F {scores['propagation_jf']:.3f} ({grids.shape[-2]}x{grids.shape[-1]} patches)"
            )
        shown.pictures = [side_by_side(list(row)) for row in zip(*columns, strict=True)]
        yield shown
    if not shown.pictures:
        shown.pictures = [side_by_side(list(row)) for row in zip(*columns, strict=True)]
        shown.notes = shown.notes or ["select at least one encoder"]
        yield shown
