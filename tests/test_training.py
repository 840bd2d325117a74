"""End-to-end stages on CPU: losses fall, resume is exact, 2-process DDP equals one process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from distill import trainer
from distill.config import load_config
from distill.pipeline import run_stages

TINY = """
teachers:
  - {name: %s}
proxy: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 48, depth: 2, num_heads: 2}, adaptor_hidden: 48}
student: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 32, depth: 2, num_heads: 2}, adaptor_hidden: 32}
data: {source: scenes, num_images: 32}
stages:
  proxy: {steps: %d, batch_size: 8, lr: 2.0e-3, warmup_steps: 2, resolutions: [64]}
  student: {steps: %d, batch_size: 8, lr: 2.0e-3, warmup_steps: 2, resolutions: [64]}
  multires: {steps: 6, batch_size: 8, lr: 1.0e-3, resolutions: [32, 64], teacher_resolutions: [48, 64]}
  direct: {steps: %d, batch_size: 8, lr: 2.0e-3, warmup_steps: 2, resolutions: [64]}
norm: {warmup_batches: 2}
train: {log_every: 1, checkpoint_every: 3, seed: 3}
"""
RANDOM_TEACHER = "timm:convnext_atto.d2_in1k, weights: random"  # a dotted name (tag), random weights


def config_file(tmp_path, teacher=RANDOM_TEACHER, steps=12, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(TINY % (teacher, steps, steps, steps)))
    return path


def losses(stage_dir):
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def mean(values):
    return sum(values) / len(values)


@pytest.mark.slow
def test_pipeline_with_the_experts_lowers_every_stage_loss(tmp_path):
    config = load_config(
        config_file(tmp_path, "semantic, resolution: 64}\n  - {name: text}\n  - {name: edges", 20)
    )
    results = run_stages(config, tmp_path / "runs" / "toy", ["proxy", "student", "multires", "direct"])
    for stage in ("proxy", "student", "direct"):
        curve = losses(results[stage].folder)
        assert mean(curve[-4:]) < mean(curve[:4]), (stage, curve)
    assert results["multires"].steps == 6
    sides = {
        json.loads(line)["side"]
        for line in (results["multires"].folder / "metrics.jsonl").read_text().splitlines()
    }
    assert sides == {32, 64}  # the pyramid was drawn
    proxy_terms = json.loads((results["proxy"].folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"semantic/summary_cos", "text/patch_cos", "edges/patch_smooth_l1"} <= set(proxy_terms)
    assert (tmp_path / "runs" / "toy" / "config.yaml").is_file()


def final_weights(run_dir, stage):
    return load_file(str(run_dir / stage / "checkpoint" / "model.safetensors"))


AUGMENTED = ["augment.flip=0.5", "augment.crop=0.5", "augment.min_crop_cells=2"]


@pytest.mark.parametrize("overrides", [[], AUGMENTED], ids=["plain", "augmented"])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, overrides):
    config = load_config(config_file(tmp_path, steps=8), overrides)
    run_stages(config, tmp_path / "runs" / "whole", ["proxy"])

    original = trainer.distillation_loss
    calls = {"n": 0}

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # as if the process were killed during step 5
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "distillation_loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_stages(config, tmp_path / "runs" / "cut", ["proxy"])
    monkeypatch.setattr(trainer, "distillation_loss", original)
    metrics_file = tmp_path / "runs/cut/proxy/metrics.jsonl"
    assert json.loads(metrics_file.read_text().splitlines()[-1])["step"] == 4
    with metrics_file.open("a") as f:
        f.write('{"step": 5, "lo')  # as if killed while writing a line
    resumed = run_stages(config, tmp_path / "runs" / "cut", ["proxy"])["proxy"]
    assert resumed.steps == 8 and 0 < resumed.trained_steps < 8
    logged = [
        json.loads(line)["step"] for line in (resumed.folder / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged == list(range(8))  # steps 3-4 were run again after the resume, and logged once
    whole, cut = (
        final_weights(tmp_path / "runs/whole", "proxy"),
        final_weights(tmp_path / "runs/cut", "proxy"),
    )
    assert whole.keys() == cut.keys()
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], rtol=1e-5, atol=1e-6)
    statistics = tmp_path / "runs/cut/proxy/standardizers.safetensors"
    dated = statistics.stat().st_mtime_ns

    def no_teachers(*args, **kwargs):
        raise AssertionError("a finished stage must not build its teachers or touch the feature cache")

    monkeypatch.setattr(trainer, "build_stage_teachers", no_teachers)
    again = run_stages(config, tmp_path / "runs" / "cut", ["proxy"])["proxy"]  # nothing left to train
    assert again.steps == 8 and again.trained_steps == 0
    assert statistics.stat().st_mtime_ns == dated  # reloaded, not rewritten (its date keys scoreboard rows)
    assert again.metrics["step"] == 7 and again.metrics["loss"] == resumed.metrics["loss"]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = load_config(config_file(tmp_path, steps=8))
    original = trainer.distillation_loss

    def nan_at_step_4(*args, **kwargs):
        total, logs = original(*args, **kwargs)
        nan_at_step_4.n = getattr(nan_at_step_4, "n", 0) + 1
        return (total * float("nan"), logs) if nan_at_step_4.n == 5 else (total, logs)

    monkeypatch.setattr(trainer, "distillation_loss", nan_at_step_4)
    with pytest.raises(
        trainer.NonFiniteLoss, match="loss became nan/inf at step 4; stopped, kept the checkpoint of step 3"
    ):
        run_stages(config, tmp_path / "runs" / "nan", ["proxy"])
    from distill.checkpoint import read_meta

    assert read_meta(tmp_path / "runs/nan/proxy/checkpoint")["step"] == 3


def test_crops_larger_than_the_view_grid_are_refused_before_training(tmp_path):
    config = load_config(config_file(tmp_path), ["augment.crop=0.5", "augment.min_crop_cells=4"])
    with pytest.raises(ValueError, match=r"augment\.min_crop_cells must lie in \[1, 3\] for views of 4"):
        run_stages(config, tmp_path / "runs" / "big", ["proxy"])
    assert not (tmp_path / "runs" / "big" / "proxy" / "metrics.jsonl").exists()


def test_stage_order_errors(tmp_path):
    config = load_config(config_file(tmp_path, steps=2))
    with pytest.raises(FileNotFoundError, match="needs the proxy checkpoint"):
        run_stages(config, tmp_path / "runs" / "x", ["student"])
    other = load_config(config_file(tmp_path, steps=3, name="d.yaml"))
    run_stages(config, tmp_path / "runs" / "y", ["proxy"])
    with pytest.raises(ValueError, match="holds a run with a different config"):
        run_stages(other, tmp_path / "runs" / "y", ["proxy"])


@pytest.mark.slow
@pytest.mark.parametrize("sharding", [[], ["train.fsdp=true"]], ids=["ddp", "fsdp2"])
def test_two_process_gloo_step_matches_one_process_on_the_global_batch(tmp_path, sharding):
    path = config_file(tmp_path, steps=2)
    single = tmp_path / "runs" / "single"
    run_stages(load_config(path), single, ["proxy"])
    ddp = tmp_path / "runs" / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    arguments = ["--config", str(path), "--stage", "proxy", "--out", str(ddp), *sharding]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "apps.cli", "distill", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = final_weights(single, "proxy"), final_weights(ddp, "proxy")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_convnext_student_and_a_checkpoint_as_teacher(tmp_path):
    from distill.teachers import build_teacher

    path = config_file(tmp_path, steps=3)
    config = load_config(path, ["student.arch=convnext_atto", "student.kwargs={}"])
    results = run_stages(config, tmp_path / "runs" / "cnx", ["proxy", "student"])
    teacher = build_teacher(str(results["student"].folder / "checkpoint"))
    out = teacher(torch.rand(2, 3, 64, 64))
    assert out.summary.shape == (2, 320) and out.patches.shape == (2, 320, 2, 2)  # ConvNeXt-atto, stride 32
    assert not any(p.requires_grad for p in teacher.parameters())
    overrides = ["student.arch=convnext_atto", "student.kwargs={}", "stages.multires.resolutions=[32, 48]"]
    with pytest.raises(ValueError, match=r"stages.multires.resolutions \[48\] .* stride 32"):
        run_stages(load_config(path, overrides), tmp_path / "runs" / "cnx2", ["proxy", "multires"])


def test_activation_checkpointing_trains_the_same_weights(tmp_path):
    plain = run_stages(load_config(config_file(tmp_path, steps=3)), tmp_path / "runs" / "plain", ["proxy"])
    config = load_config(config_file(tmp_path, steps=3), ["train.activation_checkpointing=true"])
    recomputed = run_stages(config, tmp_path / "runs" / "recomputed", ["proxy"])
    a, b = (final_weights(r["proxy"].folder.parent, "proxy") for r in (plain, recomputed))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
