"""Integrity records of files: each file's size in bytes and SHA-256 (16 hex digits), written when the file is
complete and checked before it is read.

The one owner of the record `{"bytes": int, "sha256": str}` that checkpoints (`manifest.json`), feature cache
entries (`key.json`) and feature store shards (`checksums.json`) keep for their files. A file is hashed once
per process while its size and modification time stay the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_digests: dict[tuple[Path, int, int], str] = {}  # (resolved path, size, mtime_ns) -> digest


def _stat_key(path: Path) -> tuple[Path, int, int]:
    path = path.resolve()
    stat = path.stat()
    return path, stat.st_size, stat.st_mtime_ns


def _hash(path: Path) -> str:
    """The SHA-256 of a file's content, 16 hex digits, read from the disk now."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's content, 16 hex digits (computed once per size and modification time)."""
    key = _stat_key(Path(path))
    if key not in _digests:
        _digests[key] = _hash(key[0])
    return _digests[key]


def file_record(path: Path) -> dict:
    """A complete file's record: its size in bytes and its SHA-256, hashed from the disk now (never an older
    digest of a file written again at the same path, size and time)."""
    key = _stat_key(path)
    _digests[key] = _hash(key[0])
    return {"bytes": key[1], "sha256": _digests[key]}


def file_records(folder: Path, names: list[str]) -> dict[str, dict]:
    """The records of files `names` (paths relative to `folder`)."""
    return {name: file_record(folder / name) for name in names}


def parsed_records(records: object) -> dict[str, dict]:
    """Records read back from JSON, checked to be file name -> {"bytes": int, "sha256": str}.

    Raises:
        ValueError: anything else (one line saying what).
    """
    if not isinstance(records, dict):
        raise ValueError(f"file records must be a mapping, not {type(records).__name__}")
    for name, record in records.items():
        if not (
            isinstance(record, dict)
            and isinstance(record.get("bytes"), int)
            and isinstance(record.get("sha256"), str)
        ):
            raise ValueError(f"the record of {name} is not a size and a SHA-256: {record!r}")
    return records


def file_problem(path: Path, record: dict) -> str | None:
    """What is wrong with a file against its `file_record` (missing, another size, another content), or
    None."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{path} is damaged: {size} bytes, {record['bytes']} when saved"
    if file_digest(path) != record["sha256"]:
        return f"{path} is damaged: its content differs from when it was saved"
    return None


def records_problem(folder: Path, records: dict[str, dict]) -> str | None:
    """The first file of `records` (relative to `folder`) that is missing or damaged, as `file_problem`
    says it; None when all are intact."""
    return next(filter(None, (file_problem(folder / name, r) for name, r in records.items())), None)
