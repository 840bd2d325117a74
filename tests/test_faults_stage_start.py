"""A kill at a named point of a stage's start (its warm-up statistics saved, its feature cache built, its
first step begun) loses nothing: the rerun ends bit-identical to an uninterrupted run, streamed or from
fixed views, on one process and under torchrun (2 ranks on gloo, every rank killed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import Killed, kill_at, kill_launch, wait_for
from PIL import Image
from safetensors.torch import load_file

from distill.config import load_config
from distill.pipeline import run_stages

CONFIG = "configs/tiny.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def write_images(root: Path) -> Path:
    """A dozen small JPEGs in `root`."""
    rng = np.random.default_rng(0)
    for i in range(12):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80 + 4 * i, 72), Image.BICUBIC).save(root / f"{i:02d}.jpg")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


def overrides(folder: Path, stream: bool) -> list[str]:
    return [f"data.source=folder:{folder}", f"data.stream={str(stream).lower()}", "data.num_images=12",
            "data.workers=0", "teachers=[{name: edges}]", "stages.proxy.steps=2"]  # fmt: skip


def trained(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final weights and AdamW moments of the run's proxy stage."""
    folder = run_dir / "proxy" / "checkpoint"
    return load_file(str(folder / "model.safetensors")) | {
        f"adamw.{k}": v for k, v in load_file(str(folder / "train_state.safetensors")).items()
    }


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


@pytest.fixture(scope="module")
def whole(folder, tmp_path_factory) -> dict[bool, dict[str, torch.Tensor]]:
    """Uninterrupted runs, streamed (True) and from fixed views (False)."""
    root = tmp_path_factory.mktemp("whole")
    runs = {stream: root / f"stream_{stream}" for stream in (True, False)}
    for stream, run_dir in runs.items():
        run_stages(load_config(CONFIG, overrides(folder, stream)), run_dir, ["proxy"])
    return {stream: trained(run_dir) for stream, run_dir in runs.items()}


@pytest.mark.parametrize(
    "stream, point", [(True, "statistics"), (True, "first step"), (False, "cache")], ids=lambda v: str(v)
)
def test_a_kill_at_a_stage_start_resumes_bit_identically(folder, whole, tmp_path, stream, point):
    config = load_config(CONFIG, overrides(folder, stream))
    with pytest.MonkeyPatch.context() as monkeypatch:
        kill_at(point, monkeypatch)
        with pytest.raises(Killed):
            run_stages(config, tmp_path / "run", ["proxy"])
    assert not (tmp_path / "run" / "proxy" / "checkpoint").exists()  # killed before the first checkpoint
    assert (tmp_path / "run" / "proxy" / "standardizers.safetensors").is_file()  # reloaded by the rerun
    result = run_stages(config, tmp_path / "run", ["proxy"])["proxy"]
    assert result.trained_steps == config.stages["proxy"].steps
    assert_bit_identical(trained(tmp_path / "run"), whole[stream])


def torchrun(out: Path, folder: Path, *fault: str) -> list[str]:
    """The proxy stage of a streamed tiny run on 2 ranks; with `fault` (POINT MARKER), stopped at POINT."""
    script = [str(Path(__file__).with_name("faults.py")), *fault, "--"] if fault else ["-m", "apps.cli"]
    return [*TORCHRUN, *script, "distill", "--config", CONFIG, "--stage", "proxy", "--out", str(out),
            *overrides(folder, stream=True)]  # fmt: skip


def finish(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_a_torchrun_run_killed_after_its_statistics_resumes_bit_identically(folder, tmp_path):
    finish(torchrun(tmp_path / "whole", folder))
    cut, marker = tmp_path / "cut", tmp_path / "stopped"
    command = torchrun(cut, folder, "statistics", str(marker))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env=ENV)  # fmt: skip
    wait_for(Path(f"{marker}.0"), process)  # rank 0 saved the statistics and stopped there
    kill_launch(process)  # torchrun and both ranks, each in its own session
    assert not (cut / "proxy" / "checkpoint").exists()
    finish(torchrun(cut, folder))
    assert_bit_identical(trained(cut), trained(tmp_path / "whole"))
