"""The format of a feature store on disk: its manifest, shard folders and file names, and the checks of a
shard against them.

A store holds, for the centred square view of each sample of a streamed corpus (side S, no flip), each
teacher's raw (unstandardised) summary [Ds] and patch grid average-pooled to grid x grid [Dp, grid, grid],
as float16. Layout: `store.json` (the manifest, written first) and one folder per `shard_size` consecutive
sample ids, `shard-000012/`, holding `<teacher>.summary.npy`, `<teacher>.patches.npy`, `valid.npy` (False
where the image failed to decode; its rows are zeros) and `checksums.json` (each file's integrity record,
distill.integrity). The manifest records what the sample ids stand for (`sample_key`: every sample's name
and size), so a store is refused once a file of its corpus is renamed, added, removed or resized.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.atomic import atomic_path
from distill.config import RunConfig
from distill.data.stream import FolderIndex, ShardIndex
from distill.integrity import file_problem, parsed_records
from distill.stage_teachers import StageTeachers

MANIFEST = "store.json"
CHECKSUMS = "checksums.json"  # in each shard: file name -> its size and SHA-256
DTYPE = np.float16
KINDS = ("summary", "patches")
READ_HEADER = (np.lib.format.read_array_header_1_0, np.lib.format.read_array_header_2_0)


def file_stem(teacher: str) -> str:
    """A teacher name as a file-name stem (`timm:x/y` -> `timm_x_y`)."""
    return re.sub(r"[^\w.-]", "_", teacher)


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


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
    """A shard's `checksums.json` (a one-line ValueError if missing, unreadable or not file records)."""
    try:
        records = json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / CHECKSUMS} is missing or unreadable ({type(error).__name__})") from None
    try:
        return parsed_records(records)
    except ValueError as error:
        raise ValueError(f"{folder / CHECKSUMS} is not a record of the shard's files: {error}") from None


def shard_problem(folder: Path, manifest: StoreManifest, shard: int, hashes: bool) -> str | None:
    """What is wrong with a shard: its checksums missing, a file missing, truncated or of another shape or
    dtype (from the headers and sizes), or with `hashes` a file unlike its SHA-256; None if intact."""
    try:
        records = shard_records(folder)
    except ValueError as error:
        return str(error)
    for name, (shape, dtype) in manifest.shapes(shard).items():
        path = folder / name
        if not header_fits(path, shape, dtype) or name not in records:
            return f"{path} is missing, truncated or damaged"
        problem = file_problem(path, records[name]) if hashes else None
        if problem is not None:
            return problem
    return None
