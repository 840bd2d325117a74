"""The same training code on one process or under `torchrun` (DDP, or FSDP2 for the proxy).

Backend: NCCL on CUDA, gloo on CPU. Each process handles `batch_size / world_size` of every global
batch; gradients are averaged, so a step matches a single-process step on the whole batch. FSDP2's
training state (sharded weights and AdamW moments) is saved and loaded with torch.distributed.checkpoint,
which reshards on load, so a run resumes exactly on another number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Context:
    """This process's place in the job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """The number of processes torchrun launched (1 without torchrun); joins nothing."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def context() -> Context:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1), else a single-process context."""
    world_size = launched_world_size()
    if world_size == 1:
        return Context(0, 1, torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Context(dist.get_rank(), dist.get_world_size(), device)


def wrap(model: nn.Module, ctx: Context, fsdp: bool = False) -> nn.Module:
    """DDP (or FSDP2 when `fsdp`, sharding each backbone block and the root) across the job; as is alone."""
    if ctx.world_size == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model.backbone, "blocks", []):
            fully_shard(block)
        return fully_shard(model)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
    )


def full_state_dict(model: nn.Module, ctx: Context) -> dict[str, Tensor]:
    """The unwrapped model's full state dict (gathered on every rank for FSDP)."""
    if ctx.world_size > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return getattr(model, "module", model).state_dict()


def save_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every process writes its shards of the weights and optimizer moments into `folder` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, moments = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "optimizer": moments}, checkpoint_id=str(folder))


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Inverse of `save_sharded_state`, on any number of processes (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, moments = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": moments}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def broadcast_object(value: object, ctx: Context) -> object:
    """The main process's `value`, on every process."""
    if ctx.world_size == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def mean_logs(logs: dict[str, Tensor], ctx: Context) -> dict[str, Tensor]:
    """Average logged scalars over processes."""
    if ctx.world_size == 1:
        return logs
    names = sorted(logs)
    stacked = torch.stack([logs[n].float() for n in names])
    dist.all_reduce(stacked)
    return dict(zip(names, stacked / ctx.world_size, strict=True))


def barrier(ctx: Context) -> None:
    if ctx.world_size > 1:
        dist.barrier()
