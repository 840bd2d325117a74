"""`eupe bench data`: throughput and peak memory of the streaming loader (`distill.data.stream`).

Generated JPEG corpora (random smooth images, 256-320 px, quality 90) are written as a folder and as tar
shards; images/s are measured per corpus, source and worker count, and peak memory (RSS) per corpus in a
fresh process iterating both sources with two workers: the ratio between corpus sizes shows whether memory
grows with the corpus.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data.shards import add_member
from distill.data.stream import StreamingImages, stream_loader

IMAGES_PER_SHARD = 1000  # also per subfolder of the folder corpus
WARMUP_STEPS = 2
MEMORY_WORKERS = 2
MEMORY_PROBE = (
    "from workbench.bench.data import memory_probe; memory_probe({sources!r}, {side}, {batch}, {steps})"
)


def smooth_jpeg(rng: np.random.Generator) -> bytes:
    """A random smooth RGB image (a 6x6 noise image upsampled to 256-320 px a side) as JPEG bytes."""
    width, height = (int(s) for s in rng.integers(256, 321, 2))
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_corpus(folder: Path, count: int, seed: int = 0) -> tuple[str, str]:
    """`count` JPEGs under `folder` as `images/<k>/<i>.jpg` and `shards/shard-<k>.tar` (kept once written).

    Returns:
        The folder and the shard sources (`folder:<path>`, `shards:<glob>`).
    """
    sources = f"folder:{folder / 'images'}", f"shards:{folder / 'shards' / 'shard-*.tar'}"
    if (folder / "done").exists():
        return sources
    rng = np.random.default_rng(seed)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    for start in range(0, count, IMAGES_PER_SHARD):
        part = f"{start // IMAGES_PER_SHARD:04d}"
        images = folder / "images" / part
        images.mkdir(parents=True, exist_ok=True)
        with tarfile.open(folder / "shards" / f"shard-{part}.tar", "w") as tar:
            for i in range(start, min(count, start + IMAGES_PER_SHARD)):
                data = smooth_jpeg(rng)
                (images / f"{i:06d}.jpg").write_bytes(data)
                add_member(tar, f"{i:06d}.jpg", data)
    (folder / "done").touch()
    return sources


def throughput(source: str, side: int, batch: int, steps: int, workers: int) -> dict:
    """Seconds to index `source`, and images/s of `steps` loader steps after `WARMUP_STEPS`."""
    start = time.perf_counter()
    dataset = StreamingImages(source, side, batch, seed=0)
    index_s = time.perf_counter() - start
    batches = iter(stream_loader(dataset, 0, WARMUP_STEPS + steps, workers))
    for _ in range(WARMUP_STEPS):
        next(batches)
    start = time.perf_counter()
    for _ in batches:
        pass
    return {"index_s": index_s, "images_per_s": steps * batch / (time.perf_counter() - start)}


def max_rss_mib(who: int) -> float:
    """Peak resident memory in MiB of this process (`resource.RUSAGE_SELF`) or of its largest child."""
    return resource.getrusage(who).ru_maxrss / 1024


def memory_probe(sources: list[str], side: int, batch: int, steps: int) -> None:
    """Iterate each source's loader (two workers) for `steps` steps; print the peak RSS as JSON."""
    for source in sources:
        for _ in stream_loader(StreamingImages(source, side, batch, seed=0), 0, steps, MEMORY_WORKERS):
            pass
    main, workers = max_rss_mib(resource.RUSAGE_SELF), max_rss_mib(resource.RUSAGE_CHILDREN)
    print(json.dumps({"main_mib": main, "workers_mib": workers}))


def peak_memory(sources: tuple[str, str], side: int, batch: int, steps: int) -> dict:
    """`memory_probe` run in a fresh Python process."""
    code = MEMORY_PROBE.format(sources=list(sources), side=side, batch=batch, steps=steps)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    return json.loads(result.stdout.splitlines()[-1])


def bench_data(
    sizes: tuple[int, ...] = (2000, 20000),
    workers: tuple[int, ...] = (0, 1, 2),
    side: int = 224,
    batch: int = 64,
    steps: int = 20,
    root: Path | None = None,
) -> list[dict]:
    """Throughput and peak memory of the streaming loader on generated JPEG corpora.

    Args:
        sizes: corpus sizes (images).
        workers: loader worker counts to time (0: in process).
        side: view side.
        batch: images per step.
        steps: timed steps (after two warm-up steps); also the memory probe's steps.
        root: where the corpora are written and kept (default: a temporary folder, removed after).

    Returns:
        Rows of kind `throughput` (images, source, workers, index_s, images_per_s) and `memory`
        (images, main_mib, workers_mib: peak RSS of the main process and of its largest worker).
    """
    if root is None:
        with tempfile.TemporaryDirectory(prefix="eupe-data-bench-") as folder:
            return bench_data(sizes, workers, side, batch, steps, Path(folder))
    rows = []
    for size in sizes:
        sources = write_corpus(root / f"jpeg-{size}", size)
        for source in sources:
            for count in workers:
                row = throughput(source, side, batch, steps, count)
                kind = source.partition(":")[0]
                rows.append({"kind": "throughput", "images": size, "source": kind, "workers": count, **row})
        rows.append({"kind": "memory", "images": size, **peak_memory(sources, side, batch, steps)})
    return rows


def format_data_bench(rows: list[dict]) -> str:
    """Plain-text tables of `bench_data` rows, and the peak-memory ratio of the largest to the smallest
    corpus."""
    lines = [f"{'images':>7s} {'source':7s} {'workers':>7s} {'index s':>8s} {'images/s':>9s}"]
    for r in (r for r in rows if r["kind"] == "throughput"):
        timing = f"{r['index_s']:8.2f} {r['images_per_s']:9.0f}"
        lines.append(f"{r['images']:7d} {r['source']:7s} {r['workers']:7d} {timing}")
    memory = [r for r in rows if r["kind"] == "memory"]
    lines += ["", f"{'images':>7s} {'main MiB':>9s} {'worker MiB':>11s}"]
    lines += [f"{r['images']:7d} {r['main_mib']:9.0f} {r['workers_mib']:11.0f}" for r in memory]
    if len(memory) > 1:
        small, large = min(memory, key=lambda r: r["images"]), max(memory, key=lambda r: r["images"])
        main, worker = (large[k] / small[k] for k in ("main_mib", "workers_mib"))
        lines.append(
            f"peak RSS, {large['images']} / {small['images']} images: main {main:.2f}x, worker {worker:.2f}x"
        )
    return "\n".join(lines)
