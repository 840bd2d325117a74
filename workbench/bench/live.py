"""Frames per second of the live demo's PCA maps (`workbench.explore.live.LivePCA`) per encoder."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data.scenes import SceneGenerator
from workbench.eval.encoders import Encoder
from workbench.eval.latency import busy_core, num_threads, timing_summary
from workbench.explore.live import LivePCA


@dataclass
class LiveBench:
    """`bench_live`'s figures for one encoder under one set-up (threads, a competing busy core or not)."""

    name: str
    grid: str
    median_ms: float
    p90_ms: float
    fps: float
    threads: int
    loaded: bool = False


def bench_live(
    encoders: dict[str, Encoder],
    resolution: int = 224,
    frames: list[Tensor] | None = None,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    loaded: bool = False,
) -> list[LiveBench]:
    """Frames per second of `LivePCA.picture` (forward pass, projection, colouring) per encoder, after
    `warmup` untimed frames, with `threads` torch threads (None: as set) and, if `loaded`, a competing
    process keeping one core busy (`busy_core`); the frames default to four generated scenes, cycled."""
    frames = frames or list(SceneGenerator(resolution, seed=0).batch(0, 4).images)
    rows = []
    with num_threads(threads), torch.inference_mode(), busy_core(loaded):
        for name, encoder in encoders.items():
            live = LivePCA(encoder, resolution)
            live.fit(frames[0])
            seconds = []
            for i in range(warmup + repeats):
                start = time.perf_counter()
                live.picture(frames[i % len(frames)])
                if i >= warmup:
                    seconds.append(time.perf_counter() - start)
            timing = timing_summary(seconds, 1)
            h, w = live.patches(frames[0]).shape[-2:]
            median, p90 = timing["median_ms"], timing["p90_ms"]
            used = torch.get_num_threads()
            rows.append(LiveBench(name, f"{h}x{w}", median, p90, timing["throughput"], used, loaded))
    return rows


def format_live_bench(rows: list[LiveBench], resolution: int) -> str:
    """A fixed-width table of `bench_live` rows (with each one's torch threads and whether a core was kept
    busy beside it) under a line naming the resolution."""
    lines = [
        f"live PCA at {resolution} px (forward + projection + colouring per frame)",
        f"{'encoder':28s} {'grid':>6s} {'threads':>7s} {'competing':>10s} {'median ms':>10s} {'p90 ms':>8s} "
        f"{'fps':>7s}",
    ]
    lines += [
        f"{r.name:28s} {r.grid:>6s} {r.threads:7d} {'1 busy core' if r.loaded else 'none':>10s} "
        f"{r.median_ms:10.1f} {r.p90_ms:8.1f} {r.fps:7.1f}"
        for r in rows
    ]
    return "\n".join(lines)
