"""The teacher-feature cache: computed once, half precision, re-keyed when its inputs change."""

import numpy as np
import pytest
import torch

from distill.features import Features
from distill.fingerprint import fingerprint
from distill.standardize import load_standardizers
from distill.targets.cache import FeatureCache


def fake_teacher(calls):
    def compute(index: slice) -> Features:
        calls.append(index)
        n = index.stop - index.start
        rows = torch.arange(index.start, index.stop, dtype=torch.float32)
        return Features(rows[:, None].repeat(1, 3), rows.view(n, 1, 1, 1).repeat(1, 2, 4, 4) / 7)

    return compute


def test_built_once_then_read_from_disk_in_half_precision(tmp_path):
    cache, calls = FeatureCache(tmp_path), []
    key = fingerprint({"teacher": "t"}, 64, "data")
    built = cache.build(key, {"teacher": "t"}, 10, fake_teacher(calls), chunk=4)
    assert [c.start for c in calls] == [0, 4, 8]
    assert built.summary.dtype == np.float16 and built.patches.shape == (10, 2, 4, 4)
    again = cache.get_or_build(key, {}, 10, fake_teacher(calls))
    assert len(calls) == 3  # no recomputation
    out = again.take(torch.tensor([9, 2]), torch.device("cpu"))
    assert out.summary[:, 0].tolist() == [9.0, 2.0] and out.summary.dtype == torch.float32
    assert torch.allclose(out.patches[0], torch.full((2, 4, 4), 9 / 7), atol=1e-3)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary folder left behind


def test_any_change_of_teacher_resolution_data_or_statistics_changes_the_key():
    base = fingerprint({"name": "edges"}, 128, "data-a", {"mean": torch.zeros(3)})
    assert base == fingerprint({"name": "edges"}, 128, "data-a", {"mean": torch.zeros(3)})
    assert base != fingerprint({"name": "text"}, 128, "data-a", {"mean": torch.zeros(3)})
    assert base != fingerprint({"name": "edges"}, 160, "data-a", {"mean": torch.zeros(3)})
    assert base != fingerprint({"name": "edges"}, 128, "data-b", {"mean": torch.zeros(3)})
    assert base != fingerprint({"name": "edges"}, 128, "data-a", {"mean": torch.ones(3)})


def test_a_failed_build_leaves_no_entry(tmp_path):
    cache = FeatureCache(tmp_path)

    def broken(index: slice) -> Features:
        if index.start > 0:
            raise RuntimeError("teacher crashed")
        return fake_teacher([])(index)

    with pytest.raises(RuntimeError, match="teacher crashed"):
        cache.build("k", {}, 8, broken, chunk=4)
    assert cache.load("k") is None and not any(tmp_path.iterdir())


def test_a_stage_taught_by_the_proxy_keys_its_targets_by_the_proxy_weights_content(tiny_run, tmp_path):
    import shutil

    from distill.config import load_config
    from distill.data.training_data import FixedViews
    from distill.integrity import file_digest
    from distill.stage_teachers import build_stage_teachers

    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)  # same weights, another path and other file times
    config = load_config(tiny_run / "config.yaml")
    views = FixedViews(torch.zeros(0, 3, 64, 64, dtype=torch.uint8), "")  # statistics reloaded, not fitted
    here, there = (
        build_stage_teachers(config, "student", run, torch.device("cpu"), views, save=False).identity
        for run in (tiny_run, moved)
    )
    assert (
        here
        == there
        == {"proxy": {"weights": file_digest(tiny_run / "proxy" / "checkpoint" / "model.safetensors")}}
    )


def test_a_twin_stage_reuses_the_warm_up_statistics_and_a_different_warm_up_fits_its_own(
    tiny_run, tmp_path, monkeypatch
):
    """The direct stage has the proxy's teachers, views and warm-up: its statistics are the proxy's file,
    not a second pass of the experts over the warm-up batches; another batch size fits its own."""
    import shutil

    from distill import stage_teachers
    from distill.config import load_config
    from distill.pipeline import prepare_data
    from distill.stages import STAGE_NAMES
    from distill.standardize import standardizers_key

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "proxy", run / "proxy")
    config = load_config(tiny_run / "config.yaml")
    views = prepare_data(config, list(STAGE_NAMES))
    proxy_file, direct_file = (run / stage / "standardizers.safetensors" for stage in ("proxy", "direct"))
    fitted = stage_teachers.fit_standardizers
    monkeypatch.setattr(stage_teachers, "fit_standardizers", lambda *a: pytest.fail("fitted again"))
    cpu = torch.device("cpu")
    teachers = stage_teachers.build_stage_teachers(config, "direct", run, cpu, views)
    assert standardizers_key(direct_file) == standardizers_key(proxy_file) is not None
    # the proxy's statistics exactly, and what a second pass would give (to the experts' float rounding, which
    # oneDNN may vary between two passes over the same images: CI saw one variance of ~320 differ by 1.4e-4
    # relative)
    refitted = fitted(config, "direct", teachers, views, False, None)
    proxy = load_standardizers(proxy_file)
    for name, standardizer in load_standardizers(direct_file).items():
        for key, value in standardizer.state_dict().items():
            assert torch.equal(proxy[name].state_dict()[key], value), (name, key)
            assert torch.equal(teachers.standardizers[name].state_dict()[key], value), (name, key)
            torch.testing.assert_close(refitted[name].state_dict()[key], value, rtol=1e-3, atol=1e-4)

    direct_file.unlink()
    config.stages["direct"].batch_size = 4
    calls = []
    monkeypatch.setattr(stage_teachers, "fit_standardizers", lambda *a: calls.append(1) or fitted(*a))
    stage_teachers.build_stage_teachers(config, "direct", run, cpu, views)
    assert calls == [1] and standardizers_key(direct_file) != standardizers_key(proxy_file)
    # other views give statistics well outside the rounding tolerance above
    other = load_standardizers(direct_file)
    for name, standardizer in proxy.items():
        assert not all(
            torch.allclose(other[name].state_dict()[key], value, rtol=1e-3, atol=1e-4)
            for key, value in standardizer.state_dict().items()
        ), name
