"""The fixed set of training views a run distils on, from any image source, at one resolution.

Views are stored as uint8 [N, 3, R, R] (small, and exactly reproducible from the source spec, seed
and resolution), and resized per step when a stage trains on a resolution pyramid.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from distill.data.fashion_mnist import MISSING, fashion_sample, local_files
from distill.data.folder import ImageFolder
from distill.data.images import square_view, stack_views
from distill.data.natural import dead_leaves, natural_noise
from distill.data.photos import load_photo, photo_names
from distill.data.scenes import SceneGenerator
from distill.data.shards import TarShards
from distill.data.stamps import paste_stamps, stamp_files

DEFAULT_MIX = {"scenes": 0.75, "photos": 0.25}  # `mixed`: generated scenes, plus random crops of the photos
MIXABLE = ("scenes", "photos", "fashion", "leaves", "noise", "stamps")
SCENE_CHUNK = 256  # scenes rendered per generator call (bounds memory)


def photo_crops(count: int, resolution: int, seed: int, split: str = "train") -> Tensor:
    """`count` random square crops (side 30-100% of the shorter side, random flips) of the bundled photos
    of a split (`distill.data.photos.photo_names`): training views crop the `train` photos only."""
    generator = torch.Generator().manual_seed(seed)
    photos = [load_photo(name) for name in photo_names(split)]
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


def fashion_views(count: int, resolution: int, seed: int) -> Tensor:
    """`count` random Fashion-MNIST *train* images (unlabelled; the probes score on the test split), as RGB
    at `resolution`, randomly flipped."""
    generator = torch.Generator().manual_seed(seed)
    rgb = fashion_sample("train", count, resolution, generator)[0]
    flips = torch.rand(count, generator=generator) < 0.5
    return torch.where(flips[:, None, None, None], rgb.flip(-1), rgb)


def stamp_views(count: int, resolution: int, seed: int) -> Tensor:
    """`count` object views: backgrounds (half crops of the training photos, half dead leaves, shuffled;
    not those of the `photos` and `leaves` sources of the same seed) with Tux Paint's stamps pasted on them
    (`distill.data.stamps`)."""
    generator = torch.Generator().manual_seed(seed)
    photos_seed, leaves_seed = torch.randint(2**31, (2,), generator=generator).tolist()
    half = count // 2
    backgrounds = torch.cat(
        [photo_crops(half, resolution, photos_seed), dead_leaves(count - half, resolution, leaves_seed)]
    )
    return paste_stamps(backgrounds[torch.randperm(count, generator=generator)], generator)


def mixture_counts(count: int, mix: dict[str, float]) -> dict[str, int]:
    """Split `count` views over the mixture's sources by their shares (the last source takes the rest)."""
    unknown = sorted(set(mix) - set(MIXABLE))
    if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError(f"data.mix must give non-negative shares of {', '.join(MIXABLE)}, got {mix}")
    total, names = sum(mix.values()), list(mix)
    counts = {name: round(count * mix[name] / total) for name in names[:-1]}
    counts[names[-1]] = count - sum(counts.values())
    return counts


def missing_sources(mix: dict[str, float]) -> dict[str, str]:
    """The sources of the mixture with a share whose files are not installed (Fashion-MNIST, the stamps),
    each with what is missing."""
    missing = {}
    if mix.get("fashion", 0) > 0 and local_files("train") is None:
        missing["fashion"] = MISSING
    if mix.get("stamps", 0) > 0:
        try:
            stamp_files()
        except FileNotFoundError as error:
            missing["stamps"] = str(error)
    return missing


def available_mix(mix: dict[str, float]) -> dict[str, float]:
    """The mixture, the shares of sources whose files are missing given to generated scenes (with a
    warning each)."""
    missing = missing_sources(mix)
    for why in missing.values():
        warnings.warn(f"data.mix: {why}; its share goes to generated scenes", stacklevel=2)
    if not missing:
        return mix
    rest = {name: share for name, share in mix.items() if name not in missing}
    return rest | {"scenes": rest.get("scenes", 0) + sum(mix[name] for name in missing)}


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def build_views(
    source: str,
    count: int,
    resolution: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    mix: dict[str, float] | None = None,
) -> Tensor:
    """The fixed training views of a data source.

    Args:
        source: `scenes`, `photos` (crops of the training photos), `fashion` (Fashion-MNIST's train
            split), `leaves` (dead-leaves images), `noise` (1/f spectral noise; see `distill.data.natural`),
            `stamps` (Tux Paint's photographed objects on photo crops and dead leaves; see `stamp_views`),
            `mixed` (a mixture of those by `mix`), `folder:<path>` or `shards:<glob>`.
        count: number of views (for folders and shards: at most this many images, in order).
        resolution: square side.
        seed: seed of the generator and of crop sampling.
        device: where generated scenes are rendered (a GPU renders thousands per second).
        mix: `mixed`'s shares per source (default `DEFAULT_MIX`); a missing Fashion-MNIST's share goes to
            scenes.

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
    if kind == "fashion":
        return to_uint8(fashion_views(count, resolution, seed))
    if kind == "leaves":
        return to_uint8(dead_leaves(count, resolution, seed))
    if kind == "noise":
        return to_uint8(natural_noise(count, resolution, seed))
    if kind == "stamps":
        return to_uint8(stamp_views(count, resolution, seed))
    if kind == "mixed":
        counts = mixture_counts(count, available_mix(mix or DEFAULT_MIX))
        parts = [build_views(name, n, resolution, seed, device) for name, n in counts.items() if n > 0]
        images = torch.cat(parts)
        return images[torch.randperm(count, generator=torch.Generator().manual_seed(seed))]
    if kind in ("folder", "shards") and argument:
        reader = ImageFolder(argument) if kind == "folder" else TarShards(argument)
        return to_uint8(stack_views(reader, resolution, limit=count)[0])
    known = "scenes, photos, fashion, leaves, noise, stamps, mixed, folder:<path>, shards:<glob>"
    raise ValueError(f"unknown data source '{source}' ({known})")
