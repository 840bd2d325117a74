"""Atomic writes of a file or folder: readers see the old one or the complete new one, never a partial one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a free temporary path beside `path`; the block writes a file or makes a folder there, which
    then replaces `path`.

    A file replaces `path` in one `os.replace`. A folder cannot be renamed over a non-empty one, so the
    old folder is first renamed aside, then the new one into place, then the old one deleted: between
    the two renames `path` is briefly absent, but never partial. On an exception nothing is replaced
    and the temporary path is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside = path.with_name(f".{path.name}.{os.getpid()}.old")
    _remove(tmp)  # left by a killed process that had the same id
    try:
        yield tmp
        if tmp.is_dir() and path.exists():
            _remove(aside)
            os.replace(path, aside)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(aside, path)
                raise
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)
        _remove(aside)
