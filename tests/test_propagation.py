"""Generated clips with exact masks, and the video label propagation probe on them."""

from __future__ import annotations

import pytest
import torch

from distill.data.clips import ClipGenerator
from distill.data.scenes import SceneGenerator
from workbench.eval.encoders import EncoderFeatures
from workbench.eval.propagation import (
    PropagationSettings,
    at_grid,
    boundary,
    clip_scores,
    one_hot,
    propagate,
    propagation_scores,
    region_and_boundary,
    segment,
)

SIDE, GRID, FRAMES = 64, 16, 4  # the stand-in encoders' grid: 4 px patches


@pytest.fixture(scope="module")
def generator():
    return ClipGenerator(SIDE, frames=FRAMES, seed=2)


@pytest.fixture(scope="module")
def clips(generator):
    return generator.batch(0, 2)


def first_frame_objects(truth: torch.Tensor, least: int) -> torch.Tensor:
    """Masks [T, h, w] keeping only the objects with at least `least` cells in frame 0, renumbered 1..K."""
    counts = torch.bincount(truth[0].flatten(), minlength=int(truth.max()) + 1)
    kept = counts >= least
    kept[0] = False
    return torch.where(kept, kept.long().cumsum(0), 0)[truth]


class Oracle:
    """A stand-in encoder whose patch features are the true labels: each frame's mask at the grid, one-hot."""

    def __init__(self, clips, truths: list[torch.Tensor]) -> None:
        self.clips, self.truths = clips, truths
        self.count = max(int(t.max()) for t in truths) + 1

    def __call__(self, images: torch.Tensor) -> EncoderFeatures:
        n = next(i for i, frames in enumerate(self.clips.frames) if torch.equal(frames, images))
        patches = one_hot(self.truths[n], self.count)
        return EncoderFeatures(patches.mean((-2, -1)), patches)


class Noise:
    """A stand-in encoder whose patch features are noise, independent of the images."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, images: torch.Tensor) -> EncoderFeatures:
        patches = torch.randn(len(images), 32, GRID, GRID, generator=self.generator)
        return EncoderFeatures(patches.mean((-2, -1)), patches)


def test_clips_start_from_the_seed_s_scenes_and_move_their_first_frame_objects(generator, clips):
    assert clips.frames.shape == (2, FRAMES, 3, SIDE, SIDE) and clips.masks.shape == (2, FRAMES, SIDE, SIDE)
    scene = SceneGenerator(SIDE, seed=2, max_layers=6).batch(1, 1)
    unscaled = ClipGenerator(SIDE, frames=2, seed=2, object_scale=1.0).batch(1, 1)
    assert torch.equal(unscaled.frames[0, 0], scene.images[0])  # frame 0 is the scene itself
    again = generator.batch(1, 1)  # the same clip in another batch
    assert torch.equal(again.frames[0], clips.frames[1]) and torch.equal(again.masks[0], clips.masks[1])
    for masks in clips.masks:
        objects = int(masks[0].max())
        assert objects >= 1 and set(masks[0].unique().tolist()) == set(range(objects + 1))
        assert int(masks.max()) == objects  # later frames name only the first frame's objects
        assert not torch.equal(masks[0], masks[-1])  # something moved
    with pytest.raises(ValueError, match="frames >= 2"):
        ClipGenerator(SIDE, frames=1)


def test_oracle_features_propagate_the_labels_exactly_at_the_patch_grid(clips):
    """With features = one-hot true labels, a patch's k most similar context patches (cosine 1 against 0)
    all carry its own label once frame 0 holds at least k of them, so every frame is exact. Compared at the
    patch grid (masks downsampled as the first frame's labels are): at pixels, patch-sized blocks cannot
    follow the shapes' outlines, whatever the features."""
    settings = PropagationSettings()
    truths = [first_frame_objects(at_grid(m, (GRID, GRID)), settings.top_k) for m in clips.masks]
    assert all(int(t.max()) >= 1 for t in truths)
    predicted = []
    for truth in truths:
        count = int(truth.max()) + 1
        soft = propagate(one_hot(truth, count), one_hot(truth[0], count), settings)
        predicted.append(segment(soft, (GRID, GRID)))
    scores = clip_scores(predicted, truths)
    assert scores == {"propagation_j": 1.0, "propagation_f": 1.0, "propagation_jf": 1.0}


def test_the_probe_scores_an_oracle_high_and_noise_features_low(clips):
    """Through `propagation_scores` at pixels: the oracle (true labels at the grid) loses only the blocks'
    outlines; noise features pick context patches regardless of place, so each prediction is independent of
    where the object now is, and a mask independent of the truth has an expected IoU of at most the
    object's share of the frame (|P n T| ~ |P| |T| / N and |P u T| >= max(|P|, |T|))."""
    truths = [at_grid(m, (GRID, GRID)) for m in clips.masks]
    oracle = propagation_scores(Oracle(clips, truths), clips)
    noise = propagation_scores(Noise(), clips)
    shares = torch.cat([torch.bincount(m[1:].flatten())[1:] / m[1:].numel() for m in clips.masks])
    assert oracle["propagation_j"] > 0.7 and oracle["propagation_f"] > 0.7  # measured 0.84 and 0.80
    assert noise["propagation_j"] < shares.mean().item() + 0.05  # measured 0.064 against 0.12 + 0.05
    assert oracle["propagation_jf"] > noise["propagation_jf"] + 0.5


def test_region_and_boundary_by_hand():
    truth = torch.zeros(1, 20, 20, dtype=torch.long)
    truth[0, 5:15, 5:15] = 1
    shifted = torch.zeros_like(truth)
    shifted[0, 5:15, 7:17] = 1  # two columns right
    j, f = region_and_boundary(shifted, truth, 1)
    assert j.item() == pytest.approx(80 / 120)
    # 36 boundary pixels each; within 1 px (0.008 of a 28 px diagonal, rounded up) of the other's: 9 of
    # each horizontal edge and the 2 end pixels of one vertical side, so precision = recall = 20 / 36
    assert boundary(truth[0] == 1).sum() == 36
    assert f.item() == pytest.approx(20 / 36)
    j, f = region_and_boundary(truth, torch.zeros_like(truth), 1)  # an object gone and predicted
    assert j.item() == 0 and f.item() == 0
    j, f = region_and_boundary(torch.zeros_like(truth), torch.zeros_like(truth), 1)  # gone, and not seen
    assert j.item() == 1 and f.item() == 1


def test_propagation_takes_the_top_k_of_the_first_and_previous_frames():
    # one feature per patch on a 1x2 grid: frame 0 (labels 0 | 1), frame 1, frame 2 a copy of frame 1
    grids = torch.tensor(
        [[[[1.0, 0.0]], [[0.0, 1.0]]], [[[0.0, 1.0]], [[1.0, 0.0]]], [[[0.0, 1.0]], [[1.0, 0.0]]]]
    )
    first = one_hot(torch.tensor([[0, 1]]), 2)
    soft = propagate(grids, first, PropagationSettings(top_k=1))
    assert soft[1].argmax(0).tolist() == [[1, 0]]  # the patches swapped places, the labels follow
    weights = torch.softmax(torch.tensor([1.0, 0.0]) / 0.1, 0)  # top 2 of frame 0 alone, temperature 0.1
    soft = propagate(grids[:2], first, PropagationSettings(top_k=2))
    assert torch.allclose(soft[1, :, 0, 0], weights.flip(0))
    near = propagate(grids[:2], first, PropagationSettings(top_k=1, neighbourhood=0))
    assert near[1].argmax(0).tolist() == [[0, 1]]  # only the patch in the same place may lend its label
    with pytest.raises(ValueError, match="top_k >= 1"):
        PropagationSettings(top_k=0)
