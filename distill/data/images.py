"""Decoding image bytes to tensors, and resizing them to a square training view or a native-aspect one."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# What decoding an unreadable image raises: corrupt or truncated data, an unknown or unconvertible format,
# and decompression bombs (PIL refuses, from the header alone, an image of over 2 x MAX_IMAGE_PIXELS).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# The full-scale value of the greyscale modes of more than 8 bits: 16-bit PNGs and TIFFs open as I;16*
# (as mode I in older Pillows, hence 16-bit there too); F (float) images hold [0, 1].
FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
REDUCING_GAP = 2  # a large image is box-reduced while it keeps at least this many pixels per pixel drawn
DECODED_SIDE = 1024  # the largest side a reader of decoded images (`decode_image`) draws a view at
# the modes PIL cannot box-reduce, and the mode each is converted to first (the same pixel values)
REDUCIBLE = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}


def deep_grey_tensor(image: Image.Image) -> Tensor:
    """A [3, H, W] tensor in [0, 1] of a greyscale image of a `FULL_SCALE` mode, scaled by its full scale.

    Raises:
        ValueError: a value outside 0 .. full scale (e.g. mode I holding 32-bit data).
    """
    full = FULL_SCALE[image.mode]
    array = np.asarray(image, dtype=np.float32)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > full:
        raise ValueError(f"a mode {image.mode} image with values {low:g} .. {high:g}, outside 0 .. {full:g}")
    return torch.from_numpy(array / full).expand(3, *array.shape).contiguous()


def pil_to_tensor(image: Image.Image) -> Tensor:
    """RGB float tensor [3, H, W] in [0, 1]; greyscale is replicated (16-bit and float greyscale scaled by
    their full scale), alpha is composited over white."""
    if image.mode in FULL_SCALE:
        return deep_grey_tensor(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def array_to_tensor(array: np.ndarray) -> Tensor:
    """RGB float tensor [3, H, W] in [0, 1] from a uint8/bool/float HxW or HxWxC array."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(array * 255 if array.max() <= 1 else array, 0, 255).astype(np.uint8)
    return pil_to_tensor(Image.fromarray(array))


def reduction(region: float, side: int) -> int:
    """The integer factor by which an image may be reduced when a region of it, `region` pixels on its
    shorter side, is drawn at `side` pixels: the largest that keeps `REDUCING_GAP` pixels per pixel drawn."""
    return max(1, int(region // (REDUCING_GAP * side)))


def reduced(image: Image.Image, factor: int) -> Image.Image:
    """A loaded image box-reduced by `factor` in its own pixel values (a JPEG should be drafted before it
    is loaded): memory grows with the result, not with a float copy at full size."""
    if factor < 2:
        return image
    if image.mode in REDUCIBLE:
        transparent = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGB" if image.mode == "P" and not transparent else REDUCIBLE[image.mode])
    return image.reduce(factor)


def decode_image(data: bytes, side: int = DECODED_SIDE) -> Tensor:
    """Decode JPEG/PNG/WebP bytes fully (truncated files raise) to a [3, H, W] tensor in [0, 1]; an image
    much larger than views of `side` need is drafted (JPEG) and box-reduced first (`reduction`)."""
    with Image.open(io.BytesIO(data)) as image:
        factor = reduction(min(image.size), side)
        image.draft(image.mode, (image.size[0] // factor, image.size[1] // factor))
        image.load()
        return pil_to_tensor(reduced(image, reduction(min(image.size), side)))


def square_view(image: Tensor, resolution: int) -> Tensor:
    """Resize so the shorter side is `resolution` (antialiased bilinear), then centre-crop a square."""
    height, width = image.shape[-2:]
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return resized[:, top : top + resolution, left : left + resolution].clamp_(0, 1)


def native_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """(height, width) with an image's aspect ratio and the pixel area of a `resolution` square, each side
    the nearest multiple of `multiple` (at least one)."""
    scale = resolution / (height * width) ** 0.5
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (height, width))


def native_view(image: Tensor, resolution: int, multiple: int) -> Tensor:
    """An image [..., 3, H, W] resized to its `native_size` (antialiased bilinear): no crop, no squash."""
    size = native_size(*image.shape[-2:], resolution, multiple)
    if tuple(image.shape[-2:]) == size:
        return image
    batch = image if image.ndim == 4 else image[None]
    resized = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return (resized if image.ndim == 4 else resized[0]).clamp(0, 1)


def resize(images: Tensor, side: int) -> Tensor:
    """A [B, 3, H, W] batch in [0, 1] resized to a square side (antialiased bilinear; no-op if already so)."""
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(
        images, size=(side, side), mode="bilinear", align_corners=False, antialias=True
    ).clamp(0, 1)


@dataclass
class SkipLog:
    """Unreadable inputs met while reading a source: each is warned about once, by name, and counted."""

    skipped: list[str] = field(default_factory=list)

    def skip(self, name: str, error: Exception) -> None:
        """Record and warn about an input that could not be decoded."""
        self.skipped.append(name)
        warnings.warn(
            f"skipping unreadable image {name} ({type(error).__name__}: {error}); "
            f"{len(self.skipped)} skipped so far",
            stacklevel=3,
        )


@dataclass
class LabeledImage:
    """One decoded image: `image` [3, H, W] in [0, 1], `label` (-1 if unlabeled), and its `name`."""

    image: Tensor
    label: int
    name: str


def stack_views(
    images: Iterable[LabeledImage], resolution: int, limit: int | None = None
) -> tuple[Tensor, Tensor, list[str]]:
    """Square views [N, 3, R, R], labels [N] and names of up to `limit` images from an image source."""
    views, labels, names = [], [], []
    for item in images:
        if limit is not None and len(views) >= limit:
            break
        views.append(square_view(item.image, resolution))
        labels.append(item.label)
        names.append(item.name)
    if not views:
        raise ValueError("the image source yielded no readable images")
    return torch.stack(views), torch.tensor(labels), names
