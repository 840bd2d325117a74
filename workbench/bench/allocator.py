"""What `distill.allocator` buys on this machine: each expert's forward pass over a batch of views, in a
fresh process with glibc's allocator as the system configured it and in one tuned by the engine's import."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from distill.allocator import OPT_OUT


@dataclass
class AllocatorBench:
    """Per forward pass of one expert in one process: wall, user and system seconds, minor page faults."""

    expert: str
    allocator: str  # "system" or "tuned"
    wall_s: float
    user_s: float
    sys_s: float
    faults: float


def measure_here(expert: str, count: int, side: int, repeats: int) -> dict[str, float]:
    """Time `repeats` forward passes of `expert` on `count` random views of `side` px in this process, after
    two untimed ones (which grow the heap to its working size); per-pass means."""
    import torch

    from distill.teachers import build_teacher

    teacher = build_teacher(expert)
    images = torch.rand(count, 3, side, side, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        teacher(images)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        teacher(images)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": (time.perf_counter() - start) / repeats,
        "user_s": (after.ru_utime - before.ru_utime) / repeats,
        "sys_s": (after.ru_stime - before.ru_stime) / repeats,
        "faults": (after.ru_minflt - before.ru_minflt) / repeats,
    }


def measure_in_process(expert: str, count: int, side: int, repeats: int, tuned: bool) -> AllocatorBench:
    """`measure_here` in a fresh interpreter, with the engine's allocator tuning or without it."""
    env = dict(os.environ)
    env.pop(OPT_OUT, None)
    if not tuned:
        env[OPT_OUT] = "1"
    code = (
        "import json; from workbench.bench.allocator import measure_here; "
        f"print(json.dumps(measure_here({expert!r}, {count}, {side}, {repeats})))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"measuring {expert} failed: {done.stderr.strip().splitlines()[-1:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return AllocatorBench(expert, "tuned" if tuned else "system", **figures)


def bench_allocator(experts: list[str], count: int, side: int, repeats: int) -> list[AllocatorBench]:
    """Both allocators for each expert, system first (one process each, one at a time)."""
    return [measure_in_process(e, count, side, repeats, tuned) for e in experts for tuned in (False, True)]


def format_allocator_bench(rows: list[AllocatorBench], count: int, side: int) -> str:
    """A fixed-width table of `bench_allocator` rows, each tuned row with its speed-up over the system's."""
    lines = [
        f"one forward pass of {count} views at {side} px (each expert at its own input side)",
        f"{'expert':10s} {'allocator':>9s} {'wall s':>7s} {'user s':>7s} {'sys s':>7s} {'faults':>9s} "
        f"{'speed-up':>8s}",
    ]
    system = {r.expert: r for r in rows if r.allocator == "system"}
    for r in rows:
        base = system.get(r.expert)
        speedup = f"{base.wall_s / r.wall_s:7.2f}x" if r.allocator == "tuned" and base else ""
        lines.append(
            f"{r.expert:10s} {r.allocator:>9s} {r.wall_s:7.2f} {r.user_s:7.2f} {r.sys_s:7.2f} "
            f"{r.faults:9.0f} {speedup:>8s}"
        )
    return "\n".join(lines)
