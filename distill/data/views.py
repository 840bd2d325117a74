"""The fixed set of training views a run distils on, from any image source, at one resolution.

Views are stored as uint8 [N, 3, R, R] (small, and exactly reproducible from the source spec, seed
and resolution), and resized per step when a stage trains on a resolution pyramid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.data.folder import ImageFolder
from distill.data.images import square_view, stack_views
from distill.data.photos import load_photo, photo_names
from distill.data.scenes import SceneGenerator
from distill.data.shards import TarShards

SCENE_SHARE_OF_MIXED = 0.75  # `mixed`: generated scenes, plus random crops of the bundled photos
SCENE_CHUNK = 256  # scenes rendered per generator call (bounds memory)


def photo_crops(count: int, resolution: int, seed: int) -> Tensor:
    """`count` random square crops (side 30-100% of the shorter side, random flips) of the bundled photos."""
    generator = torch.Generator().manual_seed(seed)
    photos = [load_photo(name) for name in photo_names()]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[-2:]
        side = int(min(height, width) * (0.3 + 0.7 * torch.rand((), generator=generator).item()))
        top = int(torch.randint(0, height - side + 1, (), generator=generator))
        left = int(torch.randint(0, width - side + 1, (), generator=generator))
        crop = photo[:, top : top + side, left : left + side]
        if torch.rand((), generator=generator) < 0.5:
            crop = crop.flip(-1)
        crops.append(square_view(crop, resolution))
    return torch.stack(crops)


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def build_views(
    source: str, count: int, resolution: int, seed: int = 0, device: str | torch.device = "cpu"
) -> Tensor:
    """The fixed training views of a data source.

    Args:
        source: `scenes`, `photos`, `mixed`, `folder:<path>` or `shards:<glob>`.
        count: number of views (for folders and shards: at most this many images, in order).
        resolution: square side.
        seed: seed of the generator and of crop sampling.
        device: where generated scenes are rendered (a GPU renders thousands per second).

    Returns:
        uint8 tensor [N, 3, R, R] on the CPU.
    """
    kind, _, argument = source.partition(":")
    if kind == "scenes":
        generator = SceneGenerator(resolution, device=device, seed=seed)
        chunks = range(0, count, SCENE_CHUNK)
        return torch.cat(
            [to_uint8(generator.batch(s, min(SCENE_CHUNK, count - s)).images).cpu() for s in chunks]
        )
    if kind == "photos":
        return to_uint8(photo_crops(count, resolution, seed))
    if kind == "mixed":
        scenes = round(count * SCENE_SHARE_OF_MIXED)
        parts = [
            build_views("scenes", scenes, resolution, seed),
            build_views("photos", count - scenes, resolution, seed),
        ]
        images = torch.cat(parts)
        return images[torch.randperm(count, generator=torch.Generator().manual_seed(seed))]
    if kind in ("folder", "shards") and argument:
        reader = ImageFolder(argument) if kind == "folder" else TarShards(argument)
        return to_uint8(stack_views(reader, resolution, limit=count)[0])
    raise ValueError(f"unknown data source '{source}' (scenes, photos, mixed, folder:<path>, shards:<glob>)")
