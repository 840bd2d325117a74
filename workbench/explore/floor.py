"""The random floor beside distilled encoders: a student's architecture at random init, named by what it is.

The scoreboard scores it as `random:<checkpoint>` (the architecture of that checkpoint, seeded weights);
the apps show the same model, so nothing looks learned that a random network shows too.
"""

from __future__ import annotations

import functools
import json

import torch
from torch import nn

from distill.backbones import create_timm_backbone
from distill.checkpoint import read_meta
from workbench.eval.encoders import FLOOR_PREFIX, Encoder, existing_checkpoint, random_encoder

FLOOR_SUFFIX = "(random init)"


def describe(backbone: nn.Module) -> str:
    """What a timm backbone is, in a few words: family, width x depth, parameters, e.g. 'ViT 192x4, 1.9M'."""
    params = sum(p.numel() for p in backbone.parameters()) / 1e6
    blocks, stages = getattr(backbone, "blocks", None), getattr(backbone, "stages", None)
    if blocks is not None:
        shape = f"ViT {backbone.num_features}x{len(blocks)}"
    elif stages is not None:
        shape = f"{type(backbone).__name__} {backbone.num_features}x{len(stages)}"
    else:
        shape = type(backbone).__name__
    return f"{shape}, {params:.2g}M"


@functools.lru_cache(maxsize=32)
def architecture_name(arch: str, kwargs: str) -> str:
    """`describe` of a timm architecture with JSON `kwargs`, built on the meta device (no weights)."""
    with torch.device("meta"):
        return describe(create_timm_backbone(arch, "random", **json.loads(kwargs)))


def floor_name(spec: str) -> str:
    """The display name of the floor a `random:<checkpoint>` spec names, from the checkpoint's architecture,
    e.g. 'ViT 192x4, 1.9M (random init)'."""
    config = read_meta(existing_checkpoint(spec.removeprefix(FLOOR_PREFIX)))["model_config"]
    kwargs = json.dumps(config.get("kwargs", {}), sort_keys=True)
    return f"{architecture_name(config['arch'], kwargs)} {FLOOR_SUFFIX}"


def floor_encoder(spec: str, resolution: int | None = None, seed: int = 0) -> Encoder:
    """The floor a `random:<checkpoint>` spec names, as the scoreboard builds it (same seed, same weights)."""
    encoder = random_encoder(spec.removeprefix(FLOOR_PREFIX), resolution, seed)
    encoder.name = floor_name(spec)
    return encoder
