"""Wall-clock latency of an encoder callable, and the set-up it is timed under (eval mode on a device,
a number of CPU threads, a competing busy core). Shared by the PyTorch (`efficiency`) and onnxruntime
(`export`) measurements.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn


def check_batch(images: Tensor) -> None:
    """Raise ValueError unless `images` is a non-empty [B, 3, H, W]-shaped tensor."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] < 1:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty [B, 3, H, W] tensor, got {shape}")


@contextlib.contextmanager
def evaluating(fn: Callable[[Tensor], object], device: str | torch.device | None = None) -> Iterator[None]:
    """For a module: eval mode (and on `device` if given) during the block, then mode and device restored.

    A plain callable passes through untouched.
    """
    if not isinstance(fn, nn.Module):
        yield
        return
    tensors = [*fn.parameters(), *fn.buffers()]
    home = tensors[0].device if tensors else torch.device("cpu")
    training = fn.training
    fn.to(device or home).eval()
    try:
        yield
    finally:
        fn.to(home).train(training)


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(threads)` (None: unchanged), then restore the setting."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def busy_core(active: bool = True) -> Iterator[subprocess.Popen | None]:
    """While `active`, a competing process (yielded) keeps one CPU core busy during the block (a spinning
    Python loop, as another program on the machine would), then it is ended."""
    if not active:
        yield None
        return
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # it is spinning before the clock starts
        yield process
    finally:
        process.kill()
        process.wait()


def timing_summary(seconds: Sequence[float], batch: int) -> dict[str, float]:
    """Median and p90 milliseconds per batch, and images/s at the median, of per-call wall times."""
    ms = sorted(s * 1e3 for s in seconds)
    median = statistics.median(ms)
    p90 = ms[min(len(ms) - 1, math.ceil(0.9 * len(ms)) - 1)]
    return {"median_ms": median, "p90_ms": p90, "throughput": batch * 1e3 / median}


def measure_latency(
    fn: Callable[[Tensor], object],
    images: Tensor,
    warmup: int = 2,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> dict[str, float]:
    """Wall time of `fn(images)` under `torch.inference_mode()`.

    The images are moved to `device`; `fn` must already run there (see `evaluating` for modules). On
    CUDA every call is synchronised before the clock stops.

    Args:
        fn: the encoder.
        images: [B, 3, H, W] batch; B sets what "per batch" and the throughput mean.
        warmup: untimed calls first.
        repeats: timed calls.
        device: where to run.
        threads: torch CPU threads for the measurement (None: as set); restored afterwards.

    Returns:
        {"median_ms", "p90_ms"} per batch and "throughput" in images/s at the median.
    """
    check_batch(images)
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    device = torch.device(device)
    images = images.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds = []
    with num_threads(threads), torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            fn(images)
            sync()
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    return timing_summary(seconds, images.shape[0])
