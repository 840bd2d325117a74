"""A full disk as one line naming the path, never a SIGBUS: memory maps get their blocks before they are
written, and writes that meet ENOSPC (or a quota) say where."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

FULL = (errno.ENOSPC, errno.EDQUOT)
SAFETENSORS_FULL = ("StorageFull", "os error 28", "QuotaExceeded", "os error 122")  # its I/O errors, as text


def disk_full(path: str | Path, needed: int | None = None) -> OSError:
    """The one-line error of a full disk met writing `path` (`needed`: the bytes it lacked room for)."""
    mib = 2**20
    free = "" if needed is None else f" ({needed / mib:.1f} MiB needed, {free_bytes(path) / mib:.1f} free)"
    return OSError(errno.ENOSPC, f"no space left on the device writing {path}{free}")


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_space(path: str | Path, needed: int) -> None:
    """Raise `disk_full` naming `path` when its file system has less than `needed` bytes free."""
    if free_bytes(path) < needed:
        raise disk_full(path, needed)


def is_full(error: BaseException) -> bool:
    """Whether an error is a full disk or quota (an OSError, or safetensors' writer's)."""
    if isinstance(error, OSError):
        return error.errno in FULL
    return isinstance(error, SafetensorError) and any(s in str(error) for s in SAFETENSORS_FULL)


@contextmanager
def naming_full_disk(path: str | Path) -> Iterator[None]:
    """Re-raise a full disk met in the block as one OSError naming `path`; other errors pass as they are."""
    try:
        yield
    except (OSError, SafetensorError) as error:
        if is_full(error):
            raise disk_full(path) from None
        raise


def allocated_memmap(path: Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy file mapped for writing, its blocks allocated first: a full disk is an OSError naming it
    now, not a SIGBUS when a page of a sparse file is first written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    allocate = getattr(os, "posix_fallocate", None)  # Linux and most Unixes
    if allocate is not None:
        with open(path, "r+b") as file, naming_full_disk(path):
            allocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
    return array
