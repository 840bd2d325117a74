"""Atomic writes of a file or folder: readers see the old one or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.disk import naming_full_disk

TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?:tmp|old)")  # `atomic_path`'s names, with their pid
_swept: set[Path] = set()  # folders this process has already removed orphans from


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temporary files and folders `atomic_path` left in `folder` for processes that no longer run
    (killed mid-write); those of running processes, this one included, are kept. Returns what was deleted."""
    if not folder.is_dir():
        return []
    orphans = [
        path
        for path in folder.iterdir()
        if (match := TEMPORARY.fullmatch(path.name))
        and int(match["pid"]) != os.getpid()
        and not pid_alive(int(match["pid"]))
    ]
    for path in orphans:
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
            _remove(path)
    return orphans


def _umask() -> int:
    """The process's file-creation mask (read from /proc where it can be, without setting it)."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
        return int(line.split()[1], 8)
    except (OSError, StopIteration):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _usual_modes(path: Path) -> None:
    """Give a written file, or every file and folder of a written folder, the modes a plain `open` would
    (0644 and 0755 under the usual umask): writers that go through `tempfile` (safetensors) leave 0600."""
    mask = _umask()
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    for folder, folders, files in os.walk(path) if path.is_dir() else ():
        for name in folders:
            os.chmod(Path(folder) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(folder) / name, 0o666 & ~mask)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a free temporary path beside `path`; the block writes a file or makes a folder there, which
    then replaces `path`.

    A file replaces `path` in one `os.replace`. A folder cannot be renamed over a non-empty one, so the
    old folder is first renamed aside, then the new one into place, then the old one deleted: between
    the two renames `path` is briefly absent, but never partial. On an exception nothing is replaced
    and the temporary path is removed. What is written gets the modes of a plain `open` (see `_usual_modes`).
    The first write into a folder in a process also removes the orphans killed writers left there
    (`remove_orphans`): feature-cache entries, store shards, ... A full disk met in the block or the
    renames is one OSError naming `path` (`distill.disk.naming_full_disk`).
    """
    path = Path(path)
    with naming_full_disk(path):
        if path.parent.absolute() not in _swept:
            remove_orphans(path.parent)
            _swept.add(path.parent.absolute())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        aside = path.with_name(f".{path.name}.{os.getpid()}.old")
        _remove(tmp)  # left by a killed process that had the same id
        try:
            yield tmp
            _usual_modes(tmp)
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
