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
from distill.data.images import resize
from distill.data.training_data import FixedViews
from distill.disk import allocated_memmap
from distill.features import Features
from distill.fingerprint import fingerprint
from distill.integrity import file_records, parsed_records, records_problem
from distill.stage_teachers import StageTeachers

ARRAYS = ("summary.npy", "patches.npy")


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
            records = parsed_records(json.loads((folder / "key.json").read_text())["files"])
            problem = records_problem(folder, {name: records[name] for name in ARRAYS})
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
            files = file_records(tmp, list(ARRAYS))
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


def cached_targets(
    teachers: StageTeachers, data: FixedViews, sides: list[int], cache_root: Path
) -> dict[tuple[str, int], CachedFeatures]:
    """Standardised teacher features of every view at every teacher side, from (or into) the cache."""
    cache = FeatureCache(cache_root)
    views, data_key = data.views, data.key
    out = {}
    for name in teachers.teachers:
        for side in sides:
            key = fingerprint(
                teachers.identity[name], side, data_key, teachers.standardizers[name].state_dict()
            )

            def compute(index: slice, name: str = name, side: int = side) -> Features:
                images = resize(views[index].to(teachers.device).float().div(255), side)
                return teachers.targets(name, images)

            description = {"teacher": teachers.identity[name], "side": side, "data": data_key}
            out[(name, side)] = cache.get_or_build(
                key, description, views.shape[0], compute, f"{name} at {side} px"
            )
    return out
