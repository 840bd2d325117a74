"""A stage's checkpoint on one process or many: recover it, save it, resume weights and optimizer from it.

One process, or DDP: the main process writes `model.safetensors` and `train_state.safetensors`. FSDP2:
every process writes its shards of the weights and AdamW moments with torch.distributed.checkpoint into
`train_state/` of the same pending folder, then the main process adds the gathered weights, seals the
folder with its manifest and swaps it in (see distill.checkpoint), so the checkpoint is always whole. A
sharded train state loads on any number of processes (torch.distributed.checkpoint reshards), and on one.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill import distributed
from distill.checkpoint import (
    SHARDED_STATE_FOLDER,
    TRAIN_STATE_FILE,
    all_finite,
    discard_from,
    load_train_state,
    recover,
    save_checkpoint,
    saving,
    write_checkpoint_files,
)


def recovered_step(folder: Path, final_step: int, ctx: distributed.Context) -> int | None:
    """The main process `recover`s the stage's checkpoint; its step (None: start over) on every process."""
    return distributed.broadcast_object(recover(folder, final_step) if ctx.is_main else None, ctx)


def save_stage_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    ctx: distributed.Context,
    sharded: bool,
) -> bool:
    """Save weights, optimizer state and `meta` into `folder` (a collective under torchrun).

    Returns False, saving nothing, when a weight is nan or infinite: the checkpoint before stays.
    """
    weights = distributed.full_state_dict(model, ctx)  # on the main process at least
    if not distributed.broadcast_object(ctx.is_main and all_finite(weights), ctx):
        return False
    if not sharded:
        if ctx.is_main:
            save_checkpoint(folder, weights, optimizer, meta)
        distributed.barrier(ctx)
        return True
    with ExitStack() as stack:
        pending = None
        if ctx.is_main:
            pending = stack.enter_context(saving(folder))
        pending = distributed.broadcast_object(pending, ctx)
        distributed.save_sharded_state(model, optimizer, pending / SHARDED_STATE_FOLDER)
        distributed.barrier(ctx)
        if ctx.is_main:
            write_checkpoint_files(pending, weights, None, meta)
    distributed.barrier(ctx)
    return True


def last_good_step(folder: Path, bad_step: int, ctx: distributed.Context) -> int | None:
    """After a nan/inf loss at `bad_step`: the main process drops a checkpoint whose weights gave it (step
    `bad_step`) for the previous one; the step of the checkpoint kept (None if none), on every process."""
    return distributed.broadcast_object(discard_from(folder, bad_step) if ctx.is_main else None, ctx)


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
