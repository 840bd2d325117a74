"""Reading the app's gallery items back: each is (a PNG file of the picture, its caption)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def gallery_arrays(gallery: list[tuple]) -> list[tuple[np.ndarray, str]]:
    """A gallery's items as (uint8 [H, W, 3] picture, caption)."""
    out = []
    for path, caption in gallery:
        with Image.open(path) as image:
            out.append((np.asarray(image.convert("RGB")), caption))
    return out
