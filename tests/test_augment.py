"""Feature-consistent augmentation: crops and flips of views and of their cached teacher grids agree."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.augment import ViewTransforms, draw_transforms, transform_grid, transform_images

VIEW = 128  # view side in pixels
CELLS = 8  # crop grid: the student's patch grid of a 128 px view at patch 16


def coordinate_images(batch: int, side: int = VIEW) -> Tensor:
    """Images whose channels are the x and y view position of each pixel centre (and a constant)."""
    centres = (torch.arange(side) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y, torch.full_like(x, 0.5)]).expand(batch, 3, side, side).contiguous()


def pooling_teacher(images: Tensor, grid: int) -> Tensor:
    """A stand-in teacher: resize to a multiple of `grid` (as experts resize to their own input), then
    average-pool each cell, so every grid cell is the mean of the image over the region it covers."""
    stride = images.shape[-1] // grid
    if stride * grid != images.shape[-1]:
        images = F.interpolate(images, size=stride * grid, mode="bilinear", align_corners=False)
    return F.avg_pool2d(images, stride)


def sampled_positions(t: ViewTransforms, size: int, source: int) -> Tensor:
    """[B, 2, size, size] view positions (x, y) that a transformed size x size output should hold, for a
    source sampled bilinearly on `source` points per side (replicated within half a point of the border)."""
    fractions = (torch.arange(size) + 0.5) / size
    x0, y0, x1, y1 = t.boxes.unbind(-1)
    x = x0[:, None] + fractions * (x1 - x0)[:, None]
    y = y0[:, None] + fractions * (y1 - y0)[:, None]
    x = torch.where(t.flips[:, None], x.flip(-1), x).clamp(0.5 / source, 1 - 0.5 / source)
    y = y.clamp(0.5 / source, 1 - 0.5 / source)
    return torch.stack([x[:, None, :].expand(-1, size, -1), y[:, :, None].expand(-1, -1, size)], dim=1)


def interior_cells(t: ViewTransforms, grid: int) -> Tensor:
    """[B, 1, grid, grid] bool: transformed cells that neither side extrapolates past the view's border.

    A cell's centre must lie half a cell (the grid side replicates its outermost cells) plus 1.5 view
    pixels (the image side replicates its outermost pixels when zooming in) inside the view.
    """
    margin = 0.5 / grid + 1.5 / VIEW
    positions = sampled_positions(t, grid, source=10**9)
    return ((positions >= margin) & (positions <= 1 - margin)).all(dim=1, keepdim=True)


def drawn(batch: int, seed: int = 0, **kwargs: float) -> ViewTransforms:
    params = {"flip_p": 0.5, "crop_p": 0.75, "min_cells": 1} | kwargs
    return draw_transforms(batch, CELLS, torch.Generator().manual_seed(seed), **params)


@pytest.mark.parametrize("grid", [7, 16, 64])
def test_teacher_of_transformed_image_equals_transformed_cached_grid(grid: int) -> None:
    images = coordinate_images(32)
    t = drawn(32, seed=grid)
    live = pooling_teacher(transform_images(images, t, VIEW), grid)
    cached = transform_grid(pooling_teacher(images, grid), t)
    inside = interior_cells(t, grid).expand_as(live)
    assert inside.float().mean() > 0.3
    torch.testing.assert_close(live[inside], cached[inside], rtol=0, atol=1e-5)


@pytest.mark.parametrize("grid", [7, 16, 64])
def test_transformed_grid_cells_sample_the_box_positions(grid: int) -> None:
    t = drawn(32, seed=grid + 1)
    cached = transform_grid(pooling_teacher(coordinate_images(32), grid), t)
    torch.testing.assert_close(cached[:, :2], sampled_positions(t, grid, grid), rtol=0, atol=1e-6)


def test_transformed_image_pixels_sample_the_box_positions() -> None:
    t = drawn(32, seed=5)
    images = transform_images(coordinate_images(32), t, VIEW)
    torch.testing.assert_close(images[:, :2], sampled_positions(t, VIEW, VIEW), rtol=0, atol=1e-6)


def test_shrinking_averages_pixels() -> None:
    images = torch.rand(4, 3, VIEW, VIEW, generator=torch.Generator().manual_seed(0))
    t = drawn(4, crop_p=0.0)
    expected = F.avg_pool2d(images, 2)
    expected = torch.where(t.flips[:, None, None, None], expected.flip(-1), expected)
    torch.testing.assert_close(transform_images(images, t, VIEW // 2), expected, rtol=0, atol=1e-6)


def test_draw_is_reproducible_and_grid_aligned() -> None:
    first, second, other = drawn(256, seed=3), drawn(256, seed=3), drawn(256, seed=4)
    assert torch.equal(first.boxes, second.boxes) and torch.equal(first.flips, second.flips)
    assert not torch.equal(first.boxes, other.boxes)
    cells = first.boxes * CELLS
    assert torch.equal(cells, cells.round())
    assert first.boxes.min() >= 0 and first.boxes.max() <= 1
    sides = cells[:, 2] - cells[:, 0]
    assert torch.equal(sides, cells[:, 3] - cells[:, 1])
    assert sides[first.cropped].min() >= 1 and sides[first.cropped].max() <= CELLS - 1


def test_draw_covers_every_size_and_offset() -> None:
    t = drawn(4000, min_cells=3, crop_p=1.0)
    cells = (t.boxes * CELLS).long()
    sides = cells[:, 2] - cells[:, 0]
    assert set(sides.tolist()) == set(range(3, CELLS))
    for side in range(3, CELLS):
        offsets = cells[sides == side, :2]
        assert set(offsets.flatten().tolist()) == set(range(CELLS - side + 1))


def test_draw_rates() -> None:
    t = drawn(20000, flip_p=0.6, crop_p=0.3)
    assert abs(t.cropped.float().mean() - 0.3) < 0.02
    assert abs(t.flips.float().mean() - 0.6) < 0.02
    still = drawn(500, crop_p=0.0)
    assert torch.equal(still.boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(500, 4))


@pytest.mark.parametrize(
    "kwargs", [{"min_cells": 0}, {"min_cells": CELLS}, {"crop_p": 1.5}, {"flip_p": -0.1}]
)
def test_draw_rejects_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        drawn(4, **kwargs)


def test_identity_boxes_are_bit_exact() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 3, VIEW, VIEW), generator=generator).float().div(255)
    grid = torch.randn(8, 5, 7, 7, generator=generator).half()
    t = drawn(8, crop_p=0.0)
    assert t.flips.any() and not t.flips.all()
    flip = t.flips[:, None, None, None]
    assert torch.equal(transform_images(images, t, VIEW), torch.where(flip, images.flip(-1), images))
    out = transform_grid(grid, t)
    assert out.dtype == torch.float16 and torch.equal(out, torch.where(flip, grid.flip(-1), grid))


def test_uncropped_rows_of_a_mixed_batch_are_bit_exact() -> None:
    grid = torch.randn(64, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    t = drawn(64, crop_p=0.5)
    out = transform_grid(grid, t)
    kept = ~t.cropped & ~t.flips
    assert kept.any() and torch.equal(out[kept], grid[kept])
    assert not torch.equal(out[t.cropped], grid[t.cropped])


def test_half_precision_grid_matches_float32() -> None:
    grid = torch.randn(16, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    t = drawn(16, crop_p=1.0)
    out = transform_grid(grid.half(), t)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), transform_grid(grid.half().float(), t), rtol=1e-3, atol=1e-3)


def test_summary_valid_exactly_when_uncropped() -> None:
    boxes = torch.tensor([[0, 0, 1, 1], [0, 0, 0.5, 0.5], [0.125, 0, 1, 0.875], [0, 0, 1, 1.0]])
    t = ViewTransforms(boxes, torch.tensor([False, True, False, True]))
    assert t.cropped.tolist() == [False, True, True, False]
    assert torch.equal(t.summary_valid, ~t.cropped)
    many = drawn(1000)
    sides = (many.boxes[:, 2] - many.boxes[:, 0]) * CELLS
    assert torch.equal(many.summary_valid, sides == CELLS)
