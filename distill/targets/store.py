"""Reading a complete feature store (see distill.targets.store_format) by sample id, and the store a stage
takes its targets from.

`FeatureStore` reads through memory maps, checking every shard's headers and sizes when opened and each
file's hash on its first read in the process; `StoreTargets` gives one teacher's stored features,
standardised as they are taken.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.config import RunConfig
from distill.data.training_data import TrainingData
from distill.features import Features
from distill.integrity import file_problem
from distill.stage_teachers import teacher_identity
from distill.stages import EXPERTS, stage_named
from distill.standardize import TeacherStandardizer
from distill.targets.store_format import (
    KINDS,
    StoreManifest,
    file_stem,
    sample_key,
    shard_name,
    shard_problem,
    shard_records,
)

OPEN_ARRAYS = 256  # memory maps a FeatureStore keeps open


def damaged_shard(problem: str, folder: Path) -> ValueError:
    """The one-line error of a damaged shard met while reading the store."""
    return ValueError(f"{problem}: delete {folder} and run eupe cache build again")


class FeatureStore:
    """A complete feature store, read by sample id: float16 memory maps per shard, opened on first use.

    Attributes:
        count, side, grid: samples, view side, pooled patch grid side.
        teachers: teacher names.
        dims: name -> (summary_dim, patch_dim).

    Raises:
        ValueError: no or invalid manifest, a missing shard folder, or a damaged shard file (one line).
    """

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out)
        self.manifest = manifest = StoreManifest.load(self.root)
        self.count, self.side, self.grid = manifest.count, manifest.side, manifest.grid
        self.teachers = [entry["name"] for entry in manifest.teachers]
        self.dims = {entry["name"]: (entry["summary_dim"], entry["patch_dim"]) for entry in manifest.teachers}
        done = [s for s in range(manifest.shards) if (self.root / shard_name(s)).is_dir()]
        if len(done) < manifest.shards:
            raise ValueError(
                f"store is incomplete: {len(done)} of {manifest.shards} shards (run eupe cache build again)"
            )
        for shard in done:
            folder = self.root / shard_name(shard)
            if problem := shard_problem(folder, manifest, shard, hashes=False):
                raise damaged_shard(problem, folder)
        self._arrays: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    def array(self, shard: int, name: str) -> np.ndarray:
        """A shard's file as a memory map, kept open (the `OPEN_ARRAYS` most recently used: each holds a
        file descriptor), its hash checked when it is opened (once per process while unchanged).

        Raises:
            ValueError: the file does not match its SHA-256 (one line naming it).
        """
        key = (shard, name)
        if key in self._arrays:
            self._arrays.move_to_end(key)
        else:
            folder = self.root / shard_name(shard)
            if problem := file_problem(folder / name, shard_records(folder)[name]):
                raise damaged_shard(problem, folder)
            self._arrays[key] = np.load(folder / name, mmap_mode="r")
            if len(self._arrays) > OPEN_ARRAYS:
                self._arrays.popitem(last=False)
        return self._arrays[key]

    def gather(self, name: str, ids: Tensor) -> np.ndarray:
        """Rows `ids` of the per-shard file `name`, concatenated over shards in the order of `ids`."""
        ids = ids.cpu().long()
        if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.count:
            raise IndexError(f"sample ids must lie in [0, {self.count}), got {ids.min()}..{ids.max()}")
        shards, rows = ids // self.manifest.shard_size, ids % self.manifest.shard_size
        first = self.array(0, name)
        out = np.empty((len(ids), *first.shape[1:]), dtype=first.dtype)
        for shard in shards.unique().tolist():
            mask = (shards == shard).numpy()
            out[mask] = self.array(shard, name)[rows.numpy()[mask]]
        return out

    def take(self, teacher: str, ids: Tensor, device: torch.device | str) -> Features:
        """Teacher `teacher`'s raw features of samples `ids`, as float32 on `device`."""
        if teacher not in self.dims:
            raise KeyError(f"teacher {teacher} is not in the store (it holds {', '.join(self.teachers)})")
        summary, patches = (
            torch.from_numpy(self.gather(f"{file_stem(teacher)}.{kind}.npy", ids)).to(device).float()
            for kind in KINDS
        )
        return Features(summary, patches)

    def valid(self, ids: Tensor) -> Tensor:
        """Whether each of samples `ids` decoded (bool)."""
        return torch.from_numpy(self.gather("valid.npy", ids))


@dataclass
class StoreTargets:
    """One teacher's stored raw features, standardised as they are taken by sample id (a target source)."""

    store: FeatureStore
    teacher: str
    standardizer: TeacherStandardizer

    def take(self, index: Tensor, device: torch.device | str) -> Features:
        with torch.no_grad():
            return self.standardizer(self.store.take(self.teacher, index, device))


def stage_store(config: RunConfig, stage: str, data: TrainingData) -> FeatureStore | None:
    """The feature store a stage reads its targets from: `data.store` for a stage the experts teach, else
    None. A one-line ValueError when the store was built from other data (another source, or files of it
    renamed, added, removed or resized since: `data`'s sample index is checked), teachers or sides."""
    if config.data.store is None or stage_named(stage).taught_by != EXPERTS:
        return None
    store = FeatureStore(config.data.store)
    wanted = [teacher_identity(spec, config.train.seed) for spec in config.teachers]
    held = [entry["identity"] for entry in store.manifest.teachers]
    if store.manifest.source != config.data.source:
        raise ValueError(
            f"feature store {store.root} holds {store.manifest.source}, not {config.data.source}"
        )
    if store.manifest.samples != sample_key(data.index):
        raise ValueError(f"feature store {store.root} does not match the files of {config.data.source} now "
                         "(renamed, added, removed or resized since it was built): build it again into a new "
                         "folder with eupe cache build")  # fmt: skip
    if held != wanted:
        raise ValueError(f"feature store {store.root} holds other teachers ({[t['name'] for t in held]}) "
                         f"than the config's ({[t['name'] for t in wanted]})")  # fmt: skip
    if config.stages[stage].teacher_sides != [store.side]:
        raise ValueError(f"stages.{stage} draws teacher sides {config.stages[stage].teacher_sides}, but the "
                         f"feature store {store.root} holds features at {store.side} px only")  # fmt: skip
    return store
