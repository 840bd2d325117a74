"""A stage's checkpoint on one process or many: save it atomically, resume weights and optimizer from it.

One process, or DDP: the main process writes `model.safetensors` and `train_state.safetensors`. FSDP2:
every process writes its shards of the weights and AdamW moments with torch.distributed.checkpoint into
`train_state/` of the same temporary folder, then the main process adds the gathered weights and swaps
the folder into place, so the checkpoint is always whole. A sharded train state loads on any number of
processes (torch.distributed.checkpoint reshards), and on one.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill import distributed
from distill.atomic import atomic_path
from distill.checkpoint import (
    SHARDED_STATE_FOLDER,
    TRAIN_STATE_FILE,
    load_train_state,
    save_checkpoint,
    write_checkpoint_files,
)


def save_stage_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    ctx: distributed.Context,
    sharded: bool,
) -> None:
    """Save weights, optimizer state and `meta` into `folder` (a collective under torchrun)."""
    weights = distributed.full_state_dict(model, ctx)
    if not sharded:
        if ctx.is_main:
            save_checkpoint(folder, weights, optimizer, meta)
        distributed.barrier(ctx)
        return
    with ExitStack() as stack:
        tmp = None
        if ctx.is_main:
            tmp = stack.enter_context(atomic_path(folder))
            tmp.mkdir(parents=True)
        tmp = distributed.broadcast_object(tmp, ctx)
        distributed.save_sharded_state(model, optimizer, tmp / SHARDED_STATE_FOLDER)
        distributed.barrier(ctx)
        if ctx.is_main:
            write_checkpoint_files(tmp, weights, None, meta)
    distributed.barrier(ctx)


def resume_optimizer(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool, stage: str
) -> None:
    """Restore the optimizer (and, for a sharded state, the weights) of a stage from its checkpoint."""
    if (folder / SHARDED_STATE_FOLDER).is_dir():
        distributed.load_sharded_state(model, optimizer, folder / SHARDED_STATE_FOLDER)
    elif sharded or not (folder / TRAIN_STATE_FILE).is_file():
        warnings.warn(f"{stage}: the checkpoint {folder} holds no optimizer state this run can load; "
                      "resuming with fresh AdamW moments (not an exact resume)", stacklevel=2)  # fmt: skip
    else:
        load_train_state(folder, optimizer)
