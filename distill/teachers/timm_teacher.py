"""Any timm model as a teacher: ViTs with CLS/register tokens, ConvNeXt, CNNs."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from distill.backbones import (
    TIMM_ALIASES,
    create_timm_backbone,
    input_granularity,
    split_features,
)
from distill.features import Features
from distill.teachers.base import Teacher


class TimmTeacher(Teacher):
    """A frozen timm model as a teacher.

    Args:
        model_name: timm name or short name (see `TIMM_ALIASES`).
        weights: "random", "pretrained" (hub) or "file".
        checkpoint: local weights for weights="file".
        resolution: square input side; None keeps the input size, rounded to the patch size/stride.
    """

    def __init__(
        self,
        model_name: str,
        weights: str = "pretrained",
        checkpoint: str | Path | None = None,
        resolution: int | None = None,
    ) -> None:
        model = create_timm_backbone(model_name, weights, checkpoint)
        cfg = model.pretrained_cfg
        super().__init__(cfg["mean"], cfg["std"], resolution, size_multiple=input_granularity(model))
        self.model = model
        self.model_name = TIMM_ALIASES.get(model_name, model_name)
        self.summary_dim = self.patch_dim = int(model.num_features)
        self.patch_stride = self.size_multiple
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        grid = (x.shape[-2] // self.patch_stride, x.shape[-1] // self.patch_stride)
        return split_features(self.model, self.model.forward_features(x), grid)
