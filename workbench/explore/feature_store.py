"""Encoders built once per spec, and their features computed once per image and resolution.

The live demo and the dashboard ask for the same features again and again (a slider moves, a point is
clicked, a tab is switched); `FeatureStore` answers from memory unless the image, the encoder or the
resolution is new.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from distill.teachers import EXPERTS
from workbench.eval.encoders import Encoder, EncoderFeatures, build_encoder, is_checkpoint


def image_key(image: Tensor) -> str:
    """A content hash of a [3, H, W] image in [0, 1] (its 8-bit quantisation and shape)."""
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    digest = hashlib.sha1(str(tuple(pixels.shape)).encode())
    digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()[:16]


class LRU(OrderedDict):
    """A dict that forgets its least recently used entries beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_or_make(self, key: object, make: Callable[[], object]) -> object:
        """The value under `key`, made (and stored) if missing."""
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.capacity:
            self.popitem(last=False)
        return value


class FeatureStore:
    """Encoders by spec (one instance each) and features by (image, encoder, resolution).

    Args:
        timm_weights: weights for timm specs: "random" (offline) or "pretrained" (downloads).
        max_features: feature sets kept in memory.
        max_images: images kept in memory.
        build: encoder factory `(spec, resolution, **kwargs) -> Encoder` (default `build_encoder`).
    """

    def __init__(
        self,
        timm_weights: str = "random",
        max_features: int = 48,
        max_images: int = 32,
        build: Callable[..., Encoder] = build_encoder,
    ) -> None:
        self.timm_weights = timm_weights
        self.build = build
        self.encoders: dict[str, Encoder] = {}
        self.cache = LRU(max_features)
        self.images = LRU(max_images)
        self.forward_passes = 0
        self.lock = threading.RLock()

    def encoder(self, spec: str) -> Encoder:
        """The encoder for a spec, built on first use (broken ones raise a one-line ValueError each time)."""
        with self.lock:
            if spec not in self.encoders:
                kwargs = {} if spec in EXPERTS or is_checkpoint(spec) else {"weights": self.timm_weights}
                try:
                    self.encoders[spec] = self.build(spec, None, **kwargs)
                except (ValueError, KeyError, FileNotFoundError, OSError, RuntimeError) as error:
                    message = error.args[0] if isinstance(error, KeyError) and error.args else error
                    raise ValueError(f"cannot load encoder '{spec}': {message}") from error
            return self.encoders[spec]

    def add_image(self, image: Tensor) -> str:
        """Keep a [3, H, W] image in [0, 1] and return its key."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must have shape [3, H, W], got {list(image.shape)}")
        key = image_key(image)
        with self.lock:
            self.images.get_or_make(key, lambda: image.detach().cpu().float())
        return key

    def image(self, key: str) -> Tensor:
        """The image kept under `key`."""
        with self.lock:
            if key not in self.images:
                raise ValueError("the image is no longer in memory: load it again")
            self.images.move_to_end(key)
            return self.images[key]

    def features(self, key: str, spec: str, resolution: int) -> EncoderFeatures:
        """Features (with expert-space estimates) of the image `key` by encoder `spec` at `resolution` px."""
        with self.lock:
            return self.cache.get_or_make(
                (key, spec, resolution), lambda: self.compute(key, spec, resolution)
            )

    def compute(self, key: str, spec: str, resolution: int) -> EncoderFeatures:
        """One forward pass (uncached); `features` is the cached way in."""
        encoder = self.encoder(spec)
        encoder.resolution = resolution
        self.forward_passes += 1
        return encoder(self.image(key)[None], with_experts=True)
