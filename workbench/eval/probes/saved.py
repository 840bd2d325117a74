"""A trained dense probe on disk: its weights and constructor arguments in one safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from distill.atomic import atomic_path
from distill.checkpoint import contiguous_state
from workbench.eval.probes.dense_head import DenseProbe


def save_probe(probe: DenseProbe, path: Path) -> None:
    """Save a trained dense probe (weights and constructor arguments) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(
            contiguous_state(probe.state_dict()), str(tmp), metadata={"config": json.dumps(probe.config)}
        )


def load_probe(path: str | Path) -> DenseProbe:
    """A dense probe saved by `save_probe`, in eval mode."""
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    probe = DenseProbe(**config)
    probe.load_state_dict(load_file(str(path)))
    return probe.eval()
