"""Feature-consistent augmentation: one crop box and flip per view, applied to the image and to its
cached teacher patch grid alike, so both cover exactly the same part of the view.

Boxes are in view units ((0, 0, 1, 1) is the whole view) and aligned to a grid of `cells` x `cells`
cells (the student's patch grid). A grid cell (i, j) of any h x w feature grid covers the view region
[j / w, (j + 1) / w] x [i / h, (i + 1) / h]; resampling with `roi_align(aligned=True)` puts every
output pixel or cell centre at the same view position, whatever the grid's size. Near the view's
border both sides replicate their outermost pixel or cell (bilinear, align_corners=False).
Flips keep a summary target valid (a pooled summary is nearly flip invariant); crops do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import roi_align


@dataclass
class ViewTransforms:
    """Per-sample crop boxes and flips of a batch of square views.

    Attributes:
        boxes: [B, 4] float (x0, y0, x1, y1) in view units, inside [0, 1].
        flips: [B] bool, a horizontal flip applied after cropping.
    """

    boxes: Tensor
    flips: Tensor

    @property
    def cropped(self) -> Tensor:
        """[B] bool: the box is not the whole view (the summary target no longer applies)."""
        whole = torch.tensor([0.0, 0.0, 1.0, 1.0], device=self.boxes.device, dtype=self.boxes.dtype)
        return (self.boxes != whole).any(-1)

    @property
    def summary_valid(self) -> Tensor:
        """[B] bool: the cached summary target still describes the transformed view."""
        return ~self.cropped


def draw_transforms(
    batch: int, cells: int, generator: torch.Generator, flip_p: float, crop_p: float, min_cells: int
) -> ViewTransforms:
    """Random flips and grid-aligned square crops, drawn from `generator` only.

    Args:
        batch: number of views.
        cells: the crop grid's side in cells (e.g. 8 for a 128 px view and patch 16).
        generator: the only source of randomness (seed it per step for an exact resume).
        flip_p: probability of a horizontal flip.
        crop_p: probability of a crop; otherwise the box is the whole view.
        min_cells: smallest crop side in cells; a crop's side k is uniform in [min_cells, cells - 1]
            and its offset uniform over the integer cell positions that keep it inside the view.

    Returns:
        The transforms, on the generator's device.
    """
    if not 0 <= flip_p <= 1 or not 0 <= crop_p <= 1:
        raise ValueError(f"flip_p and crop_p must lie in [0, 1], got {flip_p} and {crop_p}")
    if not 1 <= min_cells < cells:
        raise ValueError(f"min_cells must lie in [1, {cells - 1}] for a {cells}-cell grid, got {min_cells}")
    device = generator.device

    def uniform() -> Tensor:
        return torch.rand(batch, generator=generator, device=device)

    flips = uniform() < flip_p
    crop = uniform() < crop_p
    side = torch.randint(min_cells, cells, (batch,), generator=generator, device=device)
    side = torch.where(crop, side, cells).float()
    x0, y0 = ((uniform() * (cells + 1 - side)).floor() for _ in range(2))
    boxes = torch.stack([x0, y0, x0 + side, y0 + side], dim=-1) / cells
    return ViewTransforms(boxes, flips)


def resample(x: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Each box (view units) of [B, C, H, W] bilinearly resampled to `size`, averaging when shrinking.

    Output pixel (i, j) is the box's point at fraction ((j + 0.5) / size[1], (i + 0.5) / size[0]);
    where a bin spans several input pixels, ceil(span) x ceil(span) samples are averaged.
    """
    height, width = x.shape[-2:]
    scale = torch.tensor([width, height, width, height], device=x.device, dtype=torch.float32)
    index = torch.arange(x.shape[0], device=x.device, dtype=torch.float32)[:, None]
    rois = torch.cat([index, boxes.to(x.device, torch.float32) * scale], dim=1)
    out = roi_align(x.float(), rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out.to(x.dtype)


def apply_transforms(x: Tensor, t: ViewTransforms, size: tuple[int, int]) -> Tensor:
    """[B, C, H, W] -> [B, C, *size]: each box resampled to `size`, then flipped where `t.flips`.

    When `size` is the input's, uncropped rows are the input's own values (bit-exact); no device sync.
    """
    out = resample(x, t.boxes, size)
    if tuple(x.shape[-2:]) == tuple(size):
        out = torch.where(t.cropped.to(x.device)[:, None, None, None], out, x)
    return torch.where(t.flips.to(x.device)[:, None, None, None], out.flip(-1), out)


def transform_images(images: Tensor, t: ViewTransforms, side: int) -> Tensor:
    """Float images [B, 3, H, W] -> [B, 3, side, side]: each view's box resampled to `side`, then flipped.

    Untransformed views at their own side come back exactly as given.
    """
    return apply_transforms(images, t, (side, side))


def transform_grid(patches: Tensor, t: ViewTransforms) -> Tensor:
    """Cached teacher grids [B, C, h, w] -> [B, C, h, w]: the same boxes and flips as the images.

    The transformed grid's cell centres sample the view positions of the transformed image's
    matching points; identity boxes come back exactly as given. Computed in float32, returned in
    the input's dtype.
    """
    return apply_transforms(patches, t, (patches.shape[-2], patches.shape[-1]))
