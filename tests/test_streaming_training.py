"""Streaming training end to end (configs/paper_shaped.yaml): a folder larger than the run holds in memory,
DataLoader workers, online teachers, and a kill mid-stage that resumes exactly, on one process and under
torchrun (DDP, and FSDP2 checkpointed with torch.distributed.checkpoint, optimizer state included)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from faults import kill_launch, wait_for
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distill import pipeline
from distill.checkpoint import SHARDED_STATE_FOLDER, read_meta
from distill.config import load_config
from distill.data.stream import StreamingImages
from distill.data.training_data import StreamingData
from distill.pipeline import run_stages

CONFIG = "configs/paper_shaped.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """160 JPEGs of assorted sizes (more than any stage of the paper-shaped config draws in its views)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(160):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        size = (int(rng.integers(72, 140)), int(rng.integers(72, 140)))
        Image.fromarray(small).resize(size, Image.BICUBIC).save(root / f"{i:04d}.jpg", quality=90)
    return root


def overrides(folder):
    return [f"data.source=folder:{folder}"]


def weights(run_dir, stage="proxy"):
    return load_file(str(run_dir / stage / "checkpoint" / "model.safetensors"))


def assert_same_weights(a, b, tolerance=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=tolerance, atol=tolerance)


def launch(command, out, stage_steps):
    """Start `command`; as soon as the stage's first checkpoint is written, SIGKILL it with every process it
    started (torchrun's ranks run in sessions of their own: each rank's process group is killed, DataLoader
    workers included), check that none is left, and return the checkpoint's step (short of the stage end)."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    checkpoint = out / "proxy" / "checkpoint"
    wait_for(checkpoint / "model.safetensors", process)
    kill_launch(process)
    step = read_meta(checkpoint)["step"]
    assert step < stage_steps, "killed too late: the stage had finished"
    return step


def cli(out, *extra, launcher=(sys.executable,)):
    return [*launcher, "-m", "apps.cli", "distill", "--config", CONFIG, "--stage", "proxy", "--out", str(out),
            *extra]  # fmt: skip


def finish(command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_stream_never_holds_the_views_in_memory_and_trains_every_stage(tmp_path, image_folder, monkeypatch):
    def no_views(*args, **kwargs):
        raise AssertionError("a streaming run must not build fixed views")

    monkeypatch.setattr(pipeline, "build_views", no_views)
    config = load_config(CONFIG, overrides(image_folder))
    data = pipeline.prepare_data(config, list(config.stages))
    assert isinstance(data, StreamingData)
    budget = 64  # views a fixed-view run of this size would hold; the stream draws from more images
    stream = StreamingImages(config.data.source, data.side, 8, seed=0)
    drawn = {int(i) for step in range(160 // 8) for i in stream[step].ids}
    assert len(drawn) == 160 > budget
    results = run_stages(config, tmp_path / "run", list(config.stages))
    for stage, result in results.items():
        assert result.steps == config.stages[stage].steps
        logged = [
            json.loads(line)["loss"] for line in (result.folder / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(logged) == result.steps and all(np.isfinite(logged)), stage
        curves = EventAccumulator(str(result.folder / "tensorboard")).Reload()  # `tensorboard --logdir runs`
        assert [event.value for event in curves.Scalars("loss")] == pytest.approx(logged, rel=1e-6)


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_exactly_with_workers(tmp_path, image_folder):
    steps = load_config(CONFIG).stages["proxy"].steps
    finish(cli(tmp_path / "whole", *overrides(image_folder)))
    cut = tmp_path / "cut"
    launch(cli(cut, *overrides(image_folder)), cut, steps)
    finish(cli(cut, *overrides(image_folder)))
    assert_same_weights(weights(tmp_path / "whole"), weights(cut))
    logged = [json.loads(line)["step"] for line in (cut / "proxy" / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(steps))  # steps after the checkpoint were logged once, by the rerun


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["train.fsdp=false", "train.fsdp=true"], ids=["ddp", "fsdp2"])
def test_a_killed_torchrun_run_resumes_exactly(tmp_path, image_folder, sharding):
    steps = load_config(CONFIG).stages["proxy"].steps
    arguments = [*overrides(image_folder), sharding]
    finish(cli(tmp_path / "whole", *arguments, launcher=TORCHRUN))
    cut = tmp_path / "cut"
    launch(cli(cut, *arguments, launcher=TORCHRUN), cut, steps)
    fsdp, alone = sharding.endswith("true"), tmp_path / "alone"
    assert (cut / "proxy" / "checkpoint" / SHARDED_STATE_FOLDER).is_dir() == fsdp
    if fsdp:  # the killed launch's folder as it was left, for a rerun on one process below
        shutil.copytree(cut, alone)
    finish(cli(cut, *arguments, launcher=TORCHRUN))
    assert_same_weights(weights(tmp_path / "whole"), weights(cut))
    if fsdp:  # the sharded state also resumes on one process (resharded on load)
        finish(cli(alone, *arguments))
        assert_same_weights(weights(tmp_path / "whole"), weights(alone), tolerance=1e-4)


def test_bad_stream_sources_fail_in_one_line_before_the_run_folder_is_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, message in (
        (f"folder:{empty}", f"eupe: error: no JPEG/PNG/WebP images in {empty}"),
        (f"folder:{tmp_path / 'missing'}", "eupe: error: image folder not found"),
        (f"shards:{tmp_path}/train-*.tar", "eupe: error: tar shard(s) not found"),
    ):
        out = tmp_path / "run"
        done = subprocess.run(cli(out, f"data.source={source}"), capture_output=True, text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), done.stderr
        assert not out.exists()  # nothing written for a run that cannot start


def test_a_truncated_shard_member_and_an_unreadable_image_are_skipped_and_counted(tmp_path, image_folder):
    import tarfile

    shard = tmp_path / "train-000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(image_folder.iterdir())[:40]:
            tar.add(path, arcname=path.name)
        broken = tmp_path / "0040.jpg"
        broken.write_bytes(b"not a jpeg at all")
        tar.add(broken, arcname=broken.name)
        tar.add(sorted(image_folder.iterdir())[41], arcname="0041.jpg")
    data = shard.read_bytes()
    shard.write_bytes(data[: data.rfind(b"0041.jpg") + 512 + 100])  # the last member's data cut short
    config = load_config(CONFIG, [f"data.source=shards:{shard}", "stages.proxy.steps=6", "data.workers=0"])
    with pytest.warns(UserWarning) as caught:
        result = run_stages(config, tmp_path / "run", ["proxy"])["proxy"]
    messages = [str(w.message) for w in caught]
    assert any("1 truncated member(s) skipped" in m for m in messages), messages
    assert any("0040.jpg" in m for m in messages), messages  # named when met
    assert result.steps == 6


def test_a_stage_reads_its_targets_from_a_feature_store_without_running_the_teachers(
    tmp_path, image_folder, monkeypatch
):
    from distill import stage_teachers
    from distill.targets.store_write import build_store

    store = tmp_path / "store"
    base = [*overrides(image_folder), "data.workers=0"]
    build_store(load_config(CONFIG, base), store, side=64, grid=4, budget_gib=1.0, shard_size=64, workers=0)
    stored = [*base, f"data.store={store}"]
    config = load_config(CONFIG, [*stored, "augment.crop=0.5", "augment.min_crop_cells=2"])

    def no_teacher(*args, **kwargs):
        raise AssertionError("a stage with a feature store must not run its teachers")

    monkeypatch.setattr(stage_teachers.StageTeachers, "raw", no_teacher)
    result = run_stages(config, tmp_path / "run", ["proxy"])["proxy"]
    assert result.steps == config.stages["proxy"].steps and np.isfinite(result.metrics["loss"])
    pyramid = load_config(CONFIG, [*stored, "stages.proxy.resolutions=[32, 64]"])
    with pytest.raises(ValueError, match=r"teacher sides \[32, 64\], but the feature store .* at 64 px only"):
        run_stages(pyramid, tmp_path / "other", ["proxy"])
