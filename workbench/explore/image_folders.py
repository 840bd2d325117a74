"""Folders of images for the workbench: the bundled photographs written out as PNGs, and any folder read
back as square views with their file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from distill.data.folder import ImageFolder
from distill.data.images import stack_views
from distill.data.photos import load_photo, photo_names


def write_photo_folder(folder: str | Path, names: list[str] | None = None, max_side: int = 512) -> Path:
    """Write bundled photographs as `<name>.png` into `folder` (created), shrunk to at most `max_side` px.

    Args:
        folder: where to write.
        names: photographs to write (default all, see `distill.data.photos.photo_names`).
        max_side: longest side of the written images (larger photos are downscaled, aspect kept).

    Returns:
        The folder.
    """
    if max_side < 16:
        raise ValueError(f"max_side must be at least 16 px, got {max_side}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or photo_names():
        photo = load_photo(name)
        scale = min(1.0, max_side / max(photo.shape[-2:]))
        array = (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        image.save(folder / f"{name}.png")
    return folder


def folder_images(folder: str | Path, resolution: int, limit: int | None = None) -> tuple[Tensor, list[str]]:
    """Square views [N, 3, R, R] in [0, 1] of a folder's images (flat or class subfolders), and their names.

    Unreadable files are skipped with a warning (see `distill.data.folder.ImageFolder`).

    Args:
        folder: the image folder.
        resolution: side R of the views (shorter side resized to R, then centre-cropped).
        limit: read at most this many images (in sorted order).
    """
    images = ImageFolder(folder)  # refuses a missing folder, or one without image files
    try:
        views, _, names = stack_views(images, resolution, limit)
    except ValueError:  # every file was unreadable (each named in a warning)
        raise ValueError(f"no readable images in {folder}") from None
    return views, names
