"""`eupe bench distill`: training throughput of each stage with and without the feature cache."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.config import RunConfig
from distill.device import pick_device
from distill.flops import count_flops
from distill.models import DistilledModel
from distill.pipeline import configured_stages, run_stages
from distill.run_dir import RunDir
from distill.snapshots import SnapshotOverhead, snapshot_overhead
from distill.stages import stage_named

# Dense bf16 tensor-core peaks (FLOP/s) for MFU; other devices report no MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass
class StageBench:
    """One stage's measured throughput."""

    stage: str
    cache: bool
    images_per_second: float
    peak_memory_gib: float
    train_flops_per_image: float
    mfu: float | None
    snapshots: SnapshotOverhead | None = None  # what the stage's snapshots cost (None when off)


def training_flops_per_image(
    config: RunConfig, stage: str, dims: dict[str, tuple[int, int]], side: int
) -> float:
    """FLOPs of one forward + backward pass of the stage's model (backbone and adaptors) on one image."""
    model = DistilledModel(getattr(config, stage_named(stage).model), dims)
    images = torch.rand(1, 3, side, side)

    def step() -> None:
        outputs = model(images)
        sum(o.summary.sum() + o.patches.sum() for o in outputs.values()).backward()

    return count_flops(step)


def peak_bf16(device: torch.device) -> float | None:
    """The device's dense bf16 peak, if known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def bench_distill(config: RunConfig, steps: int, stages: list[str] | None = None) -> list[StageBench]:
    """Run every stage for `steps` steps, with and then without the feature cache, in a scratch folder.

    Throughput counts only the optimisation loop (cache building and warm-up statistics excluded).
    """
    stages = stages or configured_stages(config)
    peak = peak_bf16(pick_device(config.train.device))
    flops: dict[str, float] = {}  # per stage; the same with and without the cache
    results = []
    with tempfile.TemporaryDirectory(prefix="eupe-bench-") as scratch:
        for cache in (True, False):
            cfg = copy.deepcopy(config)
            cfg.train.feature_cache = cache
            cfg.train.checkpoint_every = 10**9
            for stage in stages:
                cfg.stages[stage].steps = steps
                cfg.stages[stage].warmup_steps = min(cfg.stages[stage].warmup_steps, steps // 2)
            run = RunDir(Path(scratch) / ("cache" if cache else "live"))
            for stage, result in run_stages(cfg, run.root, stages).items():
                if stage not in flops:
                    side = max(cfg.stages[stage].resolutions)
                    flops[stage] = training_flops_per_image(cfg, stage, result.teacher_dims, side)
                mfu = flops[stage] * result.images_per_second / peak if peak else None
                overhead = snapshot_overhead(
                    run.snapshots(stage), config.stages[stage].steps, cfg.train.snapshot_every
                )
                results.append(
                    StageBench(
                        stage,
                        cache,
                        result.images_per_second,
                        result.peak_memory_gib,
                        flops[stage],
                        mfu,
                        overhead,
                    )
                )
    return results


def format_bench(results: list[StageBench]) -> str:
    """A plain-text table of the results."""
    header = f"{'stage':9s} {'cache':5s} {'img/s':>9s} {'peak GiB':>9s} {'train GFLOP/img':>16s} {'MFU':>6s}"
    lines = [f"{header}  snapshots (share of the stage; projected to its configured steps)"]
    for r in results:
        mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else "   n/a"
        lines.append(
            f"{r.stage:9s} {'yes' if r.cache else 'no':5s} {r.images_per_second:9.1f} "
            f"{r.peak_memory_gib:9.2f} "
            f"{r.train_flops_per_image / 1e9:16.2f} {mfu}  {r.snapshots or 'no snapshots'}"
        )
    return "\n".join(lines)
