"""An on-disk store of every teacher's raw features of every sample of a streamed corpus, read by sample id.

`build_store` writes, for the centred square view of each sample (side S, no flip), each teacher's raw
(unstandardised) summary [Ds] and patch grid average-pooled to grid x grid [Dp, grid, grid], as float16.
Layout: `store.json` (the manifest, written first) and one folder per `shard_size` consecutive sample ids,
`shard-000012/`, holding `<teacher>.summary.npy`, `<teacher>.patches.npy`, `valid.npy` (False where the
image failed to decode; its rows are zeros) and `checksums.json` (each file's size and SHA-256). Each shard
folder is written atomically, so a killed build leaves only complete shards, and a rerun skips them and
rebuilds any found damaged. `FeatureStore` reads the features by sample id through memory maps, checking
every shard's headers and sizes when opened and each file's hash on its first read in the process. The
manifest records what the sample ids stand for (`sample_key`: every sample's name and size), so a store is
refused once a file of its corpus is renamed, added, removed or resized.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.atomic import atomic_path
from distill.config import RunConfig, load_config
from distill.data.images import DECODE_ERRORS
from distill.data.stream import FolderIndex, ShardIndex, render_view, sample_index
from distill.data.training_data import TrainingData
from distill.device import pick_device
from distill.disk import allocated_memmap
from distill.feature_cache import file_problem, file_record
from distill.features import Features
from distill.stage_teachers import StageTeachers, configured_experts, teacher_identity
from distill.stages import EXPERTS, stage_named
from distill.standardize import TeacherStandardizer

MANIFEST = "store.json"
CHECKSUMS = "checksums.json"  # in each shard: file name -> its size and SHA-256
DTYPE = np.float16
KINDS = ("summary", "patches")
OPEN_ARRAYS = 256  # memory maps a FeatureStore keeps open
READ_HEADER = (np.lib.format.read_array_header_1_0, np.lib.format.read_array_header_2_0)


def projected_bytes(count: int, dims: dict[str, tuple[int, int]], grid: int) -> int:
    """Float16 bytes of every teacher's summaries [count, Ds] and pooled patches [count, Dp, grid, grid]."""
    per_sample = sum(ds + dp * grid * grid for ds, dp in dims.values())
    return count * per_sample * np.dtype(DTYPE).itemsize


def file_stem(teacher: str) -> str:
    """A teacher name as a file-name stem (`timm:x/y` -> `timm_x_y`)."""
    return re.sub(r"[^\w.-]", "_", teacher)


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


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


def sample_key(index: FolderIndex | ShardIndex) -> str:
    """What a store's sample ids stand for: a hash of every sample's name and size, in id order (a file
    renamed, added, removed or resized changes it)."""
    digest = hashlib.sha256()
    for i in range(len(index)):
        name = index.name(i)  # a folder's file path, or `shard.tar:key.ext`
        if isinstance(index, ShardIndex):
            size = int(index.sizes[i])
        else:
            try:
                size = os.stat(name).st_size
            except OSError:  # gone since the index was made: the key differs
                size = -1
        digest.update(f"{name}\0{size}\0".encode(errors="surrogateescape"))
    return digest.hexdigest()[:16]


def pooled(features: Features, grid: int) -> Features:
    """Features with the patch grid average-pooled to grid x grid."""
    return Features(features.summary, F.adaptive_avg_pool2d(features.patches, grid))


def check_manifest(out: Path, manifest: dict) -> None:
    """Raise a one-line ValueError if `out` holds a manifest other than `manifest` (the same one = resume)."""
    path = out / MANIFEST
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    for key in sorted(set(old) | set(manifest)):
        if old.get(key) != manifest.get(key):
            raise ValueError(
                f"{out} holds a store of another {key} ({old.get(key)!r}, this build: {manifest.get(key)!r}):"
                " use another --out or delete it"
            )


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


@dataclass
class StoreManifest:
    """What a store holds: source, sample count, view side, pooled grid, shard size, per teacher its name,
    identity and dims, and the `sample_key` of its corpus (as `store.json`; "" in stores written before it
    was recorded)."""

    source: str
    count: int
    side: int
    grid: int
    shard_size: int
    teachers: list[dict]
    dtype: str = "float16"
    samples: str = ""

    @classmethod
    def describe(
        cls,
        config: RunConfig,
        index: FolderIndex | ShardIndex,
        side: int,
        grid: int,
        shard_size: int,
        teachers: StageTeachers,
    ) -> StoreManifest:
        entries = [
            {"name": n, "identity": teachers.identity[n], "summary_dim": ds, "patch_dim": dp}
            for n, (ds, dp) in teachers.dims().items()
        ]
        source, samples = config.data.source, sample_key(index)
        return cls(source, len(index), side, grid, shard_size, entries, samples=samples)

    @classmethod
    def load(cls, out: Path) -> StoreManifest:
        """The manifest of the store in `out`; a one-line ValueError if missing or invalid."""
        try:
            return cls(**json.loads((out / MANIFEST).read_text()))
        except FileNotFoundError:
            raise ValueError(f"no feature store in {out} (no {MANIFEST}): run eupe cache build") from None
        except (ValueError, TypeError) as error:
            raise ValueError(f"{out / MANIFEST} is not a valid store manifest ({error})") from None

    def save(self, out: Path) -> None:
        """Write `store.json` atomically, after checking that `out` holds no store of something else."""
        check_manifest(out, self.__dict__)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / MANIFEST) as tmp:
            tmp.write_text(json.dumps(self.__dict__, indent=1))

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)

    def ids(self, shard: int) -> range:
        """The sample ids of a shard."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.count))

    def shapes(self, shard: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """File name -> (array shape, dtype) of a shard's files."""
        n = len(self.ids(shard))
        shapes = {"valid.npy": ((n,), np.dtype(bool))}
        dtype, cells = np.dtype(self.dtype), (self.grid, self.grid)
        for entry in self.teachers:
            stem = file_stem(entry["name"])
            shapes[f"{stem}.summary.npy"] = ((n, entry["summary_dim"]), dtype)
            shapes[f"{stem}.patches.npy"] = ((n, entry["patch_dim"], *cells), dtype)
        return shapes


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
    records = {name: file_record(folder / name) for name in manifest.shapes(shard)}
    (folder / CHECKSUMS).write_text(json.dumps(records, indent=1))
    return failed


def header_fits(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether a .npy file's header says `shape` and `dtype` and the file holds exactly that much data."""
    try:
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            found, _, found_dtype = READ_HEADER[version[0] > 1](file)
            expected = file.tell() + int(np.prod(shape)) * dtype.itemsize
        return found == shape and found_dtype == dtype and path.stat().st_size == expected
    except (OSError, ValueError):
        return False


def shard_records(folder: Path) -> dict[str, dict]:
    """A shard's `checksums.json` (a one-line ValueError if missing or unreadable)."""
    try:
        records = json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / CHECKSUMS} is missing or unreadable ({type(error).__name__})") from None
    if not isinstance(records, dict):
        raise ValueError(f"{folder / CHECKSUMS} is not a record of the shard's files")
    return records


def shard_problem(folder: Path, manifest: StoreManifest, shard: int, hashes: bool) -> str | None:
    """What is wrong with a shard: its checksums missing, a file missing, truncated or of another shape or
    dtype (from the headers and sizes), or with `hashes` a file unlike its SHA-256; None if intact."""
    try:
        records = shard_records(folder)
    except ValueError as error:
        return str(error)
    for name, (shape, dtype) in manifest.shapes(shard).items():
        path = folder / name
        if not header_fits(path, shape, dtype) or not isinstance(records.get(name), dict):
            return f"{path} is missing, truncated or damaged"
        problem = file_problem(path, records[name]) if hashes else None
        if problem is not None:
            return problem
    return None


def intact_shard(folder: Path, manifest: StoreManifest, shard: int, log: Callable[[str], None]) -> bool:
    """Whether a shard was written and is intact, hashes included; a damaged one is named and deleted."""
    if not folder.is_dir():
        return False
    problem = shard_problem(folder, manifest, shard, hashes=True)
    if problem is not None:
        log(f"{problem}: rebuilding {folder.name}")
        shutil.rmtree(folder)
    return problem is None


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

    def targets(self, teacher: str) -> StoreTargets:
        """One teacher's features with feature_cache.CachedFeatures' `take(index, device)`."""
        return StoreTargets(self, teacher)


@dataclass
class StoreTargets:
    """One teacher's stored raw features, taken by sample id like feature_cache.CachedFeatures."""

    store: FeatureStore
    teacher: str

    def take(self, index: Tensor, device: torch.device | str) -> Features:
        return self.store.take(self.teacher, index, device)


@dataclass
class StandardizedTargets:
    """Stored raw features of one teacher, standardised as they are taken (like cached targets)."""

    stored: StoreTargets
    standardizer: TeacherStandardizer

    def take(self, index: Tensor, device: torch.device | str) -> Features:
        with torch.no_grad():
            return self.standardizer(self.stored.take(index, device))


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


def cache_build_main(
    config_path: str | Path,
    out: str | Path,
    side: int,
    grid: int,
    budget_gib: float,
    overrides: list[str] | tuple[str, ...] = (),
    shard_size: int = 1024,
    batch_size: int = 64,
) -> None:
    """`eupe cache build`: the store of a config's teachers and data (device: `train.device`, workers:
    `data.workers`)."""
    config = load_config(config_path, overrides)
    device = pick_device(config.train.device)
    workers = config.data.workers
    build_store(config, Path(out), side, grid, budget_gib, shard_size, batch_size, workers, device)
    print(f"feature store complete: {out}")
