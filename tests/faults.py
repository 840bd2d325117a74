"""Fault injection the tests share: a kill at every operation of a checkpoint save (`KillPoints`), a kill at
named points of a stage's start (`kill_at`, in process or, through `python tests/faults.py`, in a real
process under torchrun), ENOSPC at every write (`DiskFull`), and real kills of a launch with every rank it
started (`kill_launch`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from distill import checkpoint, stage_teachers, trainer
from distill.checkpoint import MANIFEST_FILE
from distill.targets import source as targets_source

STAGE_START = {  # a named point of a stage's start -> the function after whose return a kill hits
    "statistics": (stage_teachers, "save_standardizers"),  # the warm-up statistics are saved
    "cache": (targets_source, "cached_targets"),  # the feature cache of fixed views is complete
    "first step": (trainer, "step_generator"),  # the first step begins: everything before it is done
}


class Killed(BaseException):
    """A kill in process: nothing after the point runs (no `except Exception` stops it)."""


def kill_at(point: str, monkeypatch: pytest.MonkeyPatch, action: Callable[[], None] | None = None) -> None:
    """Kill the run when `point` of `STAGE_START` is first reached: raise `Killed`, or run `action`."""
    module, name = STAGE_START[point]
    original = getattr(module, name)

    def killed(*args, **kwargs):
        result = original(*args, **kwargs)
        (action or raise_killed)()
        return result

    monkeypatch.setattr(module, name, killed)


def raise_killed() -> None:
    raise Killed


class KillPoints:
    """Copies of a run folder at every instant a kill could hit a checkpoint save: before each file or
    folder operation, and after each file write with that file cut to half (killed while writing it).

    Each copy lies beside the run (sharing its feature cache) with the step a rerun must resume from: the
    save's own step once its manifest is complete, the step before until then.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.states = run_dir, []
        self.active, self.step, self.sealed = False, 0, False

    def snapshot(self, torn: str | Path | None = None) -> None:
        self.active = False
        copy = self.run_dir.with_name(f"kill{len(self.states)}")
        shutil.copytree(self.run_dir, copy)
        if torn is not None:
            cut = copy / Path(torn).relative_to(self.run_dir)
            cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
        self.states.append((copy, self.step if self.sealed else self.step - 1))
        self.active = True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def before(original):
            def operation(*args, **kwargs):
                if self.active:
                    self.snapshot()
                return original(*args, **kwargs)

            return operation

        for name in ("replace", "rename", "unlink", "rmdir", "mkdir"):
            monkeypatch.setattr(os, name, before(getattr(os, name)))

        def save_file(tensors, filename, metadata=None, original=checkpoint.save_file):
            operation = before(original)(tensors, filename, metadata=metadata)
            if self.active:
                self.snapshot(torn=filename)
            return operation

        def write_text(path, data, *args, original=Path.write_text, **kwargs):
            written = before(original)(path, data, *args, **kwargs)
            if self.active and path.name == MANIFEST_FILE:
                self.snapshot(torn=path)
                self.sealed = True
            return written

        def save_stage_checkpoint(
            folder, model, optimizer, meta, *rest, original=trainer.save_stage_checkpoint
        ):
            self.active, self.step, self.sealed = True, meta["step"], False
            try:
                return original(folder, model, optimizer, meta, *rest)
            finally:
                self.active = False

        monkeypatch.setattr(checkpoint, "save_file", save_file)
        monkeypatch.setattr(Path, "write_text", write_text)
        monkeypatch.setattr(trainer, "save_stage_checkpoint", save_stage_checkpoint)


def kill_launch(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL a launch started with `start_new_session=True` and every process under it: the process group
    of each (torchrun starts each rank in a session of its own, DataLoader workers share their rank's
    group). Waits until none is left; an AssertionError lists any that is."""
    launcher = psutil.Process(process.pid)
    processes = [launcher, *launcher.children(recursive=True)]
    groups = set()
    for member in processes:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(member.pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait(timeout)
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    assert not alive, f"processes left running after the kill: {[p.pid for p in alive]}"


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until `path` exists; an AssertionError with the launch's error output if it ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stderr = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"{path} never appeared (rc {process.poll()}): {stderr[-3000:]}")
        time.sleep(0.01)


class DiskFull:
    """ENOSPC injected at the writes of a run: every write (file writes and appends, the safetensors saves of
    checkpoints and statistics, memory map allocations, free-space checks) is counted and recorded by kind in
    `writes`; from write
    number `at` on (1-based; 0: never) each fails as a full disk makes it fail: an OSError without a path, or
    safetensors' own error."""

    def __init__(self, at: int = 0) -> None:
        self.at, self.writes = at, []

    def full(self, kind: str) -> bool:
        self.writes.append(kind)
        return 0 < self.at <= len(self.writes)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from safetensors import SafetensorError

        from distill import disk, standardize

        def failing(kind: str, original: Callable, error: Callable[[], Exception]) -> Callable:
            def write(*args, **kwargs):
                if self.full(kind):
                    raise error()
                return original(*args, **kwargs)

            return write

        def enospc() -> OSError:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def safetensors_full() -> SafetensorError:
            return SafetensorError("I/O error: No space left on device (os error 28)")

        for module, kind in ((checkpoint, "checkpoint"), (standardize, "statistics")):
            monkeypatch.setattr(module, "save_file", failing(kind, module.save_file, safetensors_full))
        monkeypatch.setattr(Path, "write_text", failing("write_text", Path.write_text, enospc))
        monkeypatch.setattr(os, "posix_fallocate", failing("memory map", os.posix_fallocate, enospc))

        def open_(path, mode="r", *args, original=Path.open, **kwargs):
            file = original(path, mode, *args, **kwargs)
            if "a" in mode and self.full("append"):
                file.close()
                raise enospc()
            return file

        monkeypatch.setattr(Path, "open", open_)

        def disk_usage(path, original=shutil.disk_usage):
            usage = original(path)
            return usage._replace(free=0) if self.full("free space") else usage

        monkeypatch.setattr(disk.shutil, "disk_usage", disk_usage)


def main() -> None:
    """`python tests/faults.py POINT MARKER -- ARGS`: the `eupe` CLI with ARGS, stopped at `POINT` of a
    stage's start: the process writes `MARKER.<rank>` and waits there to be killed (`kill_launch`)."""
    point, marker, _, *argv = sys.argv[1:]

    def stop() -> None:
        Path(f"{marker}.{os.environ.get('RANK', '0')}").touch()
        while True:
            time.sleep(1)

    with pytest.MonkeyPatch.context() as monkeypatch:
        kill_at(point, monkeypatch, stop)
        from apps.cli import main as cli

        cli(argv)


if __name__ == "__main__":
    main()
