"""Images per second of the scene generator (`distill.data.scenes.SceneGenerator`)."""

from __future__ import annotations

import time

import torch

from distill.data.scenes import SceneGenerator


def bench_scenes(
    batch_size: int = 256,
    resolution: int | tuple[int, int] = 224,
    device: torch.device | str = "cpu",
    iters: int = 3,
    **generator_kwargs: object,
) -> float:
    """Images per second of `SceneGenerator.batch` after one warm-up batch.

    Args:
        batch_size: samples per call.
        resolution: image size, as for `SceneGenerator`.
        device: where to render.
        iters: timed calls.
        **generator_kwargs: further `SceneGenerator` arguments (e.g. compile=True).
    """
    gen = SceneGenerator(resolution, device=device, **generator_kwargs)
    gen.batch(0, batch_size)
    sync = torch.cuda.synchronize if gen.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(iters):
        gen.batch((i + 1) * batch_size, batch_size)
    sync()
    return iters * batch_size / (time.perf_counter() - t0)
