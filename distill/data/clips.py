"""Short clips of generated scenes whose objects move, with exact per-frame object masks.

Clip i of a seed starts from scene i of `SceneGenerator` with that seed (its objects enlarged by
`object_scale`; at 1, frame 0 is that scene bit for bit) and moves every object smoothly over the frames: a
constant velocity, growth rate and spin per object, drawn from the same counter-based random numbers (so a
clip is the same whatever batch it is drawn in). The background, lighting and camera stay fixed. Each frame
is rendered by the scene generator itself, so occlusion, shading, shadows and text follow the objects and
the masks are exact by construction.

Masks name the objects of the first frame, as in semi-supervised video object segmentation (DAVIS): 1..K
for the objects covering at least `min_area` of the first frame (in order of their layer), 0 for the
background and for every other object, including any that enters later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data.scenes import SceneGenerator, _Stream, object_ids, sample_keys

MOTION_STREAM = 0x3C6EF372  # keys of the motion draws: independent of the scene's own


@dataclass
class ClipBatch:
    """Generated clips.

    Attributes:
        frames: [N, T, 3, H, W] float32 RGB in [0, 1].
        masks: [N, T, H, W] int64 object ids: 0 background, 1..K the first frame's objects.
    """

    frames: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return self.frames.shape[0]


class ClipGenerator:
    """Seeded clips of moving objects over a generated scene.

    Args:
        resolution: frame size, an int for square frames or (height, width).
        frames: frames per clip (>= 2).
        seed: the seed of the scenes the clips start from.
        max_layers: object layers per scene (few, so objects stay large enough to follow; >= 4).
        object_scale: every object's size relative to its scene's (larger objects are easier to follow; 1
            keeps frame 0 the scene itself).
        text_probability: as for `SceneGenerator` (None: each theme's own).
        max_speed: the fastest motion, in scene units (the shorter side) per frame.
        max_growth: each object's size changes by a factor in [1 / (1 + g), 1 + g] per frame.
        max_spin: each object turns by at most this many radians per frame.
        min_area: the share of the first frame an object must cover to be labelled.
        device: where the clips are rendered.
    """

    def __init__(
        self,
        resolution: int | tuple[int, int] = 128,
        frames: int = 8,
        seed: int = 0,
        max_layers: int = 6,
        object_scale: float = 1.5,
        text_probability: float | None = None,
        max_speed: float = 0.03,
        max_growth: float = 0.03,
        max_spin: float = 0.1,
        min_area: float = 0.02,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 2:
            raise ValueError(f"a clip needs frames >= 2, got {frames!r}")
        if min(max_speed, max_growth, max_spin) < 0 or object_scale <= 0 or not 0 <= min_area < 1:
            raise ValueError("motion limits must be >= 0, object_scale > 0 and min_area in [0, 1)")
        self.scenes = SceneGenerator(resolution, device, seed, max_layers, text_probability)
        self.frames = frames
        self.max_speed, self.max_growth, self.max_spin = max_speed, max_growth, max_spin
        self.object_scale = object_scale
        self.min_area = min_area

    def batch(self, start: int, size: int) -> ClipBatch:
        """Clips `start` .. `start + size - 1` of this seed."""
        scenes = self.scenes
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"start must be a non-negative int, got {start!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        keys = sample_keys(scenes.seed, torch.arange(start, start + size, device=scenes.device))
        p, slots = scenes.parameters(keys)
        slots["radius"] = slots["radius"] * self.object_scale
        motion = self.motion(keys)
        frames, objects = [], []
        for t in range(self.frames):
            drawn = scenes.draw(p, slots | self.moved(slots, motion, t))
            frames.append(drawn.images)
            objects.append(object_ids(drawn.instances, scenes.max_layers))
        return ClipBatch(torch.stack(frames, 1), self.first_frame_objects(torch.stack(objects, 1)))

    def motion(self, keys: Tensor) -> dict[str, Tensor]:
        """Per-layer [B, L] velocity (vx, vy), growth factor and spin per frame."""
        u = _Stream(keys ^ MOTION_STREAM).uniform(self.scenes.max_layers, 4).unbind(2)
        speed, heading = self.max_speed * u[0], 2 * math.pi * u[1]
        growth = (1 + self.max_growth) ** (2 * u[2] - 1)
        return {"vx": speed * heading.cos(), "vy": speed * heading.sin(), "growth": growth,
                "spin": self.max_spin * (2 * u[3] - 1)}  # fmt: skip

    @staticmethod
    def moved(slots: dict[str, Tensor], motion: dict[str, Tensor], t: int) -> dict[str, Tensor]:
        """The layer parameters that change at frame `t`: position, size and angle."""
        return {
            "cx": slots["cx"] + motion["vx"] * t,
            "cy": slots["cy"] + motion["vy"] * t,
            "radius": slots["radius"] * motion["growth"] ** t,
            "angle": slots["angle"] + motion["spin"] * t,
        }

    def first_frame_objects(self, objects: Tensor) -> Tensor:
        """Layer ids [N, T, H, W] to masks: the layers covering `min_area` of frame 0 as 1..K, the rest 0."""
        layers = self.scenes.max_layers
        area = torch.zeros(objects.shape[0], layers + 1, device=objects.device)
        area.scatter_add_(
            1, objects[:, 0].flatten(1), torch.ones_like(objects[:, 0].flatten(1), dtype=area.dtype)
        )
        kept = area / objects[0, 0].numel() >= self.min_area
        kept[:, 0] = False
        relabel = torch.where(kept, kept.long().cumsum(1), 0)  # [N, L + 1]: layer -> 1..K or 0
        return torch.gather(relabel, 1, objects.flatten(1)).view_as(objects)
