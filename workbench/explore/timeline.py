"""A stage's training timeline as an animation: its snapshots' maps (`workbench.viz.timeline`) by step."""

from __future__ import annotations

from pathlib import Path

from workbench.explore.live import write_video
from workbench.viz.timeline import TimelineMaps


def timeline_gif(maps: TimelineMaps, path: str | Path, fps: float = 2.0) -> Path:
    """Write one frame per snapshot of `maps` as an animated GIF (`.gif`) or an MP4 (`.mp4`, needs PyAV)."""
    return write_video(maps.frames(), path, fps)
