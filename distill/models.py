"""Distilled encoders (proxy and student): a timm backbone plus adaptor heads, one pair per teacher."""

from __future__ import annotations

from torch import Tensor, nn

from distill.adaptors import TeacherAdaptor
from distill.backbones import create_timm_backbone, input_granularity, split_features
from distill.config import ModelConfig
from distill.features import Features


def adaptor_key(teacher: str) -> str:
    """A module name for a teacher's adaptor (module names cannot hold dots, timm tags do)."""
    return teacher.replace(".", "__")


class DistilledModel(nn.Module):
    """A backbone that exposes a summary vector and a patch grid, with adaptor heads per teacher.

    Args:
        config: architecture (any timm model), its kwargs, and the adaptor hidden width.
        teacher_dims: teacher name -> (summary_dim, patch_dim) of its targets.
    """

    def __init__(self, config: ModelConfig, teacher_dims: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.model_config = config
        self.backbone = create_timm_backbone(config.arch, "random", **config.kwargs)
        self.dim = int(self.backbone.num_features)
        self.stride = input_granularity(self.backbone)
        cfg = self.backbone.pretrained_cfg
        self.register_buffer("input_mean", Tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", Tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.teacher_names = list(teacher_dims)
        hidden = config.adaptor_hidden
        self.adaptors = nn.ModuleDict(
            {adaptor_key(n): TeacherAdaptor(self.dim, hidden, s, p) for n, (s, p) in teacher_dims.items()}
        )

    def normalise(self, images: Tensor) -> Tensor:
        """Images in [0, 1] as the backbone takes them (standardised with its pretrained mean and std)."""
        return (images - self.input_mean) / self.input_std

    def features(self, images: Tensor) -> Features:
        """Backbone summary [B, D] and patches [B, D, H/stride, W/stride] of images in [0, 1]."""
        x = self.normalise(images)
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        return split_features(self.backbone, self.backbone.forward_features(x), grid)

    def forward(self, images: Tensor) -> dict[str, Features]:
        """Each teacher's adaptor output for images in [0, 1]."""
        features = self.features(images)
        return {name: self.adaptors[adaptor_key(name)](features) for name in self.teacher_names}
