"""Feature snapshots during training (distill.snapshots): on or off, training is bit-identical; one file per
due step, float16, written atomically; a kill and resume keeps the series complete and without duplicates."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import config_file

from distill import snapshots, trainer
from distill.config import ConfigError, load_config
from distill.pipeline import run_stages
from distill.run_dir import RunDir
from distill.snapshots import (
    PROBE_PHOTOS,
    PROBE_SCENES,
    TARGETS_FILE,
    probe_images,
    read_snapshot,
    snapshot_overhead,
    snapshot_steps,
    step_file,
)


def weights(run_dir):
    return load_file(str(RunDir(run_dir).checkpoint("proxy") / "model.safetensors"))


def test_probe_images_are_fixed_and_leave_the_global_generator_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    images, names = probe_images(48)
    assert torch.equal(torch.get_rng_state(), state)
    assert (
        images.shape == (PROBE_SCENES + len(PROBE_PHOTOS), 3, 48, 48)
        and 0 <= images.min() <= images.max() <= 1
    )
    assert names[-len(PROBE_PHOTOS) :] == list(PROBE_PHOTOS)
    assert torch.equal(probe_images(48)[0], images)


def test_training_is_bit_identical_with_snapshots_on_and_off(tmp_path):
    off = load_config(config_file(tmp_path, steps=8))
    on = load_config(config_file(tmp_path, steps=8), ["train.snapshot_every=3"])
    run_stages(off, tmp_path / "off", ["proxy"])
    run_stages(on, tmp_path / "on", ["proxy"])
    assert not RunDir(tmp_path / "off").snapshots("proxy").exists()
    a, b = weights(tmp_path / "off"), weights(tmp_path / "on")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    folder = RunDir(tmp_path / "on").snapshots("proxy")
    assert snapshot_steps(folder) == [0, 3, 6, 8]  # the start, every 3 steps, the last step
    tensors = load_file(str(step_file(folder, 8)))
    count = PROBE_SCENES + len(PROBE_PHOTOS)
    assert tensors["features/patches"].shape == (count, 48, 4, 4)  # 64 px, stride 16
    assert all(t.dtype == torch.float16 for t in tensors.values())
    (teacher,) = on.teachers
    targets, meta = read_snapshot(folder / TARGETS_FILE)
    assert targets["images"].dtype == torch.uint8 and len(meta["images"]) == count
    estimate = tensors[f"estimate/{teacher.name}/patches"]
    assert targets[f"target/{teacher.name}/patches"].shape == estimate.shape  # the student's grid
    first, last = read_snapshot(step_file(folder, 0))[0], read_snapshot(step_file(folder, 8))[0]
    assert not torch.equal(first["features/patches"], last["features/patches"])  # the model changed
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2 * 2**20
    overhead = snapshot_overhead(folder, 8, 3)
    assert overhead.snapshots == 4 and 0 < overhead.seconds < overhead.stage_seconds
    assert 0 < overhead.projected_share < 1


def test_a_negative_snapshot_interval_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.snapshot_every"):
        load_config(config_file(tmp_path), ["train.snapshot_every=-1"])


def test_a_kill_and_resume_keeps_the_series_complete_and_single(tmp_path, monkeypatch):
    config = load_config(config_file(tmp_path, steps=8), ["train.snapshot_every=2"])  # checkpoints every 3
    run_stages(config, tmp_path / "whole", ["proxy"])
    original = trainer.distillation_loss
    calls = {"n": 0}

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # killed in step 5: snapshot 4 is written, the checkpoint is of step 3
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "distillation_loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_stages(config, tmp_path / "cut", ["proxy"])
    monkeypatch.setattr(trainer, "distillation_loss", original)
    cut = RunDir(tmp_path / "cut").snapshots("proxy")
    assert snapshot_steps(cut) == [0, 2, 4]
    step_file(cut, 4).write_bytes(b"left by the killed run")  # beyond the checkpoint: must not survive

    written = []
    monkeypatch.setattr(
        snapshots, "_write", lambda path, *a, _w=snapshots._write: (written.append(path.name), _w(path, *a))
    )
    run_stages(config, tmp_path / "cut", ["proxy"])
    whole = RunDir(tmp_path / "whole").snapshots("proxy")
    assert snapshot_steps(cut) == snapshot_steps(whole) == [0, 2, 4, 6, 8]
    assert written == ["step-000004.safetensors", "step-000006.safetensors", "step-000008.safetensors"]
    for step in snapshot_steps(whole):
        a, b = read_snapshot(step_file(whole, step))[0], read_snapshot(step_file(cut, step))[0]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=2e-3, atol=2e-3)  # float16 of equal weights
    assert [
        json.loads(x)["step"] for x in RunDir(tmp_path / "cut").metrics("proxy").read_text().splitlines()
    ] == list(range(8))


def test_a_failed_write_leaves_no_snapshot(tmp_path, monkeypatch):
    config = load_config(config_file(tmp_path, steps=3), ["train.snapshot_every=2"])

    def torn(tensors, path, metadata):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk gone")

    monkeypatch.setattr(snapshots, "save_file", torn)
    with pytest.raises(OSError, match="disk gone"):
        run_stages(config, tmp_path / "run", ["proxy"])
    assert list(RunDir(tmp_path / "run").snapshots("proxy").iterdir()) == []
