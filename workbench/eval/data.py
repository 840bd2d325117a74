"""The held-out evaluation sets: generated scenes with exact labels, Fashion-MNIST, photo crops, and warped
copies of some scenes and crops for the correspondence probe."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data.fashion_mnist import fashion_sample
from distill.data.scenes import SceneBatch, SceneGenerator
from distill.data.views import photo_crops
from workbench.eval.correspondence import WarpedPairs, central_box, make_pairs, scene_objects

EVAL_SEED_OFFSET = 7919  # evaluation scenes and crops use seeds no training run uses by default


@dataclass
class LabeledSplit:
    """Images [N, 3, R, R] in [0, 1] with class labels [N]."""

    images: Tensor
    labels: Tensor


@dataclass
class EvalData:
    """Everything the probes read.

    Attributes:
        scenes_train, scenes_test: generated scenes (class, segmentation, depth, edges, text labels).
        fashion_train, fashion_test: Fashion-MNIST subsets (None when the dataset is not installed).
        photos: crops of the bundled photos of the settings' split (by default the held-out ones, which no
            training view crops), for agreement with the experts' own outputs.
        scene_pairs, photo_pairs: warped copies of the first test scenes and photo crops, with keypoints.
    """

    scenes_train: SceneBatch
    scenes_test: SceneBatch
    fashion_train: LabeledSplit | None
    fashion_test: LabeledSplit | None
    photos: Tensor
    scene_pairs: WarpedPairs
    photo_pairs: WarpedPairs


def fashion_subset(split: str, count: int, resolution: int, seed: int) -> LabeledSplit:
    """A seeded random subset of a Fashion-MNIST split as RGB images at `resolution`."""
    return LabeledSplit(*fashion_sample(split, count, resolution, torch.Generator().manual_seed(seed)))


def build_eval_data(
    resolution: int,
    scene_train: int,
    scene_test: int,
    fashion_train: int,
    fashion_test: int,
    photos: int,
    seed: int,
    fashion_resolution: int,
    correspondence_pairs: int,
    photo_split: str = "held_out",
) -> EvalData:
    """Build the evaluation sets (deterministic for a seed).

    Scenes and photo crops are at `resolution`; Fashion-MNIST's 28 px images are upsampled to
    `fashion_resolution`. Scenes come from a generator seed offset from training's, so no evaluation
    scene is a training view; the photo crops are of the `photo_split` photos: by default the held-out ones,
    which training views never crop (`train`: new crops of the photos they do crop).
    The correspondence pairs warp the first `correspondence_pairs` test scenes and crops (or all of them).
    """
    if correspondence_pairs < 0:
        raise ValueError(f"correspondence_pairs must be >= 0, got {correspondence_pairs}")
    generator = SceneGenerator(resolution, seed=seed + EVAL_SEED_OFFSET)
    scenes_train = generator.batch(0, scene_train)
    scenes_test = generator.batch(scene_train, scene_test)
    try:
        fashion = (
            fashion_subset("train", fashion_train, fashion_resolution, seed),
            fashion_subset("test", fashion_test, fashion_resolution, seed),
        )
    except FileNotFoundError as error:
        warnings.warn(f"Fashion-MNIST probes skipped: {error}", stacklevel=2)
        fashion = (None, None)
    crops = photo_crops(photos, resolution, seed + EVAL_SEED_OFFSET, split=photo_split)
    scenes = scenes_test.images[:correspondence_pairs]
    objects = scene_objects(scenes_test.instances[: len(scenes)], generator.max_layers)
    scene_pairs = make_pairs("scenes_test", scenes, objects, seed + EVAL_SEED_OFFSET)
    crops_a = crops[:correspondence_pairs]
    photo_pairs = make_pairs("photos", crops_a, central_box(len(crops_a), *crops_a.shape[-2:]), seed)
    return EvalData(scenes_train, scenes_test, *fashion, crops, scene_pairs, photo_pairs)
