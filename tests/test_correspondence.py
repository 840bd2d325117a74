"""Patch matching between two feature grids, and the correspondence probe (PCK@0.1) built on it."""

from __future__ import annotations

import pytest
import torch

from distill.data.scenes import SceneGenerator
from workbench.eval.correspondence import (
    chance_pck,
    keypoint_hits,
    make_pairs,
    random_warp,
    scene_objects,
    warp_images,
    warp_points,
)
from workbench.eval.encoders import build_encoder
from workbench.eval.matching import match_points, mutual_matches, patch_centres
from workbench.eval.normalised import column_references, with_normalised_scores
from workbench.eval.probes import probe_columns
from workbench.eval.report import markdown_table
from workbench.eval.scoreboard import eval_data
from workbench.eval.settings import EvalSettings


def one_hot_grid(height: int, width: int) -> torch.Tensor:
    """[H*W, H, W] features where each patch is its own index, one-hot: injective and orthogonal."""
    return torch.eye(height * width).reshape(height * width, height, width)


def test_matching_a_grid_to_itself_returns_each_points_patch_centre():
    grid = one_hot_grid(3, 5)  # non-square
    points = torch.tensor([[0.0, 0.0], [0.99, 0.5], [1.0, 1.0], [0.45, 0.2]])
    matched = match_points(grid, grid, points)
    expected = torch.tensor([[0.1, 1 / 6], [0.9, 0.5], [0.9, 5 / 6], [0.5, 1 / 6]])
    torch.testing.assert_close(matched, expected)


def test_matching_across_grids_of_different_sizes_follows_the_features():
    # B is A upsampled 2x (each patch of A repeated over 2x2 patches of B): a point of A lands in its block
    grid_a = torch.randn(8, 2, 3)
    grid_b = grid_a.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    points = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.5, 0.7]])
    matched = match_points(grid_a, grid_b, points)
    # the first of each 2x2 block in row-major order wins the tie: centre of its top-left patch
    torch.testing.assert_close(matched, torch.tensor([[1 / 12, 1 / 8], [9 / 12, 5 / 8], [5 / 12, 5 / 8]]))
    with pytest.raises(ValueError, match="same channels"):
        match_points(grid_a, grid_b[:4], points)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        match_points(grid_a, grid_b, points + 1)


def test_mutual_matches_are_the_one_to_one_pairs_sorted_by_similarity():
    torch.manual_seed(0)
    grid = torch.randn(16, 4, 6)
    points_a, points_b, similarity = mutual_matches(grid, grid)
    # a grid against itself: every patch is its own mutual neighbour, at similarity 1
    assert len(points_a) == 24
    torch.testing.assert_close(points_a, points_b)
    torch.testing.assert_close(similarity, torch.ones(24))
    assert set(map(tuple, points_a.tolist())) == set(map(tuple, patch_centres(4, 6).tolist()))
    # two random grids of different sizes: pairs are mutual, sorted, and limited
    other = torch.randn(16, 5, 3)
    points_a, points_b, similarity = mutual_matches(grid, other, limit=3)
    assert len(points_a) <= 3 and bool((similarity[:-1] >= similarity[1:]).all())
    for pa, pb in zip(points_a, points_b, strict=True):
        assert torch.equal(match_points(grid, other, pa[None])[0], pb)
        assert torch.equal(match_points(other, grid, pb[None])[0], pa)


# -- the correspondence probe ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    """Eight generated 64 px scenes and their object ids."""
    generator = SceneGenerator(64, seed=3)
    batch = generator.batch(0, 8)
    return batch.images, scene_objects(batch.instances, generator.max_layers)


def test_a_warped_point_maps_back_through_the_inverse_warp():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(50, 2, dtype=torch.float64)
    for _ in range(10):
        warp = random_warp(generator)
        back = warp_points(torch.linalg.inv(warp), warp_points(warp, points))
        torch.testing.assert_close(back, points)
        assert not torch.allclose(warp_points(warp, points), points)  # it does move them


def test_a_shifted_image_at_a_shifted_point_is_the_original_at_the_point():
    image = torch.rand(1, 3, 16, 20)
    shift = torch.eye(3, dtype=torch.float64)
    shift[:2, 2] = torch.tensor([2 * 3 / 20, 2 * -2 / 16])  # 3 px right, 2 px up, in centred coordinates
    warped = warp_images(image, shift[None])
    points = torch.tensor([[4.5 / 20, 7.5 / 16], [10.5 / 20, 2.5 / 16], [16.5 / 20, 15.5 / 16]])
    moved = warp_points(shift, points)
    torch.testing.assert_close(moved, points + torch.tensor([3 / 20, -2 / 16]), check_dtype=False)
    for (x, y), (u, v) in zip(points * torch.tensor([20, 16]), moved * torch.tensor([20, 16]), strict=True):
        torch.testing.assert_close(warped[0, :, int(v), int(u)], image[0, :, int(y), int(x)])
    assert (warped[0, :, -2:] == 0).all()  # the bottom rows came from outside the image: black


def test_keypoints_lie_on_large_objects_and_are_dropped_when_they_leave_the_image(scenes):
    images, objects = scenes
    pairs = make_pairs("scenes_test", images, objects, seed=1)
    again = make_pairs("scenes_test", images, objects, seed=1)
    assert torch.equal(pairs.images, again.images) and torch.equal(pairs.points_a, again.points_a)
    assert 0 < pairs.valid.sum() < pairs.valid.numel()
    inside = ((pairs.points_b >= 0) & (pairs.points_b <= 1)).all(-1)
    for image_objects, points, valid, visible in zip(
        objects, pairs.points_a, pairs.valid, inside, strict=True
    ):
        if valid.any():  # the scene has a large object: every keypoint is on one, and counts if still visible
            ids = image_objects[(points[:, 1] * 64).long(), (points[:, 0] * 64).long()]
            assert (ids > 0).all() and torch.equal(valid, visible)
    assert (pairs.thresholds[pairs.valid] > 0).all()


def test_identity_warp_gives_pck_1_for_injective_features(scenes):
    images, objects = scenes
    pairs = make_pairs("scenes_test", images, objects, seed=1, warp=False)
    assert torch.equal(pairs.images, images) and pairs.valid.sum() > 20
    features = torch.randn(len(images), 8, 64, 64)  # one vector per pixel: injective
    hits = keypoint_hits(features, features, pairs)
    assert len(hits) == pairs.valid.sum() and hits.all()


def test_random_features_give_chance(scenes):
    images, objects = scenes
    pairs = make_pairs("scenes_test", images, objects, seed=1, keypoints=250)
    chance = chance_pck(pairs)
    assert 0.001 < chance < 0.05  # a disc of 0.1 x the object's box, against the whole image
    torch.manual_seed(0)
    hits = keypoint_hits(*torch.randn(2, len(images), 8, 64, 64), pairs)  # independent per pixel and image
    assert len(hits) > 1000
    spread = (chance * (1 - chance) / len(hits)) ** 0.5
    assert abs(hits.float().mean().item() - chance) < 4 * spread


def test_an_expert_lies_between_chance_and_perfect(scenes):
    images, objects = scenes
    pairs = make_pairs("scenes_test", images, objects, seed=1)
    expert = build_encoder("edges")  # HED: a 8 x 8 grid at 64 px
    pck = keypoint_hits(expert(images).patches, expert(pairs.images).patches, pairs).float().mean().item()
    assert 3 * chance_pck(pairs) < pck < 0.95


def test_the_column_is_on_the_scoreboard_and_enters_the_normalised_score():
    key = "correspondence_pck10"
    assert any(column.key == key for column in probe_columns())
    rows = [
        {"name": "e", "role": "expert", key: 0.6},
        {"name": "s", "role": "EUPE student (stages 1-2-3)", key: 0.3},
        {"name": "r", "role": "random init (floor)", key: 0.1},
    ]
    assert column_references(rows) == {key: (0.1, 0.6)}
    assert [row.get("normalised_score") for row in with_normalised_scores(rows)] == pytest.approx([1, 0.4, 0])
    assert "Corresp. PCK@0.1" in markdown_table(rows)


def test_a_negative_pair_count_is_refused_before_anything_is_built():
    settings = EvalSettings(correspondence_pairs=-1)
    with pytest.raises(ValueError, match="correspondence_pairs must be >= 0, got -1"):
        eval_data(settings)
