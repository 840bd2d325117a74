"""What an evaluation reads and how long its probes train, importable without torch (so `eupe --help` is
quick)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalSettings:
    """What the evaluation reads and how long the probes train (all seeded).

    The defaults keep a CPU evaluation of the toy run to minutes: the CRAFT and HED experts are
    VGG16-sized. Dense probes read patch grids area-pooled to at most `max_grid` per side. The
    correspondence probe warps the first `correspondence_pairs` test scenes and as many photo crops. The
    propagation probe follows the objects of `clips` generated clips of `clip_frames` frames. The photo
    crops come from the `photo_split` photos (`distill.data.photos.photo_names`): `held_out`, which no
    training view crops, or `train`, new crops of the photos training views crop; the two together tell
    what a model learned from what it memorised.
    """

    resolution: int = 128
    scene_train: int = 384
    scene_test: int = 192
    fashion_train: int = 600
    fashion_test: int = 300
    fashion_resolution: int = 64
    photos: int = 64
    photo_split: str = "held_out"
    correspondence_pairs: int = 32
    clips: int = 8
    clip_frames: int = 8
    probe_steps: int = 300
    max_grid: int = 32
    batch_size: int = 32
    latency_repeats: int = 5
    seed: int = 0
