"""What a stage's targets are, and which source gives them.

A target source holds one teacher's standardised features at one teacher side and gives the rows of a
step's views (fixed views: view indices; a stream: sample ids) with `take`. Two sources exist: the feature
cache of fixed views (`CachedFeatures`, distill.targets.cache) and the feature store of a streamed corpus
(`StoreTargets`, distill.targets.store). Without either the teachers run online on each step's views.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from distill import distributed
from distill.config import RunConfig
from distill.data.training_data import FixedViews, TrainingData
from distill.features import Features
from distill.run_dir import RunDir
from distill.stage_teachers import StageTeachers
from distill.targets.cache import cached_targets
from distill.targets.store import FeatureStore, StoreTargets


@runtime_checkable
class TargetSource(Protocol):
    """One teacher's standardised features at one side, taken by view index or sample id."""

    def take(self, index: Tensor, device: torch.device | str) -> Features:
        """Rows `index` as float32 features on `device`."""
        ...


StageTargets = dict[tuple[str, int], TargetSource]  # (teacher, teacher side) -> its targets


def stage_targets(
    config: RunConfig,
    stage: str,
    run: RunDir,
    data: TrainingData,
    teachers: StageTeachers,
    ctx: distributed.Context,
    store: FeatureStore | None,
) -> StageTargets | None:
    """A stage's targets: from its feature store (`stage_store`) when it has one, else for fixed views with
    `train.feature_cache` from the feature cache (the main process fills it, the others read it after);
    None when the teachers run online on each step's views."""
    if store is not None:
        return {(n, store.side): StoreTargets(store, n, teachers.standardizers[n]) for n in teachers.teachers}
    if not (config.train.feature_cache and isinstance(data, FixedViews)):
        return None
    sides, root = config.stages[stage].teacher_sides, run.feature_cache
    targets = cached_targets(teachers, data, sides, root) if ctx.is_main else None
    distributed.barrier(ctx)
    return targets if ctx.is_main else cached_targets(teachers, data, sides, root)
