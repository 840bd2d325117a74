"""Checkpoints in safetensors: model weights, optimizer state and metadata, saved so that a kill at any
instant leaves an intact checkpoint that `recover` finds.

A checkpoint is a folder with `model.safetensors` (weights; loadable without this code; metadata in its
header: step, teachers, model config), `train_state.safetensors` (optimizer moments keyed
`<param index>.<name>`; param groups in its header) or, for a sharded (FSDP2) run, a `train_state/` folder
written by torch.distributed.checkpoint (see distill.stage_checkpoint), and `manifest.json`, written last:
the step and every other file's size and digest, checked on load.

Beside `NAME/` lie at most `.NAME.pending/` (a save in progress: filled, sealed with its manifest, then
swapped in) and `NAME.previous/` (the checkpoint before, kept until the next one is in place, so a damaged
`NAME/` falls back to it).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.disk import check_space, naming_full_disk
from distill.integrity import file_records, parsed_records, records_problem
from distill.run_dir import MODEL_FILE

TRAIN_STATE_FILE = "train_state.safetensors"
SHARDED_STATE_FOLDER = "train_state"  # torch.distributed.checkpoint: sharded weights and optimizer moments
MANIFEST_FILE = "manifest.json"


class DamagedCheckpoint(ValueError):
    """A checkpoint file is missing, cut short or altered; `step` is the checkpoint's step when known."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def pending_folder(folder: Path) -> Path:
    """Where a save into `folder` is written before it is swapped in."""
    return folder.with_name(f".{folder.name}.pending")


def previous_folder(folder: Path) -> Path:
    """Where the checkpoint before `folder`'s current one is kept."""
    return folder.with_name(f"{folder.name}.previous")


def contiguous_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def all_finite(state: dict[str, Tensor]) -> bool:
    """Whether no floating-point tensor of `state` holds a nan or an infinity."""
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """An optimizer's per-parameter state as flat tensors, and its param groups as JSON-able dicts."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"{index}.{name}"] = value if isinstance(value, Tensor) else torch.tensor(value)
    return tensors, state["param_groups"]


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list[dict]
) -> None:
    """Inverse of `optimizer_tensors`."""
    per_param: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def write_checkpoint_files(
    folder: Path,
    model_state: dict[str, Tensor],
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> None:
    """Write the weights (and the optimizer state, when given) into an existing folder, after checking that
    its disk has room for them."""
    tensors, groups = optimizer_tensors(optimizer) if optimizer is not None else ({}, [])
    check_space(folder, sum(t.numel() * t.element_size() for t in [*model_state.values(), *tensors.values()]))
    save_file(contiguous_state(model_state), str(folder / MODEL_FILE), metadata={"meta": json.dumps(meta)})
    if optimizer is not None:
        header = {"meta": json.dumps(meta), "param_groups": json.dumps(groups)}
        save_file(contiguous_state(tensors), str(folder / TRAIN_STATE_FILE), metadata=header)


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a folder tree or a file, if there is one."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def seal(folder: Path) -> None:
    """Flush a filled checkpoint folder to disk and write its manifest last: the step and each file's size and
    digest, as read back from the disk."""
    paths = sorted(folder.rglob("*"))
    for path in paths:
        _fsync(path)
    files = file_records(folder, [path.relative_to(folder).as_posix() for path in paths if path.is_file()])
    manifest = folder / MANIFEST_FILE
    manifest.write_text(json.dumps({"step": read_meta(folder)["step"], "files": files}, indent=1))
    _fsync(manifest)
    _fsync(folder)


def checkpoint_step(folder: Path) -> int:
    """The step of an intact checkpoint folder; a one-line DamagedCheckpoint naming the first bad file
    otherwise. A folder without a manifest (saved before manifests existed) is trusted as it was then.

    The one check of a checkpoint against its manifest: every reader (`load_model_state`, `load_train_state`,
    hence training, teachers, `eupe eval` and `eupe export`) goes through it. Each file is hashed once per
    process while its size and modification time stay the same.
    """
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return read_meta(folder)["step"]
    try:
        record = json.loads(manifest.read_text())
        step = int(record["step"])
        files = parsed_records(record["files"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedCheckpoint(f"{manifest} is damaged ({type(error).__name__}: {error})") from None
    if problem := records_problem(folder, files):
        raise DamagedCheckpoint(problem, step)
    return step


def _promote(folder: Path) -> None:
    """Swap the sealed pending save in as `folder`; the current checkpoint becomes the previous one.

    Between any two of these operations an intact checkpoint remains that `recover` puts back in place.
    """
    pending, previous = pending_folder(folder), previous_folder(folder)
    if folder.exists():
        _remove(previous)
        os.replace(folder, previous)
    os.replace(pending, folder)
    _fsync(folder.parent)


@contextmanager
def saving(folder: Path) -> Iterator[Path]:
    """A fresh pending folder for the block to fill; sealed and swapped in as `folder` when the block ends.

    On an exception it is removed (a full disk: one OSError naming `folder`); one left by a kill is cleared
    by the next save or `recover`.
    """
    pending = pending_folder(folder)
    with naming_full_disk(folder):
        _remove(pending)
        pending.mkdir(parents=True)
        try:
            yield pending
            seal(pending)
        except BaseException:
            _remove(pending)
            raise
        _promote(folder)


def save_checkpoint(
    folder: str | Path,
    model_state: dict[str, Tensor],
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> Path:
    """Save a checkpoint (its `meta` must hold the `step`) as `folder`, keeping the one before as previous."""
    folder = Path(folder)
    with saving(folder) as pending:
        write_checkpoint_files(pending, model_state, optimizer, meta)
    return folder


def _check(folder: Path) -> tuple[int | None, DamagedCheckpoint | None]:
    """(step, None) for an intact checkpoint, (None, the damage) for a damaged one, (None, None) for none."""
    if not folder.exists():
        return None, None
    try:
        return checkpoint_step(folder), None
    except (DamagedCheckpoint, FileNotFoundError) as error:
        damage = error if isinstance(error, DamagedCheckpoint) else DamagedCheckpoint(str(error))
        return None, damage


def recover(folder: Path, final_step: int) -> int | None:
    """Put the newest intact checkpoint that any interrupted save left back at `folder`; its step, or None
    when there is none (the stage starts over).

    A sealed pending save newer than `folder` is swapped in; a missing or damaged `folder` gives way to its
    previous checkpoint, with a one-line warning naming the damaged file, except for a finished stage (a
    damaged `folder` at `final_step` or later), which raises DamagedCheckpoint. Leftovers are deleted.
    """
    pending, previous = pending_folder(folder), previous_folder(folder)
    for stale in folder.parent.glob(f".{folder.name}.*"):  # discarded, or left by an older save
        if stale != pending:
            _remove(stale)
    step, damage = _check(folder)
    if damage is not None:
        if damage.step is not None and damage.step >= final_step:
            raise DamagedCheckpoint(f"{damage}; the stage had finished: remove {folder} to train its last "
                                    "steps again from the checkpoint before", damage.step)  # fmt: skip
        _remove(folder)
    if (pending / MANIFEST_FILE).is_file():
        pending_step = _check(pending)[0]
        if pending_step is not None and (step is None or pending_step > step):
            _promote(folder)
            step = pending_step
    _remove(pending)
    if step is None and previous.exists():
        step = _check(previous)[0]
        if step is None:
            _remove(previous)
        else:
            os.replace(previous, folder)
    if damage is not None:
        outcome = "starting over" if step is None else f"resuming from the checkpoint of step {step}"
        warnings.warn(f"{damage}; {outcome}", stacklevel=2)
    return step


def discard_from(folder: Path, step: int) -> int | None:
    """Drop the checkpoint at `folder` if it holds step `step` or a later one, putting the previous one back;
    the step of the checkpoint now at `folder` (None if none)."""
    if not folder.exists():
        return None
    current = read_meta(folder)["step"]
    if current < step:
        return current
    discarded = folder.with_name(f".{folder.name}.discarded")  # deleted by `recover` if a kill leaves it
    _remove(discarded)
    os.replace(folder, discarded)
    previous = previous_folder(folder)
    kept = None
    if previous.exists():
        os.replace(previous, folder)
        kept = read_meta(folder)["step"]
    _remove(discarded)
    return kept


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The metadata saved with a checkpoint."""
    path = Path(folder) / MODEL_FILE
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["meta"])
    except (SafetensorError, ValueError, KeyError, TypeError) as error:
        raise DamagedCheckpoint(f"{path} is damaged or holds no checkpoint metadata ({error})") from None


def load_model_state(folder: str | Path) -> dict[str, Tensor]:
    """A checkpoint's model weights, after its files are checked against its manifest."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {folder} (missing {MODEL_FILE})")
    checkpoint_step(path.parent)
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise DamagedCheckpoint(f"{path} is damaged ({error})") from None


def load_train_state(folder: str | Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from a checkpoint (checked against its manifest); returns the saved metadata."""
    path = Path(folder) / TRAIN_STATE_FILE
    checkpoint_step(path.parent)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except SafetensorError as error:
        raise DamagedCheckpoint(f"{path} is damaged ({error})") from None
    restore_optimizer(optimizer, tensors, json.loads(header["param_groups"]))
    return json.loads(header["meta"])


def load_into(model: nn.Module, folder: str | Path, strict: bool = True) -> None:
    """Load a checkpoint's weights into a model (one-line error on a mismatch)."""
    state = load_model_state(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint {folder} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
