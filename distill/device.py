"""Where a run computes, and how much memory it took there."""

from __future__ import annotations

import resource

import torch

from distill.config import ConfigError


def pick_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; any other name as given."""
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str, key: str = "train.device") -> None:
    """`name` is `auto` or a device torch can use here."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:<index>, got '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but torch sees no CUDA device")


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
