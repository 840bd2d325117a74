"""The one integrity record of files (size + SHA-256) that checkpoints, feature cache entries and store shards
keep: written once, checked before reading; a changed file is named."""

from __future__ import annotations

import json
import os

import pytest

from distill.integrity import file_records, parsed_records, records_problem


def test_a_flipped_byte_is_detected_and_the_file_named(tmp_path):
    for name, size in (("a.bin", 300), ("b.bin", 5000)):
        (tmp_path / name).write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    records = parsed_records(json.loads(json.dumps(file_records(tmp_path, ["a.bin", "b.bin"]))))
    assert records["b.bin"]["bytes"] == 5000 and len(records["b.bin"]["sha256"]) == 16
    assert records_problem(tmp_path, records) is None
    path = tmp_path / "b.bin"
    data = bytearray(path.read_bytes())
    data[4321] ^= 0x01  # the same size: only the hash can tell
    path.write_bytes(bytes(data))
    later = path.stat().st_mtime_ns + 10**9  # a change after the record: the digest is read again
    os.utime(path, ns=(later, later))
    assert (
        records_problem(tmp_path, records) == f"{path} is damaged: its content differs from when it was saved"
    )
    path.write_bytes(bytes(data[:100]))
    assert records_problem(tmp_path, records) == f"{path} is damaged: 100 bytes, 5000 when saved"
    path.unlink()
    assert records_problem(tmp_path, records) == f"{path} is missing"


def test_records_on_disk_keep_their_keys_and_bad_ones_are_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert set(file_records(tmp_path, ["f"])["f"]) == {"bytes", "sha256"}  # the keys every manifest holds
    for bad in ([], {"f": {"bytes": "10", "sha256": "ab"}}, {"f": {"size": 10}}):
        with pytest.raises(ValueError):
            parsed_records(bad)
