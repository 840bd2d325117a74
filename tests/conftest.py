"""Shared fixtures: a tiny distilled run (all four stages, the three real experts) made once per session."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # one pytest worker per core (`-n 2`): one thread each, and in the
    os.environ["OMP_NUM_THREADS"] = "1"  # processes tests launch, so no worker waits on another's threads

TINY_RUN = """
teachers:
  - {name: semantic, resolution: 64}
  - {name: text}
  - {name: edges}
proxy: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 48, depth: 2, num_heads: 2}, adaptor_hidden: 48}
student: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 32, depth: 2, num_heads: 2}, adaptor_hidden: 32}
data: {source: mixed, num_images: 24}
stages:
  proxy: {steps: 4, batch_size: 8, lr: 2.0e-3, warmup_steps: 1, resolutions: [64]}
  student: {steps: 4, batch_size: 8, lr: 2.0e-3, warmup_steps: 1, resolutions: [64]}
  multires: {steps: 2, batch_size: 8, lr: 1.0e-3, resolutions: [32, 64], teacher_resolutions: [48, 64]}
  direct: {steps: 4, batch_size: 8, lr: 2.0e-3, warmup_steps: 1, resolutions: [64]}
norm: {warmup_batches: 2}
train: {log_every: 1, checkpoint_every: 2, snapshot_every: 2, seed: 1}
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with proxy, student, multires and direct checkpoints of tiny ViTs (64 px)."""
    from distill.config import load_config
    from distill.pipeline import run_stages
    from distill.stages import STAGE_NAMES

    folder = tmp_path_factory.mktemp("tiny_run")
    config_path = folder / "tiny.yaml"
    config_path.write_text(textwrap.dedent(TINY_RUN))
    run_dir = folder / "run"
    run_stages(load_config(config_path), run_dir, list(STAGE_NAMES))
    return run_dir
