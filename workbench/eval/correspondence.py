"""A training-free correspondence probe: PCK@0.1 of patch matching between an image and a warped copy.

Each pair is an evaluation image A and B = A under a known random homography (scale 0.7-1.4, rotation,
shift, mild perspective) after photometric jitter (brightness, contrast, saturation); pixels of B that
come from outside A are black. Keypoints are pixel centres of A on an "object": for generated scenes, a
visible object layer (a sign with its characters counts as one) whose bounding box spans at least
`MIN_OBJECT_SIDE` of the image; for photo crops, which have no labels, the central box of half the
image's side. A keypoint whose warped position leaves B is dropped.

Matching: a keypoint's feature is A's patch grid interpolated bilinearly at the keypoint; it goes to
the centre of the most cosine-similar cell of B's patch grid upsampled bilinearly to `UPSAMPLE` cells per
patch side, at most one per pixel (`match_features`; patch-level matching would leave even a perfect
encoder an error of up to half a patch, above most thresholds at these resolutions). A keypoint is
correct when that lies within `ALPHA` x max(height, width) of its object's bounding box in B (the
extent of the object's visible warped pixels) from its true warped position: PCK@0.1, as SPair-71k's
(which names the object box in the target image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.eval.matching import match_features

ALPHA = 0.1  # the PCK threshold, as a fraction of the larger side of the object's box in B
KEYPOINTS = 20  # per pair
UPSAMPLE = 4  # matching cells per patch side, in B's upsampled grid
MIN_OBJECT_SIDE = 0.25  # of the image side: smaller objects get no keypoints
SCALES = (0.7, 1.4)
MAX_ROTATION = math.radians(20)
MAX_SHIFT = 0.15  # of the image's half-side
MAX_PERSPECTIVE = 0.15  # per axis, in coordinates centred on the image with half-side 1
JITTER = 0.2  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]


@dataclass
class WarpedPairs:
    """B images for the first `len(images)` images of an evaluation split (the A images), and keypoints.

    Attributes:
        source: the `EvalData` split that holds the A images: "scenes_test" or "photos".
        images: [N, 3, H, W] the B images.
        warps: [N, 3, 3] homographies from A to B in centred coordinates (see `warp_points`).
        points_a: [N, K, 2] keypoints, normalised (x, y) in A.
        points_b: [N, K, 2] their true positions in B.
        thresholds: [N, K] ALPHA x the larger side of the keypoint's object box in B, in B's pixels.
        valid: [N, K] whether the keypoint counts (on an object, and still inside B).
    """

    source: str
    images: Tensor
    warps: Tensor
    points_a: Tensor
    points_b: Tensor
    thresholds: Tensor
    valid: Tensor

    def __len__(self) -> int:
        return len(self.images)


def _uniform(generator: torch.Generator, low: float, high: float, count: int = 1) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def random_warp(generator: torch.Generator) -> Tensor:
    """A [3, 3] homography in centred coordinates: perspective, then scale, rotation and shift."""
    scale = math.exp(_uniform(generator, *map(math.log, SCALES)).item())
    angle = _uniform(generator, -MAX_ROTATION, MAX_ROTATION).item()
    shift = _uniform(generator, -MAX_SHIFT, MAX_SHIFT, 2)
    tilt = _uniform(generator, -MAX_PERSPECTIVE, MAX_PERSPECTIVE, 2)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    similarity = torch.tensor(
        [[cos, -sin, shift[0]], [sin, cos, shift[1]], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    perspective = torch.eye(3, dtype=torch.float64)
    perspective[2, :2] = tilt
    return similarity @ perspective


def warp_points(warp: Tensor, points: Tensor) -> Tensor:
    """Points [..., 2] normalised (x, y) in [0, 1] through a [3, 3] homography of centred coordinates
    (u = 2x - 1, v = 2y - 1: the image spans [-1, 1] on both axes), back in normalised coordinates."""
    centred = torch.cat([points.double() * 2 - 1, torch.ones_like(points[..., :1], dtype=torch.float64)], -1)
    mapped = centred @ warp.double().T
    return ((mapped[..., :2] / mapped[..., 2:]) + 1) / 2


def pixel_centres(height: int, width: int) -> Tensor:
    """[H, W, 2] normalised (x, y) centres of an image's pixels."""
    ys, xs = torch.meshgrid(
        (torch.arange(height, dtype=torch.float64) + 0.5) / height,
        (torch.arange(width, dtype=torch.float64) + 0.5) / width,
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)


def warp_images(images: Tensor, warps: Tensor) -> Tensor:
    """Images [N, 3, H, W] under homographies [N, 3, 3] (bilinear; black where B sees outside A)."""
    centres = pixel_centres(*images.shape[-2:])
    sources = torch.stack([warp_points(torch.linalg.inv(w), centres) for w in warps])
    return F.grid_sample(images, (sources * 2 - 1).to(images.dtype), align_corners=False)


def jitter(image: Tensor, generator: torch.Generator) -> Tensor:
    """An image [3, H, W] in [0, 1] with random brightness, contrast and saturation."""
    brightness, contrast, saturation = _uniform(generator, 1 - JITTER, 1 + JITTER, 3).tolist()
    image = image * brightness
    image = (image - image.mean()) * contrast + image.mean()
    grey = image.mean(0, keepdim=True)
    return ((image - grey) * saturation + grey).clamp(0, 1)


def scene_objects(instances: Tensor, layers: int) -> Tensor:
    """Object ids [N, H, W] from generated scenes' instance ids: characters join their sign's layer."""
    return torch.where(instances > layers, instances - layers - 1, instances)


def central_box(count: int, height: int, width: int) -> Tensor:
    """Object ids [N, H, W]: 1 on the central box of half each side, 0 elsewhere."""
    inside = (pixel_centres(height, width) - 0.5).abs().amax(-1) < 0.25
    return inside.long().expand(count, height, width)


def _extents(points: Tensor, objects: Tensor, keep: Tensor, count: int) -> Tensor:
    """[count] larger side of each object's box, over `points` [P, 2] with ids `objects` [P] where `keep`."""
    sides = torch.zeros(count, dtype=torch.float64)
    ids = objects[keep]
    for axis in range(2):
        values = points[keep, axis]
        high = torch.full((count,), -math.inf, dtype=torch.float64).scatter_reduce(0, ids, values, "amax")
        low = torch.full((count,), math.inf, dtype=torch.float64).scatter_reduce(0, ids, values, "amin")
        sides = torch.maximum(sides, (high - low).nan_to_num(0.0, neginf=0.0))
    return sides


def make_pairs(
    source: str, images: Tensor, objects: Tensor, seed: int, warp: bool = True, keypoints: int = KEYPOINTS
) -> WarpedPairs:
    """Warped pairs of images [N, 3, H, W] with object ids [N, H, W] (0: no object), deterministic for a seed.

    Args:
        source: the split the images are the first of (recorded in the result).
        warp: False gives identity warps and no jitter (B = A), for checking.
        keypoints: keypoints per pair.
    """
    generator = torch.Generator().manual_seed(seed)
    count, _, height, width = images.shape
    if count == 0:
        points = torch.zeros(0, keypoints, 2)
        warps = torch.zeros(0, 3, 3, dtype=torch.float64)
        valid = torch.zeros(0, keypoints, dtype=torch.bool)
        return WarpedPairs(source, images, warps, points, points, torch.zeros(0, keypoints), valid)
    scale = torch.tensor([width, height], dtype=torch.float64)
    centres = pixel_centres(height, width).flatten(0, 1)
    outputs: dict[str, list[Tensor]] = {k: [] for k in ("images", "warps", "a", "b", "thresholds", "valid")}
    for image, ids in zip(images, objects.flatten(1), strict=True):
        homography = random_warp(generator) if warp else torch.eye(3, dtype=torch.float64)
        image_b = jitter(image, generator) if warp else image
        labels = int(ids.max()) + 1
        sides_a = _extents(centres, ids, ids > 0, labels)
        eligible = (ids > 0) & (sides_a[ids] >= MIN_OBJECT_SIDE)
        if eligible.any():
            chosen = torch.multinomial(eligible.double(), keypoints, replacement=True, generator=generator)
        else:
            chosen = torch.zeros(keypoints, dtype=torch.long)
        warped = warp_points(homography, centres)
        inside = ((warped >= 0) & (warped <= 1)).all(-1)
        box_b = _extents(warped * scale, ids, (ids > 0) & inside, labels)
        outputs["images"].append(image_b)
        outputs["warps"].append(homography)
        outputs["a"].append(centres[chosen])
        outputs["b"].append(warped[chosen])
        outputs["thresholds"].append(ALPHA * box_b[ids[chosen]])
        outputs["valid"].append(eligible[chosen] & inside[chosen])
    stacked = {k: torch.stack(v) for k, v in outputs.items()}
    stacked["images"] = warp_images(stacked["images"], stacked["warps"])
    return WarpedPairs(
        source, stacked["images"], stacked["warps"], stacked["a"].float(), stacked["b"].float(),
        stacked["thresholds"].float(), stacked["valid"],
    )  # fmt: skip


def keypoint_features(grid: Tensor, points: Tensor) -> Tensor:
    """[N, C] features of a patch grid [C, h, w] at normalised points [N, 2], interpolated bilinearly
    between patch centres (the nearest edge patch's beyond them)."""
    where = (points.float() * 2 - 1)[None, None]
    sampled = F.grid_sample(grid[None].float(), where, align_corners=False, padding_mode="border")
    return sampled[0, :, 0].T


def upsampled(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """A patch grid [C, h, w] upsampled bilinearly to `UPSAMPLE` cells per patch side, at most `size`."""
    cells = tuple(min(UPSAMPLE * side, limit) for side, limit in zip(grid.shape[-2:], size, strict=True))
    return F.interpolate(grid[None].float(), cells, mode="bilinear")[0]


def keypoint_hits(grids_a: Tensor, grids_b: Tensor, pairs: WarpedPairs) -> Tensor:
    """Whether each valid keypoint's match lies within its threshold: a flat bool tensor over the pairs.

    Args:
        grids_a: [N, C, h, w] patch features of the A images (any grid size).
        grids_b: [N, C, h', w'] patch features of the B images.
    """
    size = tuple(pairs.images.shape[-2:])
    scale = torch.tensor([size[1], size[0]], dtype=torch.float32)
    hits = []
    for grid_a, grid_b, a, b, threshold, valid in zip(
        grids_a, grids_b, pairs.points_a, pairs.points_b, pairs.thresholds, pairs.valid, strict=True
    ):
        if valid.any():
            predicted = match_features(keypoint_features(grid_a, a[valid]), upsampled(grid_b, size))
            hits.append(((predicted - b[valid]) * scale).norm(dim=-1) <= threshold[valid])
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def chance_pck(pairs: WarpedPairs) -> float:
    """The expected PCK of a match drawn uniformly among B's pixel cells (what random features give)."""
    height, width = pairs.images.shape[-2:]
    scale = torch.tensor([width, height], dtype=torch.float64)
    cells = pixel_centres(height, width).flatten(0, 1) * scale
    rates = [
        ((cells - point.double() * scale).norm(dim=-1) <= threshold).double().mean()
        for point, threshold in zip(pairs.points_b[pairs.valid], pairs.thresholds[pairs.valid], strict=True)
    ]
    return torch.stack(rates).mean().item() if rates else math.nan
