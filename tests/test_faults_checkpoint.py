"""Checkpoints under faults: a kill at every file operation of a save, damaged files, nan/inf training."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from pathlib import Path

import pytest
import torch
from faults import KillPoints
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distill import checkpoint, trainer
from distill.checkpoint import MANIFEST_FILE, DamagedCheckpoint, read_meta
from distill.config import load_config
from distill.metrics_log import MetricsLog, metric_records
from distill.pipeline import run_stages

STEPS = 3
VIT = "{arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 16, depth: 1, num_heads: 1}, adaptor_hidden: 8}"
TINY = f"""
teachers:
  - {{name: "timm:convnext_atto.d2_in1k", weights: random}}
proxy: {VIT}
student: {VIT}
data: {{source: scenes, num_images: 8}}
stages:
  proxy: {{steps: {STEPS}, batch_size: 4, lr: 2.0e-3, warmup_steps: 1, resolutions: [32]}}
norm: {{warmup_batches: 1}}
train: {{log_every: 1, checkpoint_every: 1, seed: 3}}
"""
STAGE_ENTRIES = {  # what a stage folder holds when no save is under way
    "checkpoint",
    "checkpoint.previous",
    "metrics.jsonl",
    "standardizers.safetensors",
    "tensorboard",
}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY))
    return load_config(path)


@pytest.fixture(scope="module")
def whole(config, tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny proxy stage."""
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    run_stages(config, run_dir, ["proxy"])
    return run_dir


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "proxy" / "checkpoint" / "model.safetensors"))


def assert_bit_identical(run_dir: Path, whole: Path) -> None:
    a, b = weights(run_dir), weights(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    moments = [load_file(str(r / "proxy/checkpoint/train_state.safetensors")) for r in (run_dir, whole)]
    assert all(torch.equal(moments[0][k], moments[1][k]) for k in moments[1])


def logged_steps(run_dir: Path) -> list[int]:
    return [record["step"] for record in metric_records(run_dir / "proxy")]


def copy_run(whole: Path, name: str) -> Path:
    copy = whole.with_name(name)  # beside it: the same feature cache
    shutil.copytree(whole, copy)
    return copy


@pytest.mark.slow
def test_a_kill_at_any_operation_of_a_save_resumes_from_the_last_complete_step(config, whole, monkeypatch):
    points = KillPoints(whole.with_name("killed"))
    points.install(monkeypatch)
    run_stages(config, points.run_dir, ["proxy"])
    monkeypatch.undo()
    assert len(points.states) > 3 * STEPS  # every save was cut at several places
    for copy, resume_from in points.states:
        result = run_stages(config, copy, ["proxy"])["proxy"]
        assert (result.steps, result.trained_steps) == (STEPS, STEPS - resume_from), copy
        assert_bit_identical(copy, whole)
        assert logged_steps(copy) == list(range(STEPS)), copy  # each step once, even when restarted from 0
        assert {p.name for p in (copy / "proxy").iterdir()} <= STAGE_ENTRIES, copy  # no temporary left


def damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2] if how == "truncated" else bytes(size))


@pytest.fixture(scope="module")
def stopped(config, whole) -> Path:
    """The tiny run stopped during its last step: checkpoints of step 2 and (previous) step 1."""
    run_dir = whole.with_name("stopped")
    with pytest.MonkeyPatch.context() as monkeypatch:
        original, calls = trainer.distillation_loss, iter(range(100))

        def loss(*args, **kwargs):
            if next(calls) == STEPS - 1:
                raise KeyboardInterrupt  # as if killed
            return original(*args, **kwargs)

        monkeypatch.setattr(trainer, "distillation_loss", loss)
        with pytest.raises(KeyboardInterrupt):
            run_stages(config, run_dir, ["proxy"])
    assert read_meta(run_dir / "proxy/checkpoint")["step"] == STEPS - 1
    return run_dir


@pytest.mark.parametrize("how", ["truncated", "zeroed"])
def test_damaged_weights_of_an_unfinished_stage_fall_back_to_the_previous_checkpoint(
    config, whole, stopped, how
):
    run_dir = copy_run(stopped, f"unfinished_{how}")
    damage(run_dir / "proxy/checkpoint/model.safetensors", how)
    with pytest.warns(
        UserWarning, match=r"checkpoint/model\.safetensors is damaged.*resuming from .* step 1$"
    ):
        result = run_stages(config, run_dir, ["proxy"])["proxy"]
    assert result.trained_steps == STEPS - 1
    assert_bit_identical(run_dir, whole)
    assert logged_steps(run_dir) == list(range(STEPS))


def test_a_damaged_stage_with_nothing_to_fall_back_on_starts_over(config, whole, stopped):
    run_dir = copy_run(stopped, "alone")
    shutil.rmtree(run_dir / "proxy/checkpoint.previous")
    damage(run_dir / "proxy/checkpoint/train_state.safetensors", "zeroed")
    with pytest.warns(UserWarning, match=r"train_state\.safetensors is damaged.*; starting over$"):
        result = run_stages(config, run_dir, ["proxy"])["proxy"]
    assert result.trained_steps == STEPS
    assert_bit_identical(run_dir, whole)


@pytest.mark.parametrize("file", ["model.safetensors", "train_state.safetensors"])
def test_a_damaged_finished_stage_is_named_in_one_line(config, whole, file):
    run_dir = copy_run(whole, f"finished_{file}")
    damage(run_dir / "proxy" / "checkpoint" / file, "truncated")
    with pytest.raises(DamagedCheckpoint) as error:
        run_stages(config, run_dir, ["proxy"])
    message = str(error.value)
    assert message.startswith(str(run_dir / "proxy" / "checkpoint" / file)) and "\n" not in message
    assert isinstance(error.value, ValueError)  # printed by the CLI as `eupe: error: ...`


def test_read_meta_of_a_zeroed_file_is_a_one_line_error(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "c", {"w": torch.ones(8)}, None, {"step": 1})
    damage(tmp_path / "c" / "model.safetensors", "zeroed")
    with pytest.raises(DamagedCheckpoint, match=r"model\.safetensors is damaged"):
        read_meta(tmp_path / "c")
    with pytest.raises(DamagedCheckpoint, match=r"model\.safetensors is damaged"):
        checkpoint.load_model_state(tmp_path / "c")


def test_saves_keep_one_previous_checkpoint_and_discard_puts_it_back(tmp_path):
    folder = tmp_path / "checkpoint"
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(folder, {"w": torch.full((2,), float(step))}, None, {"step": step})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.previous"]
    assert checkpoint.checkpoint_step(folder) == 3
    assert read_meta(tmp_path / "checkpoint.previous")["step"] == 2
    assert checkpoint.discard_from(folder, 4) == 3  # older than the bad step: kept
    assert checkpoint.discard_from(folder, 3) == 2 and checkpoint.checkpoint_step(folder) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_recover_swaps_in_a_sealed_save_and_clears_leftovers(tmp_path):
    folder, previous = tmp_path / "checkpoint", tmp_path / "checkpoint.previous"
    for step in (1, 2):
        checkpoint.save_checkpoint(folder, {"w": torch.full((2,), float(step))}, None, {"step": step})
    pending = checkpoint.pending_folder(folder)  # a save of step 3, killed between its two renames
    pending.mkdir()
    checkpoint.write_checkpoint_files(pending, {"w": torch.full((2,), 3.0)}, None, {"step": 3})
    checkpoint.seal(pending)
    shutil.rmtree(previous)
    os.replace(folder, previous)
    (tmp_path / ".checkpoint.77.old").mkdir()  # left by the save of an older version
    assert checkpoint.recover(folder, 10) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.previous"]
    assert read_meta(previous)["step"] == 2
    pending.mkdir()  # a save cut short before its manifest: dropped
    (pending / "model.safetensors").write_bytes(b"partial")
    assert checkpoint.recover(folder, 10) == 3 and not pending.exists()


def test_malformed_metrics_lines_are_left_out_with_a_warning(tmp_path):
    lines = ['{"step": 0, "loss": 1.0}', '{"step": null}', "[1, 2]", '{"step": 1, "loss": 0.5}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 2, "lo')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: left out 2 malformed line"):
        assert [r["step"] for r in metric_records(tmp_path)] == [0, 1]
    with pytest.warns(UserWarning):
        MetricsLog(tmp_path, resume_step=1)  # the truncation on resume reads the same lines
    assert (tmp_path / "metrics.jsonl").read_text() == lines[0] + "\n"


def test_tensorboard_shows_each_step_once_after_a_resume_or_a_restart(tmp_path):
    def log(resume_step: int, steps: range, offset: float) -> None:
        time.sleep(1.1)  # event files are named by the second they were opened in, and read in name order
        metrics = MetricsLog(tmp_path, resume_step)
        for step in steps:
            metrics.write({"step": step, "loss": offset + step})

    def curve() -> list[tuple[int, float]]:
        events = EventAccumulator(str(tmp_path / "tensorboard")).Reload().Scalars("loss")
        return [(event.step, event.value) for event in events]

    log(0, range(5), 0.0)
    log(2, range(2, 4), 10.0)  # resumed at step 2, killed again after step 3
    assert curve() == [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0)]
    log(0, range(2), 20.0)  # the stage starts over
    assert curve() == [(0, 20.0), (1, 21.0)]


def nan_loss_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    original, calls = trainer.distillation_loss, iter(range(100))

    def loss(*args, **kwargs):
        total, logs = original(*args, **kwargs)
        return (total * float("nan"), logs) if next(calls) == step else (total, logs)

    monkeypatch.setattr(trainer, "distillation_loss", loss)


def test_nan_before_any_checkpoint_says_there_is_none(config, whole, monkeypatch):
    nan_loss_at(0, monkeypatch)
    with pytest.raises(trainer.NonFiniteLoss, match="at step 0; stopped, no checkpoint with a finite loss"):
        run_stages(config, whole.with_name("nan0"), ["proxy"])
    assert not (whole.with_name("nan0") / "proxy" / "checkpoint").exists()


def test_nan_drops_the_checkpoint_whose_weights_gave_it(config, whole, monkeypatch):
    nan_loss_at(2, monkeypatch)  # the loss of step 2 is that of the weights saved as step 2
    with pytest.raises(trainer.NonFiniteLoss, match=r"at step 2; stopped, kept the checkpoint of step 1 \("):
        run_stages(config, whole.with_name("nan2"), ["proxy"])
    kept = whole.with_name("nan2") / "proxy" / "checkpoint"
    assert checkpoint.checkpoint_step(kept) == 1
    assert all(torch.isfinite(t).all() for t in checkpoint.load_model_state(kept).values())


def test_non_finite_weights_are_never_saved(config, whole, monkeypatch):
    original, calls = torch.optim.AdamW.step, iter(range(100))

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if next(calls) == 1:  # the update of step 1 makes the weights saved as step 2 infinite
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    with pytest.raises(
        trainer.NonFiniteLoss, match=r"weights became nan/inf at step 2; stopped, kept .* step 1"
    ):
        run_stages(config, whole.with_name("inf"), ["proxy"])
    kept = whole.with_name("inf") / "proxy" / "checkpoint"
    assert checkpoint.checkpoint_step(kept) == 1
    assert all(torch.isfinite(t).all() for t in checkpoint.load_model_state(kept).values())


def test_manifest_names_every_file_with_its_size(whole):
    folder = whole / "proxy" / "checkpoint"
    files = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    assert set(files) == {"model.safetensors", "train_state.safetensors"}
    assert all(files[name]["bytes"] == (folder / name).stat().st_size for name in files)
