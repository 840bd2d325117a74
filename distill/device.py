"""Where a run computes, and how much memory it took there."""

from __future__ import annotations

import resource

import torch


def pick_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; any other name as given."""
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
