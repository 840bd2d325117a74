"""Procedural scenes with exact labels: scene class, segmentation, depth, edges and text.

Every image is a themed background at the far depth with up to `max_layers` layered objects in front
of it (discs, ellipses, rectangles, triangles, rings, stars, hexagons, crosses, and text signs whose
characters come from DejaVu Sans glyph bitmaps). Each object is a slanted plane with its own depth;
at every pixel the nearest object owns the segment label, the instance id and the depth, so the
labels are exact by construction.

Scene class rule: the class is drawn uniformly per sample and is the scene's *theme*. A theme fixes
the distributions of (a) the background palette (two hues with saturation/value ranges), (b) the
background texture family (fBm noise, stripes, waves, checks, dots, grid, rings), (c) the object
palette, (d) the object shape mix (two or three dominant shapes, others rare), (e) the object count
and size, and (f) how often text signs appear. No single cue decides a class, but palette + texture +
shape statistics separate all of them (see `THEMES`; e.g. "ocean" = blue waves with white ellipses and
rings, "forest" = dark green noise with many green triangles, "city" = grey checks/grid with
low-saturation rectangles and frequent signs).

Randomness: all random numbers come from a counter-based integer hash of (seed, sample index,
stream id), evaluated with int64 tensor ops. Sample i of a seed is therefore identical whatever batch
it is drawn in (`batch(0, 8)[3] == batch(3, 1)[0]`), bit for bit on the same device; CPU and GPU draw
identical scene parameters, and their images and depths agree up to float rounding (all labels
matched exactly when checked on an H100). The same scene parameters are drawn at
every resolution, so one index gives the same scene at 128 px and at 512 px.

Speed: everything is batched tensor code with small fixed loops (layers, texture families, noise
octaves) and a few host syncs per chunk. Measured at batch 256: about 170 images/s at 128 px and
60 images/s at 224 px on a 2-core CPU; on one H100 about 9k/s at 128 px and 5.5k/s at 224 px (16k/s
and 6.6k/s at batch 1024, 1.4k/s at 512 px; `compile=True` gives 9k/s at 224 px).
See `workbench.bench.scenes`.

Depth unit: scene units (think metres). Text signs lie at 0.5..1.6, other objects at 1.6..9.5 and the
background at 10..20 (larger = farther). Signs are always nearer than other objects, so text can only
be hidden by another sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data.glyphs import GlyphAtlas, glyph_atlas

SHAPES: tuple[str, ...] = (
    "disc",
    "ellipse",
    "rectangle",
    "triangle",
    "ring",
    "star",
    "hexagon",
    "cross",
)
SEGMENT_CLASSES: tuple[str, ...] = ("background", *SHAPES, "sign", "text")
SIGN_CLASS = SEGMENT_CLASSES.index("sign")
TEXT_CLASS = SEGMENT_CLASSES.index("text")
TEXTURES: tuple[str, ...] = ("noise", "stripes", "waves", "checks", "dots", "grid", "rings")

MIN_SIDE = 32
MAX_SIDE = 8192
MAX_CHARS = 8
SIGN_DEPTH = 1.6  # signs lie nearer than this, other objects farther


@dataclass(frozen=True)
class Theme:
    """The distributions one scene class draws from (hues in turns, i.e. [0, 1) around the wheel).

    Attributes:
        name: scene class name.
        bg_hues: the two background hues.
        bg_sat: background saturation range.
        bg_val: background value range.
        textures: relative weight of each entry of `TEXTURES`.
        obj_hue: (centre, half-width) of object hues; half-width 0.5 means any hue.
        obj_sat: object saturation range.
        obj_val: object value range.
        shapes: relative weight of each entry of `SHAPES`.
        n_objects: inclusive range of the number of (non-sign) objects.
        scale: range of object radius, in units of the image's shorter side.
        p_text: probability that the image has text signs.
    """

    name: str
    bg_hues: tuple[float, float]
    bg_sat: tuple[float, float]
    bg_val: tuple[float, float]
    textures: tuple[float, ...]
    obj_hue: tuple[float, float]
    obj_sat: tuple[float, float]
    obj_val: tuple[float, float]
    shapes: tuple[float, ...]
    n_objects: tuple[int, int]
    scale: tuple[float, float]
    p_text: float


# Weights follow the order of TEXTURES and SHAPES.
THEMES: tuple[Theme, ...] = (
    Theme(
        "meadow",
        bg_hues=(0.27, 0.2),
        bg_sat=(0.5, 0.85),
        bg_val=(0.45, 0.75),
        textures=(5, 0, 1, 0, 0, 0, 0),  # noise, waves
        obj_hue=(0.14, 0.05),
        obj_sat=(0.0, 0.8),
        obj_val=(0.85, 1.0),
        shapes=(4, 2, 0.2, 0.2, 0.3, 2, 0.2, 0.2),  # mostly disc, ellipse, star
        n_objects=(4, 9),
        scale=(0.07, 0.2),
        p_text=0.2,
    ),
    Theme(
        "ocean",
        bg_hues=(0.57, 0.5),
        bg_sat=(0.6, 0.95),
        bg_val=(0.35, 0.8),
        textures=(1, 1, 5, 0, 0, 0, 0),  # noise, stripes, waves
        obj_hue=(0.5, 0.06),
        obj_sat=(0.0, 0.45),
        obj_val=(0.75, 1.0),
        shapes=(1, 4, 0.2, 0.2, 3, 0.2, 0.2, 0.2),  # mostly ellipse, ring, disc
        n_objects=(3, 8),
        scale=(0.09, 0.28),
        p_text=0.2,
    ),
    Theme(
        "desert",
        bg_hues=(0.09, 0.06),
        bg_sat=(0.35, 0.65),
        bg_val=(0.7, 0.95),
        textures=(1, 2, 3, 0, 0, 0, 0),  # noise, stripes, waves
        obj_hue=(0.06, 0.04),
        obj_sat=(0.45, 0.8),
        obj_val=(0.3, 0.6),
        shapes=(0.2, 0.2, 1, 5, 0.2, 0.2, 0.3, 0.2),  # mostly triangle, rectangle
        n_objects=(3, 7),
        scale=(0.13, 0.42),
        p_text=0.2,
    ),
    Theme(
        "city",
        bg_hues=(0.6, 0.58),
        bg_sat=(0.0, 0.15),
        bg_val=(0.35, 0.75),
        textures=(0, 0, 0, 3, 0, 3, 0),  # checks, grid
        obj_hue=(0.5, 0.5),
        obj_sat=(0.0, 0.25),
        obj_val=(0.25, 0.95),
        shapes=(0.2, 0.2, 5, 0.2, 0.2, 0.2, 0.3, 1),  # mostly rectangle, cross
        n_objects=(4, 9),
        scale=(0.08, 0.28),
        p_text=0.7,
    ),
    Theme(
        "night",
        bg_hues=(0.66, 0.72),
        bg_sat=(0.6, 0.95),
        bg_val=(0.03, 0.2),
        textures=(3, 0, 0, 0, 1, 0, 0),  # noise, dots
        obj_hue=(0.14, 0.04),
        obj_sat=(0.0, 0.5),
        obj_val=(0.85, 1.0),
        shapes=(1.5, 0.2, 0.2, 0.2, 0.3, 5, 0.3, 0.5),  # mostly star, disc
        n_objects=(4, 9),
        scale=(0.04, 0.14),
        p_text=0.1,
    ),
    Theme(
        "candy",
        bg_hues=(0.92, 0.85),
        bg_sat=(0.15, 0.45),
        bg_val=(0.88, 1.0),
        textures=(0, 3, 0, 0, 4, 0, 1),  # stripes, dots, rings
        obj_hue=(0.5, 0.5),
        obj_sat=(0.3, 0.6),
        obj_val=(0.85, 1.0),
        shapes=(2, 0.3, 0.2, 0.2, 4, 1.5, 0.2, 0.2),  # mostly ring, disc, star
        n_objects=(4, 9),
        scale=(0.07, 0.22),
        p_text=0.2,
    ),
    Theme(
        "forest",
        bg_hues=(0.3, 0.36),
        bg_sat=(0.5, 0.9),
        bg_val=(0.12, 0.35),
        textures=(5, 1, 0, 0, 0, 0, 0),  # noise, stripes
        obj_hue=(0.3, 0.07),
        obj_sat=(0.5, 0.9),
        obj_val=(0.2, 0.55),
        shapes=(0.2, 1, 0.2, 6, 0.2, 0.2, 0.2, 0.2),  # mostly triangle, ellipse
        n_objects=(5, 9),
        scale=(0.08, 0.28),
        p_text=0.15,
    ),
    Theme(
        "volcano",
        bg_hues=(0.01, 0.05),
        bg_sat=(0.7, 1.0),
        bg_val=(0.18, 0.5),
        textures=(1, 0, 0, 0, 0, 0, 4),  # noise, rings
        obj_hue=(0.06, 0.05),
        obj_sat=(0.8, 1.0),
        obj_val=(0.75, 1.0),
        shapes=(0.3, 0.2, 0.2, 3, 0.2, 4, 0.3, 0.2),  # mostly star, triangle
        n_objects=(3, 8),
        scale=(0.07, 0.22),
        p_text=0.15,
    ),
    Theme(
        "arctic",
        bg_hues=(0.54, 0.58),
        bg_sat=(0.04, 0.2),
        bg_val=(0.85, 1.0),
        textures=(2, 1, 0, 0, 0, 0, 1),  # noise, stripes, rings
        obj_hue=(0.53, 0.05),
        obj_sat=(0.1, 0.4),
        obj_val=(0.7, 1.0),
        shapes=(0.2, 0.2, 0.2, 1.5, 0.3, 0.3, 5, 0.3),  # mostly hexagon, triangle
        n_objects=(3, 8),
        scale=(0.08, 0.25),
        p_text=0.15,
    ),
    Theme(
        "market",
        bg_hues=(0.05, 0.08),
        bg_sat=(0.35, 0.6),
        bg_val=(0.45, 0.7),
        textures=(0, 2, 0, 3, 0, 0, 0),  # stripes, checks
        obj_hue=(0.5, 0.5),
        obj_sat=(0.6, 0.9),
        obj_val=(0.6, 0.95),
        shapes=(1, 0.3, 1, 0.3, 0.3, 0.3, 0.3, 3),  # mostly cross, disc, rectangle
        n_objects=(3, 7),
        scale=(0.07, 0.2),
        p_text=0.95,
    ),
    Theme(
        "circuit",
        bg_hues=(0.42, 0.47),
        bg_sat=(0.6, 0.9),
        bg_val=(0.12, 0.3),
        textures=(0, 0, 0, 0, 0, 5, 0),  # grid
        obj_hue=(0.1, 0.03),
        obj_sat=(0.45, 0.8),
        obj_val=(0.6, 0.95),
        shapes=(1, 0.2, 4, 0.2, 0.5, 0.2, 0.3, 2.5),  # mostly rectangle, cross, disc
        n_objects=(5, 9),
        scale=(0.05, 0.15),
        p_text=0.2,
    ),
    Theme(
        "sunset",
        bg_hues=(0.8, 0.07),
        bg_sat=(0.45, 0.8),
        bg_val=(0.55, 0.95),
        textures=(1, 1, 0, 0, 0, 0, 0),  # noise, stripes
        obj_hue=(0.78, 0.08),
        obj_sat=(0.35, 0.7),
        obj_val=(0.08, 0.3),
        shapes=(3, 3, 0.2, 1.5, 0.2, 0.2, 0.2, 0.2),  # mostly disc, ellipse, triangle
        n_objects=(3, 7),
        scale=(0.1, 0.42),
        p_text=0.15,
    ),
)
SCENE_CLASSES: tuple[str, ...] = tuple(t.name for t in THEMES)

# ------------------------------------------------------------------------------------------------
# Counter-based random numbers: int64 tensor ops, identical on every device.

_M32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32 without int64 overflow."""
    lo = (x & 0xFFFF) * c
    hi = (((x >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit avalanche hash (lowbias32)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sample_keys(seed: int, index: Tensor) -> Tensor:
    """Per-sample 32-bit keys from a seed and int64 sample indices."""
    s = index.new_tensor([seed & _M32, (seed >> 32) & _M32])
    h = _mix32(_mix32(s[0] ^ 0x9E3779B9) ^ s[1])
    h = _mix32(h ^ (index & _M32))
    return _mix32(h ^ ((index >> 32) & _M32) ^ 0x85EBCA6B)


class _Stream:
    """Uniform numbers in [0, 1) for a batch of keys; each call consumes the next stream ids."""

    def __init__(self, keys: Tensor) -> None:
        self.keys = keys
        self.counter = 0

    def uniform(self, *shape: int) -> Tensor:
        """A [B, *shape] float32 tensor of uniforms."""
        n = math.prod(shape)
        ids = torch.arange(self.counter, self.counter + n, device=self.keys.device)
        self.counter += n
        h = _mix32(self.keys[:, None] ^ _mix32(ids * 2 + 1)[None])
        return ((h >> 8).float() * 2.0**-24).reshape(len(self.keys), *shape)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV (h in turns) to RGB, stacked on a new last dimension."""
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h * 6.0, 6.0)
        out.append(v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(out, -1)


def _lerp(lo: float | Tensor, hi: float | Tensor, u: Tensor) -> Tensor:
    return lo + (hi - lo) * u


def _categorical(u: Tensor, weights: Tensor) -> Tensor:
    """Draw indices from per-row weights [..., N] with uniforms u [...]."""
    cdf = weights.cumsum(-1)
    cdf = cdf / cdf[..., -1:]
    return (u[..., None] >= cdf).sum(-1).clamp(max=weights.shape[-1] - 1)


def _expand(x: Tensor) -> Tensor:
    """[B] -> [B, 1, 1] for broadcasting against [B, H, W]."""
    return x[:, None, None]


# ------------------------------------------------------------------------------------------------


@dataclass
class SceneBatch:
    """A batch of generated scenes with exact labels.

    Attributes:
        images: [B, 3, H, W] float32 RGB in [0, 1].
        scene_class: [B] int64 index into `SCENE_CLASSES`.
        segmentation: [B, H, W] int64 index into `SEGMENT_CLASSES`, 0 = background.
        depth: [B, H, W] float32 in scene units (larger = farther; see the module docstring).
        edges: [B, H, W] bool, pixels whose instance differs from a 4-neighbour's (both sides).
        text: [B, H, W] bool, pixels of rendered characters (a subset of the "text" segment).
        instances: [B, H, W] int64 instance id: 0 background, k = 1..L the pixels owned by layer k,
            k + L + 1 the character pixels on sign layer k.
        layer_depth: only with `return_layers`: [B, L+1, H, W] depth of every layer (layer 0 =
            background), +inf where the layer does not cover the pixel.
        layer_class: only with `return_layers`: [B, L+1] segment class of every layer (0 unused).
    """

    images: Tensor
    scene_class: Tensor
    segmentation: Tensor
    depth: Tensor
    edges: Tensor
    text: Tensor
    instances: Tensor | None = None
    layer_depth: Tensor | None = None
    layer_class: Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @staticmethod
    def cat(batches: list[SceneBatch]) -> SceneBatch:
        """Concatenate batches along the batch dimension."""
        out = {}
        for f in fields(SceneBatch):
            values = [getattr(b, f.name) for b in batches]
            out[f.name] = None if values[0] is None else torch.cat(values)
        return SceneBatch(**out)

    def to(self, device: torch.device | str) -> SceneBatch:
        """Return a copy with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return SceneBatch(**{k: None if v is None else v.to(device) for k, v in moved.items()})


def instance_edges(instances: Tensor) -> Tensor:
    """Pixels of [B, H, W] `instances` whose value differs from a 4-neighbour's (both sides marked)."""
    edges = torch.zeros_like(instances, dtype=torch.bool)
    dx = instances[:, :, 1:] != instances[:, :, :-1]
    dy = instances[:, 1:, :] != instances[:, :-1, :]
    edges[:, :, 1:] |= dx
    edges[:, :, :-1] |= dx
    edges[:, 1:, :] |= dy
    edges[:, :-1, :] |= dy
    return edges


def object_ids(instances: Tensor, layers: int) -> Tensor:
    """Object ids (the owning layer, 0 background) from instance ids: characters join their sign's layer."""
    return torch.where(instances > layers, instances - layers - 1, instances)


def _parse_resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, bool):
        raise ValueError(f"resolution must be an int or an (height, width) pair, got {resolution!r}")
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    if not (isinstance(resolution, (tuple, list)) and len(resolution) == 2):
        raise ValueError(f"resolution must be an int or an (height, width) pair, got {resolution!r}")
    h, w = resolution
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise ValueError(f"resolution sides must be ints, got {resolution!r}")
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"resolution too small: {h}x{w}, each side must be at least {MIN_SIDE} px")
    if max(h, w) > MAX_SIDE:
        raise ValueError(f"resolution too large: {h}x{w}, each side must be at most {MAX_SIDE} px")
    return h, w


class SceneGenerator:
    """Batched, seeded generator of labelled procedural scenes.

    Args:
        resolution: output size, an int for square images or (height, width).
        device: where the scenes are rendered.
        seed: the dataset seed; sample i of a seed is always the same scene.
        max_layers: object layers per image (signs included); scenes use up to this many.
        text_probability: probability that an image has text signs; None uses each theme's own.
        compile: wrap the per-pixel stages in `torch.compile` (about 1.7x faster on a GPU after a
            one-minute compile per chunk shape; floats may then differ from eager mode in the last
            bits, labels measured identical).
    """

    def __init__(
        self,
        resolution: int | tuple[int, int] = 128,
        device: torch.device | str = "cpu",
        seed: int = 0,
        max_layers: int = 12,
        text_probability: float | None = None,
        compile: bool = False,
    ) -> None:
        self.height, self.width = _parse_resolution(resolution)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if not isinstance(max_layers, int) or not 4 <= max_layers <= 32:
            raise ValueError(f"max_layers must be an int in [4, 32], got {max_layers!r}")
        if text_probability is not None and not 0.0 <= text_probability <= 1.0:
            raise ValueError(f"text_probability must lie in [0, 1], got {text_probability!r}")
        self.device = torch.device(device)
        self.seed = seed
        self.max_layers = max_layers
        self.max_signs = min(3, max_layers // 3)
        self.text_probability = text_probability
        # Samples are rendered in chunks of at most this many pixels: on CPU small chunks stay in
        # cache and avoid page-faulting fresh allocations; on accelerators chunks bound the memory.
        self.chunk_pixels = 2**20 if self.device.type == "cpu" else 2**25
        self.atlas: GlyphAtlas = glyph_atlas(device=self.device)
        self._build_tables()
        self._build_grids()
        if compile:
            for name in ("_composite", "_shade_objects", "_finish"):
                setattr(self, name, torch.compile(getattr(self, name), dynamic=False))

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) of the generated images."""
        return self.height, self.width

    # -- setup ------------------------------------------------------------------------------------

    def _build_tables(self) -> None:
        dev = self.device

        def table(attr: str) -> Tensor:
            return torch.tensor([getattr(t, attr) for t in THEMES], dtype=torch.float32, device=dev)

        self._t = {f.name: table(f.name) for f in fields(Theme) if f.name != "name"}
        if self.text_probability is not None:
            self._t["p_text"] = torch.full_like(self._t["p_text"], self.text_probability)
        # Grain: one tile of uniform noise in [-0.5, 0.5), shifted per sample.
        tile = 256
        keys = sample_keys(self.seed ^ 0x5DEECE66D, torch.arange(tile, device=dev))
        self._grain = _Stream(keys).uniform(tile).sub(0.5)

    def _build_grids(self) -> None:
        h, w, dev = self.height, self.width, self.device
        self.unit = min(h, w)  # pixels per scene-plane unit: the shorter side spans [0, 1]
        self.extent = (h / self.unit, w / self.unit)
        self._ys = ((torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / self.unit).view(1, h, 1)
        self._xs = ((torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / self.unit).view(1, 1, w)

    # -- public -----------------------------------------------------------------------------------

    def batch(self, start: int, size: int, return_layers: bool = False) -> SceneBatch:
        """Render samples `start` .. `start + size - 1` of this seed.

        Args:
            start: index of the first sample (>= 0).
            size: number of samples (> 0).
            return_layers: also return per-layer depths and classes (for checking; costs memory).
        """
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"start must be a non-negative int, got {start!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if start + size > 2**62:
            raise ValueError(f"sample indices must stay below 2**62, got start={start} size={size}")
        keys = sample_keys(self.seed, torch.arange(start, start + size, device=self.device))
        per_chunk = max(1, self.chunk_pixels // (self.height * self.width))
        parts = [self.render(chunk, return_layers) for chunk in keys.split(per_chunk)]
        return parts[0] if len(parts) == 1 else SceneBatch.cat(parts)

    def render(self, keys: Tensor, return_layers: bool = False) -> SceneBatch:
        """Render the scenes of the given [B] int64 sample keys (see `sample_keys`)."""
        return self.draw(*self.parameters(keys), return_layers)

    def parameters(self, keys: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """What `draw` renders for [B] sample keys: per-image parameters (each [B]) and per-layer ones (each
        [B, L]; positions `cx`, `cy`, size `radius` and `angle` among them, which clips move)."""
        rng = _Stream(keys)
        p = self._sample_scene(rng)
        p["key"] = keys
        return p, self._sample_slots(rng, p)

    def draw(self, p: dict[str, Tensor], slots: dict[str, Tensor], return_layers: bool = False) -> SceneBatch:
        """Render scenes from their `parameters`."""
        bg_rgb, noise = self._background(p)
        depth, owner, lx, ly, layers = self._composite(p, slots, return_layers)
        seg = torch.gather(slots["cls"], 1, owner.flatten(1)).view_as(owner)
        rgb = self._shade_objects(p, slots, owner, lx, ly, noise, bg_rgb)
        text = self._draw_text(slots, owner, seg, lx, ly, rgb)
        seg = torch.where(text, TEXT_CLASS, seg)
        instances = owner + text.long() * (self.max_layers + 1)
        images = self._finish(p, rgb, depth)
        return SceneBatch(
            images=images,
            scene_class=p["cls"],
            segmentation=seg,
            depth=depth,
            edges=instance_edges(instances),
            text=text,
            instances=instances,
            layer_depth=layers,
            layer_class=slots["cls"] if return_layers else None,
        )

    # -- parameters -------------------------------------------------------------------------------

    def _sample_scene(self, rng: _Stream) -> dict[str, Tensor]:
        """Per-image parameters, each [B]: theme, background, lighting, camera, object counts."""
        u = rng.uniform(32).unbind(1)
        t = self._t
        cls = (u[0] * len(THEMES)).long().clamp(max=len(THEMES) - 1)
        p: dict[str, Tensor] = {"cls": cls}
        self._sample_background(p, u)
        p["light_angle"] = u[22] * 2 * math.pi
        p["light_elev"] = _lerp(0.35, 1.2, u[23])
        p["light_grad"] = _lerp(0.0, 0.5, u[24])
        p["vignette"] = _lerp(0.0, 0.5, u[25])
        p["fog"] = _lerp(0.0, 0.3, u[26])
        p["roughness"] = _lerp(0.35, 0.75, u[27])
        p["exposure"] = _lerp(0.85, 1.15, u[28])
        p["gamma"] = _lerp(0.8, 1.25, u[29])
        p["grain"] = torch.where(u[30] < 0.5, 0.0, _lerp(0.01, 0.08, u[31]))
        v = rng.uniform(8).unbind(1)
        p["blur"] = torch.where(v[0] < 0.7, 0.0, v[1])
        p["grain_off"] = (v[2] * 256).long() * 256 + (v[3] * 256).long()
        p["shadow"] = _lerp(0.15, 0.5, v[4])
        p["shadow_len"] = _lerp(0.01, 0.04, v[5])
        lo, hi = t["n_objects"][cls].unbind(1)
        n_objects = (lo + (v[6] * (hi - lo + 1)).floor()).long()
        p["n_objects"] = n_objects.clamp(max=self.max_layers - self.max_signs)
        has_text = v[7] < t["p_text"][cls]
        n_signs = 1 + (rng.uniform(1)[:, 0] * self.max_signs).long().clamp(max=self.max_signs - 1)
        p["n_signs"] = torch.where(has_text, n_signs, 0)
        return p

    def _sample_background(self, p: dict[str, Tensor], u: tuple[Tensor, ...]) -> None:
        """Background palette (colours a, b and pattern colour), texture, gradient and depth."""
        t, cls = self._t, p["cls"]
        h0, h1 = t["bg_hues"][cls].unbind(1)
        sat, val = t["bg_sat"][cls], t["bg_val"][cls]
        hues = (h0, h1, torch.where(u[4] < 0.5, h0, h1))
        for i, name in enumerate(("bg_a", "bg_b", "bg_p")):
            hue = hues[i] + (u[1 + i] - 0.5) * 0.06
            p[name] = _hsv_to_rgb(
                hue, _lerp(sat[:, 0], sat[:, 1], u[5 + i]), _lerp(val[:, 0], val[:, 1], u[8 + i])
            )  # [B, 3]
        p["texture"] = _categorical(u[11], t["textures"][cls])
        p["tex_freq"] = 2.0 * 2.0 ** (u[12] * 3.0)  # 2 .. 16 periods per unit
        p["tex_angle"] = u[13] * math.pi
        p["tex_contrast"] = _lerp(0.25, 0.8, u[14])
        p["tex_phase"] = u[15] * 2 * math.pi
        p["warp"] = torch.where(u[16] < 0.5, 0.0, _lerp(0.5, 3.0, u[17]))  # in texture periods
        p["grad_angle"] = u[18] * 2 * math.pi
        p["grad_strength"] = _lerp(0.3, 1.5, u[19])
        p["bg_depth"] = _lerp(12.0, 16.0, u[20])
        p["bg_tilt"] = _lerp(-1.0, 3.0, u[21])

    def _sample_slots(self, rng: _Stream, p: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-layer parameters, each [B, L] (colours [B, L, 3], characters [B, L, MAX_CHARS]).

        Layers 0 .. max_signs - 1 hold the signs, the rest the other objects; `cls` is [B, L + 1]
        with column 0 for the background.
        """
        L = self.max_layers
        u = rng.uniform(L, 32).unbind(2)
        cls = p["cls"]
        k = torch.arange(L, device=self.device)[None]
        is_sign = k < p["n_signs"][:, None]
        active = is_sign | ((k >= self.max_signs) & (k < self.max_signs + p["n_objects"][:, None]))
        shape = _categorical(u[0], self._t["shapes"][cls][:, None].expand(-1, L, -1))
        shape = torch.where(is_sign, len(SHAPES), shape)  # sign shape id == len(SHAPES)
        s = {"active": active, "is_sign": is_sign, "shape": shape}
        self._sample_geometry(s, u, cls)
        self._sample_signs(s, u)
        self._sample_appearance(s, u, cls)
        s["chars"] = (rng.uniform(L, MAX_CHARS) * len(self.atlas.chars)).long()
        zero = torch.zeros_like(cls)[:, None]
        s["cls"] = torch.cat([zero, torch.where(active, shape + 1, 0)], 1)
        return s

    def _sample_geometry(self, s: dict[str, Tensor], u: tuple[Tensor, ...], cls: Tensor) -> None:
        """Depth plane, position, size, orientation and shape parameters of every layer."""
        is_sign, shape = s["is_sign"], s["shape"]
        d0 = torch.where(is_sign, _lerp(0.7, 1.5, u[1]), _lerp(2.0, 9.0, u[1]))
        s["d0"] = d0  # depth = d0 + gx * (x - cx) + gy * (y - cy), clamped to [near, far]
        s["near"] = torch.where(is_sign, 0.5, SIGN_DEPTH)  # signs are always in front of objects
        s["far"] = torch.where(is_sign, SIGN_DEPTH, 9.5)
        slope = torch.where(is_sign, 0.3, 2.5)
        s["gx"] = (u[2] - 0.5) * 2 * slope
        s["gy"] = (u[3] - 0.5) * 2 * slope
        sc = self._t["scale"][cls][:, None]
        depth_factor = (4.0 / d0).clamp(0.5, 2.0) ** 0.5  # farther objects look smaller
        s["radius"] = sc[..., 0] * (sc[..., 1] / sc[..., 0]) ** u[4] * depth_factor
        hx, wx = self.extent
        s["cx"] = _lerp(-0.05, wx + 0.05, u[5])
        s["cy"] = _lerp(-0.05, hx + 0.05, u[6])
        s["angle"] = u[7] * 2 * math.pi
        s["ax"] = torch.ones_like(d0)
        ay = torch.ones_like(d0)
        for shape_id, lo, hi in ((1, 0.35, 0.65), (2, 0.3, 1.0), (3, 0.7, 1.2), (4, 0.75, 1.0)):
            ay = torch.where(shape == shape_id, _lerp(lo, hi, u[8]), ay)
        s["ay"] = ay
        s["inner"] = torch.where(shape == 4, _lerp(0.45, 0.75, u[9]), 0.0)
        s["arm"] = _lerp(0.25, 0.45, u[9])
        # Triangles, stars and hexagons: an n-pointed star with inner radius m (m = cos(pi/n) is
        # the regular n-gon). alpha and h describe the edge line in polar form: r cos(t - alpha) = h.
        n = torch.where(shape == 3, 3.0, torch.where(shape == 6, 6.0, 5.0 + (u[10] * 4).floor()))
        m = torch.where(shape == 5, _lerp(0.38, 0.55, u[11]), torch.cos(math.pi / n))
        beta = math.pi / n
        nx, ny = m * torch.sin(beta), 1 - m * torch.cos(beta)
        s["n"], s["alpha"], s["h"] = n, torch.atan2(ny, nx), nx / torch.sqrt(nx * nx + ny * ny)

    def _sample_appearance(self, s: dict[str, Tensor], u: tuple[Tensor, ...], cls: Tensor) -> None:
        """Colours, stripes, sphere shading and texture of objects; plate and ink colours of signs."""
        t, is_sign = self._t, s["is_sign"]
        oh, osat, oval = t["obj_hue"][cls][:, None], t["obj_sat"][cls][:, None], t["obj_val"][cls][:, None]
        hue = oh[..., 0] + (u[12] * 2 - 1) * oh[..., 1]
        sat = _lerp(osat[..., 0], osat[..., 1], u[13])
        val = _lerp(oval[..., 0], oval[..., 1], u[14])
        rgb = _hsv_to_rgb(hue, sat, val)  # [B, L, 3]
        hue2 = hue + (u[15] - 0.5) * 0.2
        s["rgb2"] = _hsv_to_rgb(hue2, sat * _lerp(0.5, 1.0, u[16]), val * _lerp(0.45, 0.8, u[17]))
        stripes = torch.where(u[18] < 0.3, _lerp(0.5, 1.0, u[19]), 0.0)
        s["stripe_freq"] = _lerp(2.0, 6.0, u[20])
        s["stripe_angle"] = u[21] * math.pi
        shape = s["shape"]
        round_shape = (shape == 0) | (shape == 1) | (shape == 4)
        sphere = (round_shape & (u[22] < 0.6)).float()
        tex_amp = torch.where(u[23] < 0.5, _lerp(0.1, 0.5, u[24]), 0.0)
        # Signs: light plate with dark ink, or dark plate with light ink; flat, untextured.
        light = u[25] < 0.65
        plate_v = torch.where(light, _lerp(0.85, 1.0, u[26]), _lerp(0.05, 0.3, u[26]))
        ink_v = torch.where(light, _lerp(0.0, 0.15, u[27]), _lerp(0.9, 1.0, u[27]))
        plate_s = torch.where(u[28] < 0.6, _lerp(0.0, 0.15, u[29]), _lerp(0.3, 0.7, u[29]))
        plate = _hsv_to_rgb(u[30], plate_s, plate_v)
        s["ink"] = _hsv_to_rgb(u[31], _lerp(0.0, 0.3, u[31]), ink_v)
        s["rgb"] = torch.where(is_sign[..., None], plate, rgb)
        s["stripes"] = torch.where(is_sign, 0.0, stripes)
        s["sphere"] = torch.where(is_sign, 0.0, sphere)
        s["tex_amp"] = torch.where(is_sign, 0.0, tex_amp)

    def _sample_signs(self, s: dict[str, Tensor], u: tuple[Tensor, ...]) -> None:
        """Size, place and orient text signs so that they lie fully inside the frame."""
        is_sign = s["is_sign"]
        hx, wx = self.extent
        n_chars = 2 + (u[8] * (MAX_CHARS - 1)).floor()
        text_h = _lerp(0.08, 0.16, u[9])
        half_w = text_h * (n_chars * self.atlas.aspect / 2 + 0.3)
        half_h = text_h * 0.75
        fit = (0.46 * wx / half_w).clamp(max=1.0)  # shrink long strings to fit the width
        text_h, half_w, half_h = text_h * fit, half_w * fit, half_h * fit
        angle = (u[10] - 0.5) * 0.5
        ext_x = half_w * angle.cos().abs() + half_h * angle.sin().abs()
        ext_y = half_w * angle.sin().abs() + half_h * angle.cos().abs()
        cx = ext_x + (wx - 2 * ext_x).clamp(min=0) * u[5]
        cy = ext_y + (hx - 2 * ext_y).clamp(min=0) * u[6]
        s["cx"] = torch.where(is_sign, cx, s["cx"])
        s["cy"] = torch.where(is_sign, cy, s["cy"])
        s["angle"] = torch.where(is_sign, angle, s["angle"])
        s["radius"] = torch.where(is_sign, half_w, s["radius"])
        s["ay"] = torch.where(is_sign, half_h / half_w, s["ay"])
        s["n_chars"] = n_chars.long()
        s["text_scale"] = half_w / text_h  # plate-local units -> text-line units

    # -- rendering --------------------------------------------------------------------------------

    def _noise(self, keys: Tensor, roughness: Tensor, channels: int = 2) -> Tensor:
        """Resolution-independent fBm value noise, [B, channels, H, W] roughly in [0, 1]."""
        hx, wx = self.extent
        mid = (max(8, round(64 * hx)), max(8, round(64 * wx)))
        rng = _Stream(keys ^ 0x27D4EB2F)
        total = 0.0
        amp = torch.ones_like(roughness)
        norm = torch.zeros_like(roughness)
        for cells in (3, 6, 12, 24):
            lat = rng.uniform(channels, math.ceil(cells * hx) + 1, math.ceil(cells * wx) + 1)
            up = F.interpolate(lat, size=mid, mode="bicubic", align_corners=True)
            total = total + up * amp[:, None, None, None]
            norm = norm + amp
            amp = amp * roughness
        total = total / norm[:, None, None, None]
        return F.interpolate(total, size=(self.height, self.width), mode="bilinear", align_corners=False)

    def _background(self, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Background RGB [B, 3, H, W] and the noise fields [B, 2, H, W] (channel 1 is for objects)."""
        xs, ys = self._xs, self._ys
        hx, wx = self.extent
        noise = self._noise(p["key"], p["roughness"])
        n0 = noise[:, 0]
        e = _expand
        ca, sa = e(p["tex_angle"].cos()), e(p["tex_angle"].sin())
        f = e(p["tex_freq"])
        u = (xs * ca + ys * sa) * f + e(p["warp"]) * (n0 - 0.5)
        v = (ys * ca - xs * sa) * f
        tex_type = p["texture"]
        tau = 2 * math.pi
        phase = e(p["tex_phase"])
        families = [
            lambda: ((n0 - 0.5) * 2.5 + 0.5).clamp(0, 1),
            lambda: torch.sigmoid(4 * torch.sin(tau * u + phase)),
            lambda: 0.5 + 0.5 * torch.sin(tau * u + 1.5 * torch.sin(tau * v * 0.5 + phase)),
            lambda: (torch.sin(tau * u) * torch.sin(tau * v) > 0).float(),
            lambda: ((u - u.round()) ** 2 + (v - v.round()) ** 2 < 0.09).float(),
            lambda: (torch.minimum((u - u.round()).abs(), (v - v.round()).abs()) < 0.07).float(),
            lambda: (
                0.5
                + 0.5 * torch.sin(tau * f * torch.sqrt((xs - wx / 2) ** 2 + (ys - hx / 2) ** 2) * 0.7 + phase)
            ),
        ]
        tex = torch.zeros_like(u)
        for i, fn in enumerate(families):
            chosen = tex_type == i
            if bool(chosen.any()):  # skip families absent from this batch (one host sync each)
                tex = torch.where(e(chosen), fn(), tex)
        ga = p["grad_angle"]
        g = ((xs - wx / 2) * e(ga.cos()) + (ys - hx / 2) * e(ga.sin())) * e(p["grad_strength"]) + 0.5
        g = g.clamp(0, 1)[:, None]
        a, b, pc = (p[k][:, :, None, None] for k in ("bg_a", "bg_b", "bg_p"))
        base = a + (b - a) * g
        rgb = base + (pc - base) * (tex * e(p["tex_contrast"]))[:, None]
        return rgb, noise

    def _composite(
        self, p: dict[str, Tensor], s: dict[str, Tensor], return_layers: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """Nearest-layer compositing: depth, owner layer (0 = background), owner-local coordinates."""
        xs, ys = self._xs, self._ys
        e = _expand
        depth = (e(p["bg_depth"]) + e(p["bg_tilt"]) * (self.extent[0] / 2 - ys)).clamp(10.0, 20.0)
        depth = depth.expand(-1, -1, self.width).contiguous()
        owner = torch.zeros_like(depth, dtype=torch.int64)
        lx = torch.zeros_like(depth)
        ly = torch.zeros_like(depth)
        layers = [depth] if return_layers else None
        pre = self._layer_constants(s)
        for k in range(self.max_layers):
            c = {name: e(v[:, k]) for name, v in pre.items()}
            dx, dy = xs - c["cx"], ys - c["cy"]  # [B, 1, W] and [B, H, 1]
            xa = dx * c["xx"] + dy * c["xy"]  # one full-size add
            ya = dy * c["yy"] - dx * c["yx"]
            inside = self._inside(xa, ya, c)
            plane = torch.clamp((c["d0"] + c["gx"] * dx) + c["gy"] * dy, c["near"], c["far"])
            closer = inside & (plane < depth)
            depth = torch.where(closer, plane, depth)
            owner = owner.masked_fill(closer, k + 1)
            lx = torch.where(closer, xa, lx)
            ly = torch.where(closer, ya, ly)
            if layers is not None:
                layers.append(torch.where(inside, plane, math.inf))
        stacked = torch.stack(layers, 1) if layers is not None else None
        return depth, owner, lx, ly, stacked

    @staticmethod
    def _layer_constants(s: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-layer [B, L] constants of the compositing loop, computed once for all layers."""
        cos, sin = s["angle"].cos() / s["radius"], s["angle"].sin() / s["radius"]
        shape = s["shape"]
        return {
            "cx": s["cx"],
            "cy": s["cy"],
            "xx": cos / s["ax"],
            "xy": sin / s["ax"],
            "yy": cos / s["ay"],
            "yx": sin / s["ay"],
            "d0": s["d0"],
            "gx": s["gx"],
            "gy": s["gy"],
            "near": s["near"],
            "far": s["far"],
            "inv_arm": 1.0 / s["arm"],
            "sector": 2 * math.pi / s["n"],
            "alpha": s["alpha"],
            "inv_h": 1.0 / s["h"],
            "inner2": s["inner"] * s["inner"],
            "is_star": (shape == 3) | (shape == 5) | (shape == 6),
            "is_box": (shape == 2) | (shape == len(SHAPES)),
            "is_cross": shape == 7,
            "active": s["active"],
        }

    @staticmethod
    def _inside(xa: Tensor, ya: Tensor, c: dict[str, Tensor]) -> Tensor:
        """Coverage of one layer's shape in its normalised local coordinates (inactive: empty)."""
        ax, ay = xa.abs(), ya.abs()
        r2 = xa * xa + ya * ya
        box = torch.maximum(ax, ay)
        cross = torch.minimum(torch.maximum(ax, ay * c["inv_arm"]), torch.maximum(ax * c["inv_arm"], ay))
        sector = c["sector"]
        phi = torch.remainder(torch.atan2(ya, xa), sector)
        star = torch.sqrt(r2) * torch.cos(torch.minimum(phi, sector - phi) - c["alpha"]) * c["inv_h"]
        # Round shapes compare the squared radius: r2 < 1 <=> r < 1.
        d = torch.where(
            c["is_star"], star, torch.where(c["is_box"], box, torch.where(c["is_cross"], cross, r2))
        )
        return (d < 1.0) & (r2 >= c["inner2"]) & c["active"]

    def _gather(self, values: Tensor, owner: Tensor) -> Tensor:
        """Per-pixel value of the owning layer: values [B, L] (layer k -> column k - 1)."""
        padded = torch.cat([torch.zeros_like(values[:, :1]), values], 1)
        return torch.gather(padded, 1, owner.flatten(1)).view_as(owner)

    def _shade_objects(
        self,
        p: dict[str, Tensor],
        s: dict[str, Tensor],
        owner: Tensor,
        lx: Tensor,
        ly: Tensor,
        noise: Tensor,
        bg_rgb: Tensor,
    ) -> Tensor:
        """Colour every object pixel: palette colour, stripes, plane or sphere shading, texture."""

        def g(name: str) -> Tensor:
            return self._gather(s[name], owner)

        la, le = p["light_angle"], p["light_elev"]
        light = torch.stack([la.cos() * le.cos(), la.sin() * le.cos(), le.sin()], 1)  # [B, 3]
        # Flat shading of the slanted plane, per layer.
        normal = torch.stack([-s["gx"] * 0.4, -s["gy"] * 0.4, torch.ones_like(s["gx"])], -1)
        normal = normal / normal.norm(dim=-1, keepdim=True)
        flat = (normal * light[:, None]).sum(-1).clamp(min=0) * 0.55 + 0.45
        shade = self._gather(flat, owner)
        # Sphere shading for round shapes.
        r2 = (lx * lx + ly * ly).clamp(max=1.0)
        nz = torch.sqrt(1 - r2)
        lam = (lx * _expand(light[:, 0]) + ly * _expand(light[:, 1]) + nz * _expand(light[:, 2])).clamp(min=0)
        sphere = g("sphere")
        shade = shade + sphere * (0.3 + 0.75 * lam - shade)
        spec = sphere * lam.pow(24) * 0.5
        # Stripes between the two object colours.
        sa = g("stripe_angle")
        stripe = torch.sigmoid(
            6 * torch.sin(2 * math.pi * g("stripe_freq") * (lx * sa.cos() + ly * sa.sin()))
        )
        mix = (stripe * g("stripes"))[:, None]
        c1 = torch.stack([self._gather(s["rgb"][..., i], owner) for i in range(3)], 1)
        c2 = torch.stack([self._gather(s["rgb2"][..., i], owner) for i in range(3)], 1)
        col = c1 + (c2 - c1) * mix
        tex = 1 + g("tex_amp") * (noise[:, 1] - 0.5) * 2
        col = col * (shade * tex)[:, None] + spec[:, None]
        return torch.where((owner > 0)[:, None], col, bg_rgb)

    def _draw_text(
        self, s: dict[str, Tensor], owner: Tensor, seg: Tensor, lx: Tensor, ly: Tensor, rgb: Tensor
    ) -> Tensor:
        """Draw the characters of every visible sign into `rgb` in place; return the glyph mask.

        Only sign pixels are processed (found with one host sync, which measured faster on a GPU
        than processing every pixel).
        """
        on_sign = (seg == SIGN_CLASS).flatten()
        text = torch.zeros_like(on_sign)
        idx = on_sign.nonzero().squeeze(1)
        if idx.numel() == 0:
            return text.view_as(seg)
        hw = self.height * self.width
        b = idx // hw
        k = owner.flatten()[idx] - 1
        scale = s["text_scale"][b, k]
        n_chars = s["n_chars"][b, k]
        tx = lx.flatten()[idx] * scale / self.atlas.aspect + n_chars / 2
        ty = ly.flatten()[idx] * s["ay"][b, k] * scale + 0.5
        col = tx.floor()
        valid = (col >= 0) & (col < n_chars) & (ty >= 0) & (ty <= 1)
        col = col.long().clamp(0, MAX_CHARS - 1)
        cov = self.atlas.sample(s["chars"][b, k, col], tx - col, ty) * valid
        ink = s["ink"][b, k]  # [N, 3]
        pix = idx % hw
        view = rgb.view(rgb.shape[0], 3, -1)
        old = view[b, :, pix]  # [N, 3]
        view[b, :, pix] = old + (ink - old) * cov[:, None]
        text[idx] = cov > 0.5
        return text.view_as(seg)

    def _finish(self, p: dict[str, Tensor], rgb: Tensor, depth: Tensor) -> Tensor:
        """Cast shadows, fog, lighting falloff, blur, exposure, gamma and grain."""
        e = _expand
        xs, ys = self._xs, self._ys
        hx, wx = self.extent
        h, w = self.height, self.width
        # Screen-space shadow: a pixel is shadowed if the pixel towards the light is clearly nearer.
        la = p["light_angle"]
        off = p["shadow_len"] * self.unit
        oy = (la.sin() * off).round().long()
        ox = (la.cos() * off).round().long()
        rows = (torch.arange(h, device=rgb.device)[None] + oy[:, None]).clamp(0, h - 1)
        cols = (torch.arange(w, device=rgb.device)[None] + ox[:, None]).clamp(0, w - 1)
        flat_idx = (rows[:, :, None] * w + cols[:, None, :]).flatten(1)
        caster = torch.gather(depth.flatten(1), 1, flat_idx).view_as(depth)
        shadow = (caster < depth - 0.3).float() * e(p["shadow"])
        fog = (depth / 20.0).clamp(max=1.0) * e(p["fog"])
        fog_rgb = p["bg_a"][:, :, None, None]
        rgb = rgb * (1 - shadow)[:, None]
        rgb = rgb + (fog_rgb - rgb) * fog[:, None]
        dxl = xs - wx / 2
        dyl = ys - hx / 2
        lg, vg = e(p["light_grad"]), e(p["vignette"])
        falloff = 1 + lg * (dxl * e(la.cos()) + dyl * e(la.sin())) - vg * (dxl * dxl + dyl * dyl)
        rgb = rgb * falloff[:, None]
        if bool((p["blur"] > 0).any()):
            blurred = F.avg_pool2d(rgb, 3, stride=1, padding=1, count_include_pad=False)
            rgb = rgb + (blurred - rgb) * p["blur"][:, None, None, None]
        rgb = (rgb * p["exposure"][:, None, None, None]).clamp(0, 1) ** p["gamma"][:, None, None, None]
        gi = (torch.arange(h, device=rgb.device) % 256)[:, None] * 256 + (
            torch.arange(w, device=rgb.device) % 256
        )
        grain_idx = (gi[None] + e(p["grain_off"])) % (256 * 256)
        grain = self._grain.flatten()[grain_idx]
        return (rgb + (grain * e(p["grain"]))[:, None]).clamp(0, 1)
