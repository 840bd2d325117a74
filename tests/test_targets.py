"""The teachers' targets: both sources behind one protocol give the same standardised targets of the same
views, and `stage_targets` picks the source a stage reads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill import distributed
from distill.config import load_config
from distill.data.training_data import FixedViews
from distill.features import Features
from distill.run_dir import RunDir
from distill.stage_teachers import StageTeachers
from distill.standardize import TeacherStandardizer
from distill.targets.cache import CachedFeatures, cached_targets
from distill.targets.source import TargetSource, stage_targets
from distill.targets.store import FeatureStore, StoreTargets
from distill.targets.store_format import StoreManifest
from distill.targets.store_write import write_shards

SIDE, GRID = 8, 4


class PoolingTeacher(nn.Module):
    """A stand-in teacher: summary = each image's channel means, patches = its 2x2 average pools."""

    summary_dim, patch_dim = 3, 3

    def forward(self, images: Tensor) -> Features:
        return Features(images.mean((2, 3)), F.avg_pool2d(images, SIDE // GRID))


def stage_teachers_of(views: Tensor) -> StageTeachers:
    """One stand-in teacher with a standardiser fitted on its outputs for `views` (not the identity)."""
    teacher, standardizer = PoolingTeacher(), TeacherStandardizer(3, 3)
    standardizer.fit([teacher(views.float().div(255))])
    return StageTeachers(
        {"t": teacher}, {"t": standardizer}, {"t": {"name": "pool"}}, {"t": 1.0}, torch.device("cpu")
    )


def stored_targets(root, views: Tensor, teachers: StageTeachers) -> StoreTargets:
    """The views' raw features written as a store (ids = view indices), read back standardised."""
    entry = {"name": "t", "identity": {"name": "pool"}, "summary_dim": 3, "patch_dim": 3}
    manifest = StoreManifest(
        "folder:x", count=len(views), side=SIDE, grid=GRID, shard_size=4, teachers=[entry]
    )
    manifest.save(root)
    write_shards(root, manifest, teachers, [(view, True) for view in views], 2, 0, print)
    return StoreTargets(FeatureStore(root), "t", teachers.standardizers["t"])


def test_both_sources_satisfy_the_protocol_and_give_the_same_standardised_targets(tmp_path):
    views = torch.randint(0, 256, (6, 3, SIDE, SIDE), generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )
    teachers = stage_teachers_of(views)
    cached = cached_targets(teachers, FixedViews(views, "views"), [SIDE], tmp_path / "cache")[("t", SIDE)]
    stored = stored_targets(tmp_path / "store", views, teachers)
    assert isinstance(cached, CachedFeatures) and isinstance(cached, TargetSource)
    assert isinstance(stored, TargetSource)
    index = torch.tensor([4, 0, 5, 2])
    from_cache, from_store = cached.take(index, "cpu"), stored.take(index, "cpu")
    expected = teachers.targets("t", views[index].float().div(255))
    assert from_store.patches.shape == from_cache.patches.shape == (4, 3, GRID, GRID)
    assert expected.patches.abs().max() > 0.5  # standardised: not all near zero
    for got in (from_cache, from_store):  # float16 on disk: standardised after (store) or before (cache)
        torch.testing.assert_close(got.summary, expected.summary, atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(got.patches, expected.patches, atol=2e-2, rtol=1e-2)


def test_stage_targets_reads_the_store_else_the_cache_of_fixed_views_else_none(tmp_path):
    views = torch.randint(0, 256, (6, 3, SIDE, SIDE), generator=torch.Generator().manual_seed(1)).to(
        torch.uint8
    )
    teachers, data = stage_teachers_of(views), FixedViews(views, "views")
    config = load_config("tiny")
    run, ctx = RunDir(tmp_path / "run"), distributed.context()
    store = stored_targets(tmp_path / "store", views, teachers).store
    from_store = stage_targets(config, "proxy", run, data, teachers, ctx, store)
    assert list(from_store) == [("t", SIDE)] and isinstance(from_store["t", SIDE], StoreTargets)
    from_cache = stage_targets(config, "proxy", run, data, teachers, ctx, None)
    sides = config.stages["proxy"].teacher_sides  # the cache holds every side the stage draws
    assert list(from_cache) == [("t", side) for side in sides]
    assert all(isinstance(source, CachedFeatures) for source in from_cache.values())
    assert run.feature_cache.is_dir()
    config.train.feature_cache = False
    assert stage_targets(config, "proxy", run, data, teachers, ctx, None) is None
