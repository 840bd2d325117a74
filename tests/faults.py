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

STAGE_START = {  # a named point of a stage's start -> the function after whose return a kill hits
    "statistics": (stage_teachers, "save_standardizers"),  # the warm-up statistics are saved
    "cache": (trainer, "cached_targets"),  # the feature cache of fixed views is complete
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
        time.sleep(0.05)


class DiskFull:
    """ENOSPC injected at every write of a run: `install` makes write number `at` (counted over file
    writes, memory-map flushes and safetensors saves) and every later one fail as a full disk would."""

    def __init__(self, at: int) -> None:
        self.at, self.count = at, 0

    def check(self, path: object = "") -> None:
        self.count += 1
        if self.count >= self.at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import numpy as np
        import safetensors.torch

        def wrap(original, path_of):
            def write(*args, **kwargs):
                self.check(path_of(*args, **kwargs))
                return original(*args, **kwargs)

            return write

        monkeypatch.setattr(Path, "write_text", wrap(Path.write_text, lambda path, *a, **k: path))
        monkeypatch.setattr(Path, "write_bytes", wrap(Path.write_bytes, lambda path, *a, **k: path))
        monkeypatch.setattr(np.memmap, "flush", wrap(np.memmap.flush, lambda array: array.filename))
        for module in (safetensors.torch, checkpoint):
            monkeypatch.setattr(module, "save_file", wrap(module.save_file, lambda t, path, *a, **k: path))


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
