"""A run folder: every path in it, declared once.

```
RUN/config.yaml                          the run's config (`save_run_config`)
RUN/.lock                                held by the process training into the run (`RunDir.locked`)
RUN/<stage>/checkpoint/model.safetensors the stage's weights (and train_state, manifest.json)
RUN/<stage>/checkpoint.previous/         the checkpoint before (see distill.checkpoint)
RUN/<stage>/standardizers.safetensors    its teachers' frozen statistics
RUN/<stage>/metrics.jsonl                its logged steps
RUN/<stage>/tensorboard/                 the same, for TensorBoard
RUN/<stage>/snapshots/                   features on a fixed probe set during training (distill.snapshots)
RUN/eval/                                `eupe eval`'s default output
RUN/../.feature_cache/                   teacher targets, shared by the runs of one folder
```
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from distill.config import ConfigError, load_config

MODEL_FILE = "model.safetensors"  # a checkpoint's weights, loadable without this code
CONFIG_FILE = "config.yaml"
CHECKPOINT_FOLDER = "checkpoint"
STANDARDIZERS_FILE = "standardizers.safetensors"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_FOLDER = "tensorboard"
SNAPSHOTS_FOLDER = "snapshots"
LOCK_FILE = ".lock"


class RunInUse(ValueError):
    """Another live process holds the run folder's lock."""


class RunDir:
    """The paths of one run folder (nothing is created or read until asked)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def feature_cache(self) -> Path:
        """Shared by the runs of one parent folder (the views' fingerprint keys each entry)."""
        return self.root.parent / ".feature_cache"

    def stage(self, name: str) -> Path:
        return self.root / name

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run folder's lock for the block (the folder is made if missing).

        The lock is an exclusive `flock` on `RUN/.lock`, which holds the owner's process id; the OS drops it
        when the owner ends, however it ends, so the lock of a killed run is taken over.

        Raises:
            RunInUse: another process holds it (one line naming its process id).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunInUse(f"{self.root} is in use by process {holder} (a run into the same --out): wait "
                               "for it to end or use another --out") from None  # fmt: skip
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def checkpoint(self, stage: str) -> Path:
        return self.root / stage / CHECKPOINT_FOLDER

    def has_checkpoint(self, stage: str) -> bool:
        """Whether the stage has saved weights."""
        return (self.checkpoint(stage) / MODEL_FILE).is_file()

    def standardizers(self, stage: str) -> Path:
        return self.root / stage / STANDARDIZERS_FILE

    def metrics(self, stage: str) -> Path:
        return self.root / stage / METRICS_FILE

    def snapshots(self, stage: str) -> Path:
        return self.root / stage / SNAPSHOTS_FOLDER

    def trained_side(self, stage: str) -> int | None:
        """The largest input side `stage` trained at (its `resolutions` in the run's config), or None when the
        run has no readable config naming that stage."""
        try:
            stages = load_config(self.config).stages
        except (ConfigError, OSError):
            return None
        return max(stages[stage].resolutions) if stage in stages else None


def checkpoint_folder(path: str | Path) -> Path | None:
    """The checkpoint folder `path` is (or, for a run stage folder, holds); None if neither."""
    path = Path(path)
    for folder in (path, path / CHECKPOINT_FOLDER):
        if (folder / MODEL_FILE).is_file():
            return folder
    return None


def existing_checkpoint(path: str | Path) -> Path:
    """`checkpoint_folder(path)`, or a one-line FileNotFoundError naming the path and the file it lacks."""
    folder = checkpoint_folder(path)
    if folder is None:
        raise FileNotFoundError(
            f"no distilled checkpoint at {path} (no {MODEL_FILE} in it or in its {CHECKPOINT_FOLDER}/)"
        )
    return folder


def names_a_path(spec: str) -> bool:
    """Whether a teacher or encoder spec names a file-system path (it has a path separator or exists) rather
    than an expert, a `timm:` model or an alias."""
    return not spec.startswith("timm:") and ("/" in spec or os.sep in spec or Path(spec).exists())


def stage_of_checkpoint(folder: Path) -> tuple[RunDir, str]:
    """The run folder and stage name of a checkpoint folder (`RUN/<stage>/checkpoint`)."""
    stage_folder = folder.parent
    return RunDir(stage_folder.parent), stage_folder.name


def trained_side(path: str | Path) -> int | None:
    """The largest input side the stage of a checkpoint (or run stage folder) trained at; None when `path` is
    not one, or its run's config does not say (see `RunDir.trained_side`)."""
    folder = checkpoint_folder(path)
    if folder is None:
        return None
    run, stage = stage_of_checkpoint(folder)
    return run.trained_side(stage)


def trained_resolution(paths: Sequence[str | Path], default: int) -> int:
    """The side the last of `paths` that is a run's checkpoint trained at (`trained_side`), else `default`:
    where a distilled encoder opens unless the user picks another side."""
    return next(filter(None, map(trained_side, reversed(paths))), default)
