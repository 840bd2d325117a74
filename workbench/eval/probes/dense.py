"""The dense probes' `run()`: a `DenseProbe` trained on the train scenes' patch grids against one of their
label fields, and scored on the test scenes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distill.data.scenes import SEGMENT_CLASSES
from workbench.eval.probes.dense_head import evaluate_dense_probe, train_dense_probe
from workbench.eval.probes.inputs import ProbeInputs
from workbench.eval.probes.registry import DenseTask, ProbeResult
from workbench.eval.settings import EvalSettings


def cap_grid(patches: Tensor, side: int) -> Tensor:
    """Area-pool a patch grid whose sides exceed `side` (e.g. CRAFT's stride-2 grid) to at most `side`."""
    if max(patches.shape[-2:]) <= side:
        return patches
    size = (min(side, patches.shape[-2]), min(side, patches.shape[-1]))
    return F.adaptive_avg_pool2d(patches.float(), size).half()


def dense_probe(dense: DenseTask, inputs: ProbeInputs, settings: EvalSettings) -> ProbeResult:
    """A linear probe on patch grids (BatchNorm + 1x1 conv, grids capped at `settings.max_grid`), trained for
    `settings.probe_steps` from `settings.seed`; its scores under the row's keys, and the trained head."""
    train_labels = getattr(inputs.data.scenes_train, dense.labels)
    test_labels = getattr(inputs.data.scenes_test, dense.labels)
    train_patches, test_patches = (
        cap_grid(inputs.features(split).patches, settings.max_grid)
        for split in ("scenes_train", "scenes_test")
    )
    probe = train_dense_probe(
        dense.task,
        train_patches,
        train_labels,
        len(SEGMENT_CLASSES) if dense.task == "segmentation" else None,
        steps=settings.probe_steps,
        seed=settings.seed,
    )
    scores = evaluate_dense_probe(probe, test_patches, test_labels, dense.tolerance)
    return ProbeResult({key: scores[k] for k, key in dense.scores.items()}, probe)
