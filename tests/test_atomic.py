"""`atomic_path`: a file or a folder replaces the old one whole, or (on an exception) not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill import atomic
from distill.atomic import atomic_path


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_file_replaced_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and siblings(path) == ["scores.json"]
    with atomic_path(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "old"  # readers see the old file until the block ends
    assert path.read_text() == "new" and siblings(path) == ["scores.json"]


def test_folder_replaces_the_old_folder_whole(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_text("old")
    (folder / "train_state.safetensors").write_text("old")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_text("new")
        assert (folder / "model.safetensors").read_text() == "old"
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]  # no file of the old one left
    assert (folder / "model.safetensors").read_text() == "new"
    assert siblings(folder) == ["checkpoint"]  # neither the temporary folder nor the old one remains


def test_folder_left_intact_by_an_exception(tmp_path):
    folder = tmp_path / "entry"
    folder.mkdir()
    (folder / "key.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "key.json").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (folder / "key.json").read_text() == "old" and siblings(folder) == ["entry"]


def test_new_folder_and_stale_temporary(tmp_path):
    folder = tmp_path / "entry"
    stale = tmp_path / f".entry.{os.getpid()}.tmp"  # what a killed process with this id left behind
    stale.mkdir()
    (stale / "junk").write_text("x")
    with atomic_path(folder) as tmp:
        assert not tmp.exists()
        tmp.mkdir()
        (tmp / "key.json").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["key.json"] and siblings(folder) == ["entry"]


def test_rename_failure_restores_the_old_folder(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_text("old")
    real_replace = os.replace

    def replace(source: Path, target: Path) -> None:
        if Path(source).name.endswith(".tmp"):
            raise OSError("disk gone")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"), atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_text("new")
    assert (folder / "model.safetensors").read_text() == "old" and siblings(folder) == ["checkpoint"]


def test_the_first_write_into_a_folder_removes_what_killed_writers_left(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_swept", set(), raising=False)  # folders swept so far
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead, alive = int(gone.stdout), os.getppid()  # a process that has exited, and one that runs
    (tmp_path / f".entry-a.{dead}.tmp").mkdir()  # a cache entry or store shard cut short by a kill
    (tmp_path / f".entry-a.{dead}.tmp" / "patches.npy").write_bytes(b"partial")
    (tmp_path / f".shard_00001.safetensors.{dead}.tmp").write_bytes(b"partial")
    (tmp_path / f".checkpoint.{dead}.old").mkdir()
    kept = [f".entry-b.{alive}.tmp", f".entry-c.{os.getpid()}.tmp", ".notes.tmp", "entry-d"]
    for name in kept:
        (tmp_path / name).mkdir()  # another live writer's, ours, and names atomic_path does not make
    with atomic_path(tmp_path / "entry-e") as tmp:
        tmp.mkdir()
    assert siblings(tmp_path / "x") == sorted([*kept, "entry-e"])


def test_written_files_get_the_modes_of_a_plain_open(tmp_path):
    """safetensors writes through a private temporary file (mode 0600): an export must be world-readable."""
    import torch
    from safetensors.torch import save_file

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "weights.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, tmp)
        with atomic_path(tmp_path / "folder") as tmp:
            (tmp / "sub").mkdir(parents=True)
            save_file({"w": torch.zeros(2)}, tmp / "sub" / "model.safetensors")
    finally:
        os.umask(mask)
    assert (tmp_path / "weights.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder" / "sub" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder" / "sub").stat().st_mode & 0o777 == 0o755
