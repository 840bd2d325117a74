"""What a probe's `run()` reads: an encoder's features on the evaluation sets (extracted once, shared by the
probes), and the experts' own readings of the held-out photos (built once per evaluation)."""

from __future__ import annotations

import torch
from torch import Tensor

from distill.features import Features
from distill.teachers import EXPERTS, Teacher, build_teacher
from workbench.eval.data import EvalData
from workbench.eval.encoders import Encoder, EncoderFeatures
from workbench.eval.expert_heads import expert_reading


def extract(encoder: Encoder, images: Tensor, batch_size: int, with_experts: bool = False) -> EncoderFeatures:
    """Features of many images, in batches on the encoder's device, gathered on the CPU (patches as
    float16, to bound memory)."""
    parts = []
    for start in range(0, len(images), batch_size):
        out = encoder(images[start : start + batch_size], with_experts)
        experts = {n: Features(e.summary.cpu(), e.patches.cpu()) for n, e in out.experts.items()}
        parts.append(EncoderFeatures(out.summary.cpu(), out.patches.half().cpu(), experts))
    experts = {
        name: Features(
            *(torch.cat([getattr(p.experts[name], f) for p in parts]) for f in ("summary", "patches"))
        )
        for name in parts[0].experts
    }
    return EncoderFeatures(
        torch.cat([p.summary for p in parts]), torch.cat([p.patches for p in parts]), experts
    )


class ProbeInputs:
    """One encoder's features on the evaluation sets, extracted on first use and then reused.

    Args:
        encoder: the encoder.
        data: the evaluation sets.
        batch_size: images per forward pass.
    """

    def __init__(self, encoder: Encoder, data: EvalData, batch_size: int) -> None:
        self.encoder, self.data, self.batch_size = encoder, data, batch_size
        self.cache: dict[str, EncoderFeatures] = {}

    def features(self, split: str) -> EncoderFeatures:
        """Features of `scenes_train`, `scenes_test`, `fashion_train`, `fashion_test` or `photos`."""
        if split not in self.cache:
            images = getattr(self.data, split)
            images = images if isinstance(images, Tensor) else images.images
            self.cache[split] = extract(self.encoder, images, self.batch_size, with_experts=split == "photos")
        return self.cache[split]


class ExpertReferences:
    """The experts, and their own readings of the photo crops (built on first use, once per evaluation)."""

    def __init__(self, names: list[str], photos: Tensor) -> None:
        self.names, self.photos = [n for n in names if n in EXPERTS], photos
        self.experts: dict[str, Teacher] = {}
        self.readings: dict[str, Tensor] = {}
        self.own: dict[str, Features] = {}

    def ready(self) -> ExpertReferences:
        """Build the experts and read the photos, if not yet done."""
        if not self.experts:
            size = tuple(self.photos.shape[-2:])
            self.experts = {name: build_teacher(name) for name in self.names}
            with torch.no_grad():
                self.own = {name: expert(self.photos) for name, expert in self.experts.items()}
            self.readings = {n: expert_reading(n, e, self.own[n], size) for n, e in self.experts.items()}
        return self

    def read(self, features: dict[str, Features]) -> dict[str, Tensor]:
        """Each expert's head applied to an encoder's estimate of that expert's features."""
        size = tuple(self.photos.shape[-2:])
        return {
            n: expert_reading(n, e, features[n], size)
            for n, e in self.ready().experts.items()
            if n in features
        }


def first_patches(inputs: ProbeInputs, split: str, count: int) -> Tensor:
    """Patch grids of the first `count` images of a split: sliced from the split's features where another
    probe extracted them already, else extracted for those images alone."""
    if split in inputs.cache:
        return inputs.cache[split].patches[:count]
    images = getattr(inputs.data, split)
    images = images if isinstance(images, Tensor) else images.images
    return extract(inputs.encoder, images[:count], inputs.batch_size).patches
