"""The one interface every teacher implements: frozen, eval-mode, images in [0, 1] in, features out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.features import Features


def check_images(images: Tensor) -> None:
    """Raise a one-line ValueError unless `images` is a float [B, 3, H, W] batch in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            f"images must lie in [0, 1], got range [{images.min().item():.3g}, {images.max().item():.3g}]"
        )


class Teacher(nn.Module):
    """A frozen feature extractor with its own input normalisation and resizing.

    Subclasses set `summary_dim`, `patch_dim`, `patch_stride`, build their layers, call
    `self.freeze()` once weights are loaded, and implement `encode` on normalised input; an expert
    (see `registry`) also implements `head`. Calling the teacher on a [B, 3, H, W] batch in [0, 1]
    returns a `Features`.

    Args:
        mean: per-channel mean of the input normalisation (RGB, in [0, 1] units).
        std: per-channel std of the input normalisation.
        resolution: if set, images are resized to this square side before encoding;
            otherwise each side is rounded to the nearest multiple of `size_multiple`.
        size_multiple: the input side length granularity the network needs.
    """

    summary_dim: int
    patch_dim: int
    patch_stride: int

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        resolution: int | None = None,
        size_multiple: int = 1,
    ) -> None:
        super().__init__()
        if resolution is not None and resolution < size_multiple:
            raise ValueError(f"resolution {resolution} is below this teacher's minimum of {size_multiple} px")
        self.resolution = resolution
        self.size_multiple = size_multiple
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> Teacher:
        """Put the teacher in eval mode with every parameter frozen, its convolutions channels-last.

        Channels-last ran the CNN experts 1.1-4.9x faster on the 2-core CPU (docs/learning.md), with the
        same outputs; cuDNN's fast convolution kernels want it too.
        """
        self.requires_grad_(False)
        self.to(memory_format=torch.channels_last)
        return super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Teachers stay in eval mode whatever the caller asks."""
        return super().train(False)

    def encoder_modules(self) -> list[nn.Module]:
        """The modules that compute its features (what a parameter count of the encoder counts)."""
        return [self]

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the network is run at for an image of the given size."""
        if self.resolution is not None:
            return self.resolution, self.resolution
        m = self.size_multiple
        return max(m, round(height / m) * m), max(m, round(width / m) * m)

    def prepare(self, images: Tensor) -> Tensor:
        """Check, resize and normalise a [B, 3, H, W] batch in [0, 1]."""
        check_images(images)
        size = self.input_size(*images.shape[-2:])
        x = images.to(self.input_mean.device, torch.float32)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.input_mean) / self.input_std).contiguous(memory_format=torch.channels_last)

    def encode(self, x: Tensor) -> Features:
        """Features of a prepared (resized, normalised) batch."""
        raise NotImplementedError

    def head(self, features: Features, size: tuple[int, int]) -> Tensor:
        """An expert's own prediction from (possibly adapted) features of images of `size` (height, width);
        what it returns is the expert's `ExpertSpec.reading`. Teachers that are not experts have none."""
        raise NotImplementedError(f"{type(self).__name__} has no expert head")

    @torch.no_grad()
    def forward(self, images: Tensor) -> Features:
        return self.encode(self.prepare(images))
