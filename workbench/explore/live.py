"""Live PCA of an encoder on a stream of frames (webcam or video file), in a basis fitted once and frozen.

The basis is fitted on one reference frame (the stream's first, or a chosen image) and then kept, so a
colour keeps its meaning from frame to frame. A source that is faster than the encoder loses frames
rather than queueing them: `FrameStats` counts them, with the frames per second actually shown.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from torch import Tensor

from distill.data.images import array_to_tensor, square_view
from workbench.eval.encoders import Encoder
from workbench.viz.panels import to_picture
from workbench.viz.pca import PCABasis

T = TypeVar("T")
PAUSE_S = 2.0  # a longer gap between two frames is a pause of the source: the fps window starts afresh
DEFAULT_FPS = 10.0  # for a video file that does not say its frame rate
FFMPEG_HINT = "MP4 and WebM need PyAV (pip install av, part of the apps extra); GIF works without it"


@dataclass
class FrameStats:
    """Frames shown per second over the last `window` frames, time per frame, and frames dropped.

    Attributes:
        interval: seconds between the frames a camera offers (None for a file player, which reports
            its skipped frames itself); each whole interval the encoder spends on a frame is one
            camera frame dropped.
        window: frames the rates are averaged over.
    """

    interval: float | None = None
    window: int = 20
    shown: int = 0
    dropped: int = 0
    ends: deque = field(default_factory=deque)
    busy: deque = field(default_factory=deque)

    def record(self, start: float, end: float, skipped: int = 0) -> None:
        """One frame processed from `start` to `end` (seconds), after `skipped` frames the source dropped."""
        if self.ends and start - self.ends[-1] > PAUSE_S:
            self.ends.clear()
        self.ends.append(end)
        self.busy.append(end - start)
        while len(self.ends) > self.window:
            self.ends.popleft()
        while len(self.busy) > self.window:
            self.busy.popleft()
        self.shown += 1
        self.dropped += skipped + (int((end - start) / self.interval) if self.interval else 0)

    @property
    def seconds_per_frame(self) -> float:
        """Mean processing time of the recent frames (0 before the first)."""
        return sum(self.busy) / len(self.busy) if self.busy else 0.0

    @property
    def fps(self) -> float:
        """Frames shown per second over the window (from processing time alone until two are shown)."""
        if len(self.ends) >= 2 and self.ends[-1] > self.ends[0]:
            return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])
        return 1 / self.seconds_per_frame if self.seconds_per_frame else 0.0

    def text(self) -> str:
        """'12.3 fps · 41 ms per frame · 5 dropped'."""
        milliseconds = self.seconds_per_frame * 1e3
        return f"{self.fps:.1f} fps · {milliseconds:.0f} ms per frame · {self.dropped} dropped"


def frame_tensor(frame: np.ndarray | Tensor) -> Tensor:
    """A video frame (uint8 HxWx3 array, or [3, H, W] in [0, 1]) as [3, H, W] float in [0, 1]."""
    return frame.float() if isinstance(frame, Tensor) else array_to_tensor(np.asarray(frame))


class LivePCA:
    """PCA-RGB pictures of one encoder's patch features, frame after frame, in a frozen basis.

    Args:
        encoder: the encoder (its resolution is set to `resolution` before each forward pass).
        resolution: square input side in pixels (frames are centre-cropped to a square first).
        side: side of the pictures (default: `resolution`).
        interval: seconds between camera frames, for the dropped-frame count (see `FrameStats`).
        guard: makes the context held around each forward pass, e.g. `lambda: cache.using(spec)` of an
            encoder cache sharing the encoder with other requests.
    """

    def __init__(
        self,
        encoder: Encoder,
        resolution: int = 224,
        side: int | None = None,
        interval: float | None = None,
        guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.encoder = encoder
        self.resolution = resolution
        self.side = side or resolution
        self.guard = guard
        self.basis: PCABasis | None = None
        self.stats = FrameStats(interval)

    def patches(self, frame: np.ndarray | Tensor) -> Tensor:
        """The encoder's [1, D, h, w] patch grid of a frame's centre square at `resolution`."""
        image = square_view(frame_tensor(frame), self.resolution)[None]
        with self.guard():
            self.encoder.resolution = self.resolution
            return self.encoder(image).patches

    def fit(self, reference: np.ndarray | Tensor) -> None:
        """Fit the basis on a reference frame; it stays until `fit` is called again."""
        self.basis = PCABasis.fit(self.patches(reference))

    def colours(self, frame: np.ndarray | Tensor) -> Tensor:
        """[3, h, w] PCA colours of a frame; the first frame seen fits the basis if none is set."""
        patches = self.patches(frame)
        if self.basis is None:
            self.basis = PCABasis.fit(patches)
        return self.basis.to_rgb(patches)[0]

    def picture(self, frame: np.ndarray | Tensor) -> np.ndarray:
        """The PCA map of a frame as uint8 [side, side, 3]."""
        return to_picture(self.colours(frame), self.side)

    def show(self, frame: np.ndarray | Tensor, skipped: int = 0) -> np.ndarray:
        """The frame's centre square beside its PCA map, uint8 [side, 2 * side, 3]; timed into `stats`.

        Args:
            skipped: frames the source dropped before this one (a file player's count).
        """
        start = time.perf_counter()
        image = frame_tensor(frame)
        shown = np.concatenate([to_picture(square_view(image, self.side), self.side), self.picture(image)], 1)
        self.stats.record(start, time.perf_counter(), skipped)
        return shown


def play(
    frames: Iterable[T],
    fps: float,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[T, int]]:
    """Frames of a video in real time at `fps`: a frame whose slot has passed while the caller was busy is
    skipped, not queued, and an early one waits for its slot. Yields (frame, frames skipped before it)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    start, skipped = None, 0
    for index, frame in enumerate(frames):
        now = clock()
        start = now if start is None else start
        if now - start >= (index + 1) / fps:
            skipped += 1
            continue
        if index / fps > now - start:
            sleep(index / fps - (now - start))
        yield frame, skipped
        skipped = 0


def has_ffmpeg() -> bool:
    """Whether imageio can read and write MP4 here (through PyAV's FFmpeg); GIF needs only Pillow."""
    return importlib.util.find_spec("av") is not None


def video_frames(path: str | Path, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], float]:
    """The frames (uint8 HxWx3) of a video file, read lazily, and its frame rate.

    GIF, animated PNG and WebP are read by Pillow; MP4, WebM and others by PyAV (av).
    """
    import imageio.v3 as iio

    path = Path(path)
    try:
        meta = iio.immeta(path)
        frames = iio.imiter(path)
    except Exception as error:  # imageio raises many kinds; one line names the file and the reason
        hint = "" if has_ffmpeg() else f": {FFMPEG_HINT}"
        raise ValueError(f"cannot read {path.name} as a video ({type(error).__name__}){hint}") from error
    fps = float(meta.get("fps") or (1000 / meta["duration"] if meta.get("duration") else DEFAULT_FPS))
    rgb = (np.repeat(f[..., None], 3, 2) if f.ndim == 2 else f[..., :3] for f in frames)
    return itertools.islice(rgb, max_frames), fps


def write_video(pictures: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write uint8 pictures as an animated GIF (Pillow) or an H.264 MP4 (PyAV), which browsers play."""
    path = Path(path)
    if not pictures:
        raise ValueError("no frames to write")
    if path.suffix.lower() == ".gif":
        first, *rest = (Image.fromarray(p) for p in pictures)
        first.save(path, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
        return path
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"export as .gif or .mp4, got '{path.suffix}'")
    if not has_ffmpeg():
        raise ValueError(f"cannot write {path.name}: {FFMPEG_HINT}")
    import imageio.v3 as iio

    iio.imwrite(path, np.stack(pictures), plugin="pyav", codec="libx264", fps=fps)
    return path


def export_video(live: LivePCA, source: str | Path, out: str | Path, max_frames: int = 300) -> Path:
    """Every frame of a video file (up to `max_frames`) as its PCA map, written to `out` (.gif or .mp4)."""
    frames, fps = video_frames(source, max_frames)
    return write_video([live.picture(frame) for frame in frames], out, fps)
