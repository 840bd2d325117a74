"""A full disk at any write of a run is one OSError naming the path (never a SIGBUS from a memory map of a
sparse file), leaves no temporary file or folder, and a rerun with room finishes the run."""

from __future__ import annotations

import errno

import pytest
from faults import DiskFull
from test_faults_checkpoint import TINY

from distill.config import load_config
from distill.pipeline import run_stages

LEFTOVERS = ("*.tmp", "*.old", ".checkpoint.pending")  # what an interrupted atomic write or save leaves


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("disk") / "tiny.yaml"
    path.write_text(TINY)
    return load_config(path)


@pytest.mark.slow  # 8 tiny runs of 3 steps
def test_a_full_disk_at_each_kind_of_write_is_one_line_naming_the_path(config, tmp_path):
    counting = DiskFull()
    with pytest.MonkeyPatch.context() as monkeypatch:
        counting.install(monkeypatch)
        run_stages(config, tmp_path / "whole" / "run", ["proxy"])
    firsts = {kind: counting.writes.index(kind) + 1 for kind in dict.fromkeys(counting.writes)}
    kinds = {"write_text", "memory map", "statistics", "checkpoint", "append", "free space"}
    assert set(firsts) == kinds, firsts
    for kind, at in firsts.items():  # the first write of each kind: config, cache, statistics, metrics, ...
        root = tmp_path / kind.replace(" ", "_")
        with pytest.MonkeyPatch.context() as monkeypatch:
            DiskFull(at).install(monkeypatch)
            with pytest.raises(OSError) as error:
                run_stages(config, root / "run", ["proxy"])
        assert error.value.errno == errno.ENOSPC, kind
        assert str(error.value).startswith(f"[Errno 28] no space left on the device writing {root}"), kind
        assert [p for pattern in LEFTOVERS for p in root.rglob(pattern)] == [], kind
    result = run_stages(config, root / "run", ["proxy"])["proxy"]  # room again: the run finishes
    assert result.steps == config.stages["proxy"].steps
