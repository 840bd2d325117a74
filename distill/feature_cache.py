"""On-disk cache of standardised teacher features for a fixed view set, in half precision.

One entry per (teacher, teacher input resolution, view set, standardisation): a folder holding
`summary.npy` [N, Ds] and `patches.npy` [N, Dp, h, w] as float16, read through memory maps, and a
`key.json` saying what it was computed from. An entry whose key differs from the requested one is
never read: any change of teacher, resolution, data or statistics gives a new key, hence a new entry.
Entries are written to a temporary folder and renamed into place, so a killed run leaves none half-made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from distill.atomic import atomic_path
from distill.features import Features


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-able parts and tensors."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


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
        """Memory-mapped features of a complete entry, or None if it does not exist."""
        folder = self.entry(key)
        if not (folder / "key.json").is_file():
            return None
        return CachedFeatures(
            np.load(folder / "summary.npy", mmap_mode="r"), np.load(folder / "patches.npy", mmap_mode="r")
        )

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
                name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.float16,
                                                shape=(count, *value.shape[1:]))
                for name, value in (("summary", first.summary), ("patches", first.patches))
            }  # fmt: skip
            for start in tqdm(range(0, count, chunk), desc=f"feature cache: {label}", leave=False):
                out = first if start == 0 else compute(slice(start, min(start + chunk, count)))
                stop = start + out.summary.shape[0]
                arrays["summary"][start:stop] = out.summary.float().cpu().numpy()
                arrays["patches"][start:stop] = out.patches.float().cpu().numpy()
            for array in arrays.values():
                array.flush()
            del arrays
            (tmp / "key.json").write_text(json.dumps({"key": key, **description}, indent=1, default=str))
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
