"""Checkpoints in safetensors: model weights, optimizer state and metadata, written atomically.

A checkpoint is a folder with `model.safetensors` (weights; loadable without this code), and
`train_state.safetensors` (optimizer moments keyed `<param index>.<name>`; metadata in its header:
step, optimizer param groups, scheduler state, anything else JSON-able), or, for a sharded (FSDP2) run,
a `train_state/` folder written by torch.distributed.checkpoint (see distill.stage_checkpoint).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.atomic import atomic_path
from distill.run_dir import MODEL_FILE

TRAIN_STATE_FILE = "train_state.safetensors"
SHARDED_STATE_FOLDER = "train_state"  # torch.distributed.checkpoint: sharded weights and optimizer moments


def contiguous_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


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
    """Write the weights (and the optimizer state, when given) into an existing folder."""
    save_file(contiguous_state(model_state), str(folder / MODEL_FILE), metadata={"meta": json.dumps(meta)})
    if optimizer is not None:
        tensors, groups = optimizer_tensors(optimizer)
        header = {"meta": json.dumps(meta), "param_groups": json.dumps(groups)}
        save_file(contiguous_state(tensors), str(folder / TRAIN_STATE_FILE), metadata=header)


def save_checkpoint(
    folder: str | Path,
    model_state: dict[str, Tensor],
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> Path:
    """Write a checkpoint folder atomically (see `atomic_path`)."""
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        write_checkpoint_files(tmp, model_state, optimizer, meta)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The metadata saved with a checkpoint."""
    with safe_open(str(Path(folder) / MODEL_FILE), "pt") as f:
        return json.loads(f.metadata()["meta"])


def load_model_state(folder: str | Path) -> dict[str, Tensor]:
    """A checkpoint's model weights."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {folder} (missing {MODEL_FILE})")
    return load_file(str(path))


def load_train_state(folder: str | Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from a checkpoint; returns the saved metadata."""
    path = str(Path(folder) / TRAIN_STATE_FILE)
    with safe_open(path, "pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
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


@functools.cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's content, 16 hex digits (computed once per size and modification time)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_digest(path, stat.st_size, stat.st_mtime_ns)
