"""Encoders built once per spec, and their features computed once per image and resolution.

The live demo and the dashboard ask for the same features again and again (a slider moves, a point is
clicked, a tab is switched); `EncoderCache` answers from memory unless the image, the encoder or the
resolution is new.

Anyone who reaches the app can ask for encoders, so the built ones are bounded: the least recently used
are dropped (with their features) beyond a count and a parameter memory. The cache's lock guards only its
tables: an encoder is built, and run, under a lock of its own spec, so requests for other encoders go on
meanwhile and two requests for the same spec build it once. A request waits for that lock at most
`wait_s` seconds; the work itself cannot be cut short (Python cannot stop a thread), so the bound is on
waiting behind another request, which then answers with a one-line error.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from distill.teachers import EXPERTS
from workbench.eval.encoders import Encoder, EncoderFeatures, build_encoder, is_checkpoint, is_floor
from workbench.eval.inside import Inside
from workbench.explore.floor import floor_encoder

BUILD_ERRORS = (ValueError, KeyError, FileNotFoundError, OSError, RuntimeError)


def image_key(*images: Tensor) -> str:
    """A content hash of [3, H, W] images in [0, 1] (their 8-bit quantisations and shapes)."""
    digest = hashlib.sha1()
    for image in images:
        pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
        digest.update(str(tuple(pixels.shape)).encode())
        digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()[:16]


def build_any(spec: str, resolution: int | None = None, **kwargs: object) -> Encoder:
    """`build_encoder`, or the random floor a `random:<checkpoint>` spec names (`workbench.explore.floor`)."""
    return floor_encoder(spec, resolution) if is_floor(spec) else build_encoder(spec, resolution, **kwargs)


def parameter_bytes(encoder: Encoder) -> int:
    """The memory of an encoder's parameters and buffers."""
    tensors = [*encoder.parameters(), *encoder.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


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
        self.put(key, value)
        return value

    def put(self, key: object, value: object) -> None:
        """Store `value` under `key` as the most recently used entry."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Slot:
    """One spec's encoder (None until built) and the lock under which it is built and run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.encoder: Encoder | None = None
        self.nbytes = 0


class EncoderCache:
    """Encoders by spec (one instance each, the least recently used dropped beyond `max_encoders` or
    `max_encoder_bytes` of parameters) and features by (image, encoder, resolution, aspect kept or not).

    Args:
        timm_weights: how timm specs are loaded: `build_encoder`'s weights arguments (default
            `{"weights": "random"}`, offline; "pretrained" downloads, "file" reads `checkpoint`).
        max_features: feature sets kept in memory.
        max_images: images kept in memory.
        build: encoder factory `(spec, resolution, **kwargs) -> Encoder` (default `build_any`).
        max_encoders: built encoders kept.
        max_encoder_bytes: their parameter memory kept; the encoder just built is kept even if alone it
            exceeds this (the others are dropped).
        wait_s: how long a request waits for another one building or running the same encoder.
    """

    def __init__(
        self,
        timm_weights: dict[str, object] | None = None,
        max_features: int = 48,
        max_images: int = 32,
        build: Callable[..., Encoder] = build_any,
        max_encoders: int = 8,
        max_encoder_bytes: int = 4 * 2**30,
        wait_s: float = 120.0,
    ) -> None:
        self.timm_weights = timm_weights or {"weights": "random"}
        self.build = build
        self.max_encoders, self.max_encoder_bytes, self.wait_s = max_encoders, max_encoder_bytes, wait_s
        self.slots: OrderedDict[str, Slot] = OrderedDict()  # least recently used first
        self.cache = LRU(max_features)
        self.images = LRU(max_images)
        self.forward_passes = 0
        self.lock = threading.RLock()  # guards the tables above, never held while building or running

    @property
    def encoders(self) -> dict[str, Encoder]:
        """The built encoders by spec, least recently used first."""
        with self.lock:
            return {spec: s.encoder for spec, s in self.slots.items() if s.encoder is not None}

    @contextmanager
    def using(self, spec: str) -> Iterator[Slot]:
        """The slot of `spec`, its lock held and its encoder built: the way to run the encoder (or set its
        resolution) without racing other requests. A one-line ValueError if the build fails or the lock is
        not free within `wait_s`."""
        with self.lock:
            slot = self.slots.setdefault(spec, Slot())
            self.slots.move_to_end(spec)
        if not slot.lock.acquire(timeout=self.wait_s):
            raise ValueError(f"encoder '{spec}' is busy with another request for over {self.wait_s:g} s")
        try:
            if slot.encoder is None:
                self.build_into(spec, slot)
            yield slot
        finally:
            slot.lock.release()

    def build_into(self, spec: str, slot: Slot) -> None:
        """Build the encoder of `spec` into its (locked) slot, then drop the least recently used others
        beyond the bounds; a failed build leaves no slot."""
        kwargs = {} if spec in EXPERTS or is_checkpoint(spec) or is_floor(spec) else self.timm_weights
        try:
            encoder = self.build(spec, None, **kwargs)
        except Exception as error:
            with self.lock:
                if self.slots.get(spec) is slot:
                    del self.slots[spec]
            if not isinstance(error, BUILD_ERRORS):
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise ValueError(f"cannot load encoder '{spec}': {message}") from error
        with self.lock:
            slot.encoder, slot.nbytes = encoder, parameter_bytes(encoder)
            self.evict(keep=slot)

    def evict(self, keep: Slot) -> None:
        """Drop the least recently used built encoders other than `keep`, and their features, while more
        than `max_encoders` are built or their parameters exceed `max_encoder_bytes` (lock held)."""
        others = [spec for spec, s in self.slots.items() if s.encoder is not None and s is not keep]
        count, total = len(others) + 1, keep.nbytes + sum(self.slots[spec].nbytes for spec in others)
        for spec in others:  # least recently used first
            if count <= self.max_encoders and total <= self.max_encoder_bytes:
                break
            count, total = count - 1, total - self.slots.pop(spec).nbytes
            for entry in [entry for entry in self.cache if entry[1] == spec]:
                del self.cache[entry]

    def encoder(self, spec: str) -> Encoder:
        """The encoder for a spec, built on first use (broken ones raise a one-line ValueError each time);
        to run it, see `using`."""
        with self.lock:
            slot = self.slots.get(spec)
            if slot is not None and slot.encoder is not None:
                self.slots.move_to_end(spec)
                return slot.encoder
        with self.using(spec) as slot:
            return slot.encoder

    def add_image(self, image: Tensor, native: Tensor | None = None) -> str:
        """Keep a [3, H, W] image in [0, 1] (square where it was cropped) and the same image with its native
        aspect ratio (None: the image itself), and return their key."""
        views = (image, image if native is None else native)
        for view in views:
            if view.ndim != 3 or view.shape[0] != 3:
                raise ValueError(f"image must have shape [3, H, W], got {list(view.shape)}")
        key = image_key(*views[: 1 if native is None else 2])
        with self.lock:
            self.images.get_or_make(key, lambda: tuple(view.detach().cpu().float() for view in views))
        return key

    def image(self, key: str, keep_aspect: bool = False) -> Tensor:
        """The image kept under `key`, or with `keep_aspect` its native-aspect view."""
        with self.lock:
            if key not in self.images:
                raise ValueError("the image is no longer in memory: load it again")
            self.images.move_to_end(key)
            return self.images[key][keep_aspect]

    def cached(self, entry: tuple) -> EncoderFeatures | Inside | None:
        """What is kept under (image key, spec, resolution, ...), if kept (its encoder counts as used)."""
        with self.lock:
            if entry not in self.cache:
                return None
            self.cache.move_to_end(entry)
            if entry[1] in self.slots:
                self.slots.move_to_end(entry[1])
            return self.cache[entry]

    def features(self, key: str, spec: str, resolution: int, keep_aspect: bool = False) -> EncoderFeatures:
        """Features (with expert-space estimates) of the image `key` by encoder `spec` at `resolution` px,
        with or without its aspect ratio kept, computed once (one forward pass under the encoder's lock)."""

        def encode(encoder: Encoder, images: Tensor) -> EncoderFeatures:
            return encoder(images, with_experts=True, keep_aspect=keep_aspect)

        return self.computed((key, spec, resolution, keep_aspect), encode)

    def inside(
        self, key: str, spec: str, resolution: int, layer: int | None = None, keep_aspect: bool = False
    ) -> Inside:
        """One layer's patches (None: the last) and CLS attention of the image `key` (see `Encoder.inside`),
        with or without its aspect ratio kept, computed once; errors name the encoder."""

        def look(encoder: Encoder, images: Tensor) -> Inside:
            try:
                return encoder.inside(images, layer, keep_aspect)
            except ValueError as error:
                raise ValueError(f"{encoder.name}: {error}") from error

        return self.computed((key, spec, resolution, keep_aspect, layer), look)

    def computed(self, entry: tuple, run: Callable[[Encoder, Tensor], object]) -> object:
        """`run(encoder, image batch)` for entry (image key, spec, resolution, keep_aspect, ...), computed
        once: one pass under the encoder's own lock, at that resolution, on the image or (keep_aspect) its
        native-aspect view."""
        if (found := self.cached(entry)) is not None:
            return found
        key, spec, resolution, keep_aspect = entry[:4]
        image = self.image(key, keep_aspect)
        with self.using(spec) as slot:
            if (found := self.cached(entry)) is not None:  # computed while this request waited
                return found
            slot.encoder.resolution = resolution
            result = run(slot.encoder, image[None])
            with self.lock:
                self.forward_passes += 1
                if self.slots.get(spec) is slot:  # an evicted encoder's features are not kept
                    self.cache.put(entry, result)
        return result
