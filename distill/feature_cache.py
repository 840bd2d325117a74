"""On-disk cache of standardised teacher features for a fixed view set, in half precision.

One entry per (teacher, teacher input resolution, view set, standardisation): a folder holding
`summary.npy` [N, Ds] and `patches.npy` [N, Dp, h, w] as float16, read through memory maps, and a
`key.json` saying what it was computed from and each array file's size and SHA-256. An entry whose key
differs from the requested one is never read: any change of teacher, resolution, data or statistics gives a
new key, hence a new entry. Entries are written to a temporary folder and renamed into place, so a killed
run, or a full disk (one line naming the entry: the arrays' blocks are allocated before they are written),
leaves none half-made; an entry damaged after (a file truncated, zeroed or missing) fails its sizes or hashes
on load, is named in a warning, deleted and rebuilt. A file is hashed once per process (and again
only if its size or modification time changes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from distill.atomic import atomic_path
from distill.checkpoint import file_digest
from distill.disk import allocated_memmap
from distill.features import Features

ARRAYS = ("summary.npy", "patches.npy")


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-able parts and tensors."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def file_record(path: Path) -> dict:
    """What `file_problem` checks a file against later: its size in bytes and its SHA-256."""
    return {"bytes": path.stat().st_size, "sha256": file_digest(path)}


def file_problem(path: Path, record: dict) -> str | None:
    """What is wrong with a file against its `file_record` (missing, another size, another hash), or None."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != record.get("bytes"):
        return f"{path} has {size} bytes, not {record.get('bytes')}"
    if file_digest(path) != record.get("sha256"):
        return f"{path} does not match its SHA-256"
    return None


@dataclass
class CachedFeatures:
    """Float16 features of every view: summary [N, Ds], patches [N, Dp, h, w].

    Memory-mapped numpy arrays as loaded; `to(device)` moves them into (GPU) memory as tensors.
    """

    summary: np.ndarray | Tensor
    patches: np.ndarray | Tensor

    @property
    def nbytes(self) -> int:
        return self.summary.nbytes + self.patches.nbytes

    def to(self, device: torch.device) -> CachedFeatures:
        """A copy held as tensors on `device`."""
        return CachedFeatures(
            *(torch.as_tensor(np.asarray(a)).to(device) for a in (self.summary, self.patches))
        )

    def take(self, index: Tensor, device: torch.device) -> Features:
        """Rows `index` as float32 tensors on `device`."""
        if isinstance(self.summary, Tensor):
            index = index.to(self.summary.device)
            return Features(self.summary[index].to(device).float(), self.patches[index].to(device).float())
        rows = index.numpy()
        return Features(
            summary=torch.from_numpy(self.summary[rows]).to(device).float(),
            patches=torch.from_numpy(self.patches[rows]).to(device).float(),
        )


class FeatureCache:
    """Standardised teacher features of a fixed view set, computed once and memory-mapped after.

    Args:
        root: cache folder (entries are subfolders named by key).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> CachedFeatures | None:
        """Memory-mapped features of a complete, intact entry; None if there is none. A damaged entry (an
        array file missing, truncated or altered, or an unreadable key.json) is named in a warning and
        deleted, so that `get_or_build` rebuilds it."""
        folder = self.entry(key)
        if not (folder / "key.json").is_file():
            return None
        try:
            records = json.loads((folder / "key.json").read_text())["files"]
            problem = next(filter(None, (file_problem(folder / n, records[n]) for n in ARRAYS)), None)
            if problem is None:
                return CachedFeatures(*(np.load(folder / name, mmap_mode="r") for name in ARRAYS))
        except (OSError, ValueError, KeyError, TypeError) as error:
            problem = f"{folder / 'key.json'} is unreadable or has no checksums ({type(error).__name__})"
        message = f"damaged feature cache entry: {problem}; the entry is deleted and will be rebuilt"
        warnings.warn(message, stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def build(
        self,
        key: str,
        description: dict,
        count: int,
        compute: Callable[[slice], Features],
        chunk: int = 64,
        label: str = "teacher features",
    ) -> CachedFeatures:
        """Compute features for views 0..count-1 in chunks, write the entry atomically, and load it.

        Args:
            key: the entry's key (see `fingerprint`).
            description: what the key was made from, saved as key.json.
            count: number of views.
            compute: maps a slice of view indices to standardised teacher features.
            chunk: views per `compute` call.
            label: what the progress bar calls the entry.
        """
        with atomic_path(self.entry(key)) as tmp:
            tmp.mkdir(parents=True)
            first = compute(slice(0, min(chunk, count)))
            arrays = {
                name: allocated_memmap(tmp / f"{name}.npy", np.float16, (count, *value.shape[1:]))
                for name, value in (("summary", first.summary), ("patches", first.patches))
            }
            for start in tqdm(range(0, count, chunk), desc=f"feature cache: {label}", leave=False):
                out = first if start == 0 else compute(slice(start, min(start + chunk, count)))
                stop = start + out.summary.shape[0]
                arrays["summary"][start:stop] = out.summary.float().cpu().numpy()
                arrays["patches"][start:stop] = out.patches.float().cpu().numpy()
            for array in arrays.values():
                array.flush()
            del arrays
            files = {name: file_record(tmp / name) for name in ARRAYS}
            meta = {"key": key, **description, "files": files}
            (tmp / "key.json").write_text(json.dumps(meta, indent=1, default=str))
        loaded = self.load(key)
        assert loaded is not None
        return loaded

    def get_or_build(
        self,
        key: str,
        description: dict,
        count: int,
        compute: Callable[[slice], Features],
        label: str = "teacher features",
    ) -> CachedFeatures:
        """The entry for `key`, computing it first if missing."""
        return self.load(key) or self.build(key, description, count, compute, label=label)
