"""Writing a feature store (see distill.targets.store_format): every teacher's raw features of every sample
of a streamed corpus, shard by shard.

`build_store` writes the manifest first, then each shard folder atomically, so a killed build leaves only
complete shards, and a rerun skips them and rebuilds any found damaged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.atomic import atomic_path
from distill.config import RunConfig
from distill.data.images import DECODE_ERRORS
from distill.data.stream import FolderIndex, ShardIndex, render_view, sample_index
from distill.disk import allocated_memmap
from distill.features import Features
from distill.integrity import file_records
from distill.stage_teachers import StageTeachers, configured_experts
from distill.targets.store_format import (
    CHECKSUMS,
    DTYPE,
    KINDS,
    StoreManifest,
    file_stem,
    shard_name,
    shard_problem,
)


def projected_bytes(count: int, dims: dict[str, tuple[int, int]], grid: int) -> int:
    """Float16 bytes of every teacher's summaries [count, Ds] and pooled patches [count, Dp, grid, grid]."""
    per_sample = sum(ds + dp * grid * grid for ds, dp in dims.values())
    return count * per_sample * np.dtype(DTYPE).itemsize


def gib(nbytes: int | float) -> str:
    return f"{nbytes / 2**30:.3f} GiB"


class CentredViews(Dataset):
    """Item `i`: (uint8 centred square view [3, side, side] of sample `i`, whether it decoded)."""

    def __init__(self, index: FolderIndex | ShardIndex, side: int) -> None:
        self.index, self.side = index, side

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, bool]:
        try:
            view = render_view(self.index.read(i)[0], self.side, None, 0.0, torch.Generator())
        except DECODE_ERRORS:
            return torch.zeros(3, self.side, self.side, dtype=torch.uint8), False
        return torch.from_numpy(np.ascontiguousarray(view)), True


def pooled(features: Features, grid: int) -> Features:
    """Features with the patch grid average-pooled to grid x grid."""
    return Features(features.summary, F.adaptive_avg_pool2d(features.patches, grid))


def store_teachers(config: RunConfig, device: torch.device) -> StageTeachers:
    """The config's expert/timm teachers on `device` (autocast bf16 on CUDA), without standardisers; random
    weights seeded by `train.seed`, as the trainer's."""
    teachers, identity, gammas = configured_experts(config)
    teachers = {name: teacher.to(device).eval() for name, teacher in teachers.items()}
    amp = torch.bfloat16 if device.type == "cuda" else None
    return StageTeachers(teachers, {}, identity, gammas, device, amp)


def probe_grids(teachers: StageTeachers, side: int, grid: int) -> None:
    """Raise a one-line ValueError if a teacher's patch grid at `side` is smaller than grid x grid."""
    probe = torch.zeros(1, 3, side, side, device=teachers.device)
    for name in teachers.teachers:
        h, w = teachers.raw(name, probe).patches.shape[-2:]
        if min(h, w) < grid:
            raise ValueError(f"teacher {name} gives a {h}x{w} patch grid at side {side}, below --grid {grid}")


def build_store(
    config: RunConfig,
    out: Path,
    side: int,
    grid: int,
    budget_gib: float,
    shard_size: int = 1024,
    batch_size: int = 64,
    workers: int = 2,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> StoreManifest:
    """Write (or complete) the feature store of `config`'s teachers and data source in `out`.

    Raises:
        ValueError: a source other than folder:/shards:, a projected size above `budget_gib` (nothing is
            written), a teacher grid below `grid`, or `out` holding a store of something else.
    """
    if min(side, grid, shard_size, batch_size) < 1:
        raise ValueError(f"side, grid, shard size and batch size must be positive, got {side}, {grid}, "
                         f"{shard_size}, {batch_size}")  # fmt: skip
    out, device = Path(out), torch.device(device)
    index = sample_index(config.data.source)
    names = [spec.name for spec in config.teachers]
    if len({file_stem(n) for n in names}) < len(names):
        raise ValueError(f"teacher names {names} clash as file names")
    teachers = store_teachers(config, device)
    dims = teachers.dims()
    size = projected_bytes(len(index), dims, grid)
    log(f"{len(index)} samples of {config.data.source} at side {side}, patches pooled to {grid}x{grid}")
    for name, (ds, dp) in dims.items():
        log(f"  {name}: summary {ds}, patches {dp}")
    log(f"projected store size: {gib(size)}")
    if size > budget_gib * 2**30:
        raise ValueError(
            f"projected store size {gib(size)} exceeds the budget of {budget_gib:g} GiB (--budget-gb)"
        )
    probe_grids(teachers, side, grid)
    manifest = StoreManifest.describe(config, index, side, grid, shard_size, teachers)
    manifest.save(out)
    write_shards(out, manifest, teachers, CentredViews(index, side), batch_size, workers, log)
    return manifest


def shard_batches(manifest: StoreManifest, shards: list[int], batch_size: int) -> list[list[int]]:
    """Batches of sample ids, none crossing a shard boundary, in shard order."""
    return [
        list(ids[start : start + batch_size])
        for ids in map(manifest.ids, shards)
        for start in range(0, len(ids), batch_size)
    ]


def write_shards(
    out: Path,
    manifest: StoreManifest,
    teachers: StageTeachers,
    views: CentredViews,
    batch_size: int,
    workers: int,
    log: Callable[[str], None],
) -> None:
    """Compute and write every shard not yet in `out` or damaged there (named and deleted), each folder
    atomically."""
    todo = [s for s in range(manifest.shards) if not intact_shard(out / shard_name(s), manifest, s, log)]
    if len(todo) < manifest.shards:
        log(f"resumed: {manifest.shards - len(todo)} of {manifest.shards} shards done")
    if not todo:
        return
    loader = DataLoader(views, batch_sampler=shard_batches(manifest, todo, batch_size), num_workers=workers)
    stream, failed = iter(loader), 0
    for shard in todo:
        with atomic_path(out / shard_name(shard)) as tmp:
            failed += write_shard(tmp, manifest, shard, teachers, stream, batch_size)
        log(f"shard {shard + 1} of {manifest.shards} written")
    if failed:
        log(f"{failed} image(s) failed to decode: their rows are zeros, marked invalid in valid.npy")


def write_shard(
    folder: Path,
    manifest: StoreManifest,
    shard: int,
    teachers: StageTeachers,
    stream: Iterator[tuple[Tensor, Tensor]],
    batch_size: int,
) -> int:
    """Fill a new shard folder from the loader's batches of its ids; the number of undecodable images."""
    folder.mkdir(parents=True)
    arrays = {
        name: allocated_memmap(folder / name, dtype, shape)
        for name, (shape, dtype) in manifest.shapes(shard).items()
    }
    for start in range(0, len(manifest.ids(shard)), batch_size):
        images, valid = next(stream)
        rows = slice(start, start + len(valid))
        arrays["valid.npy"][rows] = valid.numpy()
        images, keep = images.to(teachers.device).float().div(255), valid.to(teachers.device)
        for name in teachers.teachers:
            features = pooled(teachers.raw(name, images), manifest.grid)
            for kind, value in zip(KINDS, (features.summary, features.patches), strict=True):
                kept = value * keep.view(-1, *[1] * (value.ndim - 1))  # undecodable: zeros
                arrays[f"{file_stem(name)}.{kind}.npy"][rows] = kept.cpu().numpy()
    failed = int((~arrays["valid.npy"]).sum())
    for array in arrays.values():
        array.flush()
    del arrays
    records = file_records(folder, list(manifest.shapes(shard)))
    (folder / CHECKSUMS).write_text(json.dumps(records, indent=1))
    return failed


def intact_shard(folder: Path, manifest: StoreManifest, shard: int, log: Callable[[str], None]) -> bool:
    """Whether a shard was written and is intact, hashes included; a damaged one is named and deleted."""
    if not folder.is_dir():
        return False
    problem = shard_problem(folder, manifest, shard, hashes=True)
    if problem is not None:
        log(f"{problem}: rebuilding {folder.name}")
        shutil.rmtree(folder)
    return problem is None
