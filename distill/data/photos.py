"""Real photographs that ship inside scikit-image and scikit-learn, usable by name offline."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from distill.data.images import array_to_tensor

# Photographs only (no synthetic test patterns); each loads from the installed package, no download.
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip
SKLEARN_PHOTOS = ("china", "flower")
# Never in a training view, so the agreement columns measure photos the encoders never saw. Chosen before
# any measurement (issue 23), one of each kind of content: an animal, a person, an object, a scene, text.
HELD_OUT_PHOTOS = ("chelsea", "astronaut", "coffee", "china", "text")
PHOTO_SPLITS = ("all", "train", "held_out")


def photo_names(split: str = "all") -> list[str]:
    """Names of the bundled photographs of a split: `all`, `train` (those training views may crop) or
    `held_out` (`HELD_OUT_PHOTOS`, for evaluation only)."""
    every = [*SKIMAGE_PHOTOS, *SKLEARN_PHOTOS]
    if split == "all":
        return every
    if split == "train":
        return [name for name in every if name not in HELD_OUT_PHOTOS]
    if split == "held_out":
        return list(HELD_OUT_PHOTOS)
    raise ValueError(f"unknown photo split '{split}' ({', '.join(PHOTO_SPLITS)})")


def photo_array(name: str) -> np.ndarray:
    """The photograph as its package ships it (uint8, HxW or HxWx3)."""
    if name in SKIMAGE_PHOTOS:
        import skimage.data

        return getattr(skimage.data, name)()
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    raise KeyError(f"unknown photo '{name}'; bundled photos: {', '.join(photo_names())}")


def load_photo(name: str) -> Tensor:
    """A bundled photograph as an RGB tensor [3, H, W] in [0, 1] (greyscale ones replicated)."""
    return array_to_tensor(photo_array(name))
