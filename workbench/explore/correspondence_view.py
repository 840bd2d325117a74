"""Two-image correspondence for the live demo: where each encoder matches a clicked point of image A in
image B, and its mutual nearest-neighbour patch matches drawn as lines from A to B.

Features come from the Explorer's `EncoderCache`, so a new click or the lines toggle recomputes nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.eval.correspondence import random_warp, warp_images, warp_points
from workbench.eval.matching import match_points, mutual_matches
from workbench.explore.explorer import Explorer, Panel, View
from workbench.viz.panels import mark_point, match_lines, rainbow

MAX_CELLS = 32 * 32  # mutual matching compares every pair of patches: finer grids are pooled to this
MAX_LINES = 40  # the most similar mutual matches drawn
CLICKED = (0, 255, 0)  # the clicked point and its matches
TRUTH = (255, 255, 255)  # where the clicked point truly lands in B, when B is a known warp of A


def add_warped(explorer: Explorer, key: str, seed: int) -> tuple[str, Tensor]:
    """Image B: the image `key` under the correspondence probe's random warp of a seed (black where it
    sees outside the image). Returns B's key and the warp, a [3, 3] homography (see `warp_points`)."""
    warp = random_warp(torch.Generator().manual_seed(int(seed)))
    return explorer.add_image(warp_images(explorer.cache.image(key)[None], warp[None])[0].clamp(0, 1)), warp


def point_in_b(warp: Tensor, point: tuple[float, float]) -> tuple[float, float] | None:
    """Where a normalised (x, y) point of A lands in B under `warp`, or None if it leaves the picture."""
    x, y = warp_points(warp, torch.tensor([point]))[0].tolist()
    return (x, y) if 0 <= x <= 1 and 0 <= y <= 1 else None


def coarse(grid: Tensor, cells: int = MAX_CELLS) -> Tensor:
    """A [C, h, w] grid average-pooled to at most `cells` patches (both sides divided by one factor)."""
    height, width = grid.shape[-2:]
    if height * width <= cells:
        return grid
    factor = math.ceil(math.sqrt(height * width / cells))
    size = (max(1, height // factor), max(1, width // factor))
    return F.adaptive_avg_pool2d(grid[None].float(), size)[0]


def correspondence(
    explorer: Explorer,
    key_a: str,
    key_b: str,
    specs: list[str],
    resolution: int,
    point: tuple[float, float],
    lines: bool = False,
    truth: tuple[float, float] | None = None,
) -> View:
    """One panel per encoder, captioned with its name: image B with a cross where the patch of A under
    `point` (x, y in [0, 1]) matches best; with `lines`, A and B side by side with the encoder's
    `MAX_LINES` most similar mutual nearest-neighbour matches (patch grids pooled to at most `MAX_CELLS`
    patches) as rainbow lines and the clicked match in green. `truth`, where the point truly is in B
    (B a known warp of A), is a white cross, and each note says how far the match is from it."""
    x, y = point
    view = View(notes=[f"best match in B of the point ({x:.2f}, {y:.2f}) of A"])
    picture_a, picture_b = explorer.picture(key_a, point), explorer.picture(key_b)
    if truth is not None:
        picture_b = mark_point(picture_b, truth, TRUTH)
        view.notes[0] += f"; white cross: where it truly is, ({truth[0]:.2f}, {truth[1]:.2f})"
    for spec, features in explorer.each_features(key_a, specs, resolution, view.notes):
        grid_a = features.patches[0]
        grid_b = explorer.cache.features(key_b, spec, resolution).patches[0]
        match = match_points(grid_a, grid_b, torch.tensor([point]))[0]
        name = explorer.encoder_name(spec)
        marked_b = mark_point(picture_b, (float(match[0]), float(match[1])), CLICKED)
        note = f"{name}: ({x:.2f}, {y:.2f}) → ({float(match[0]):.2f}, {float(match[1]):.2f})"
        if truth is not None:
            note += f" · off by {math.dist(truth, match.tolist()):.2f} of the side"
        if lines:
            points_a, points_b, _ = mutual_matches(coarse(grid_a), coarse(grid_b), MAX_LINES)
            count = len(points_a)
            picture = match_lines(
                picture_a,
                marked_b,
                torch.cat([points_a, torch.tensor([point])]),  # the clicked match last, on top
                torch.cat([points_b, match[None]]),
                [*rainbow(count), CLICKED],
                [1] * count + [3],
            )
            note += f" · {count} mutual matches drawn"
        else:
            picture = marked_b
        view.panels.append(Panel(picture, name))
        view.notes.append(note)
    return view
