"""Behaviour checks of the three offline experts on real photos and rendered text.

Each check measures one thing the expert is known to do and compares it with a pass mark; the
tests and `eupe teachers check` call the same functions. An expert's spec names its check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data.images import square_view
from distill.data.photos import load_photo
from distill.teachers.base import Teacher
from distill.teachers.registry import expert_spec, resolve

IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat

# text (CRAFT, MLT 25k weights, fp16 cache) on a TEXT_CANVAS image, sides multiples of 32 so no resize
# happens. Measured: the three TEXT_WORDS reach region 0.91-0.99 and affinity 0.86-0.93 inside their
# boxes and at most 0.08 outside; blank white stays at 0.01, chelsea 0.06, coffee 0.10 (0.16 at
# 192x256); every pixel with region > 0.5 lies in the word's box. Wide margins on both sides.
TEXT_CANVAS = (128, 192)  # (height, width)
TEXT_WORDS = (("hello", 32, 255), ("TEXT 42", 24, 230), ("Sale", 40, 200))  # (text, font px, background)
TEXT_FREE_PHOTOS = ("chelsea", "coffee")
TEXT_BOX_PAD = 8  # the score blob may spill a few pixels past the glyphs' box
TEXT_MIN_REGION = 0.7
TEXT_MIN_AFFINITY = 0.5  # links between neighbouring characters
TEXT_MIN_HOT_IN_BOX = 0.8  # share of region > 0.5 pixels inside the word's box
NO_TEXT_MAX_REGION = 0.35

# edges (HED, fused output) on EDGE_SIDE px square views. Measured: Pearson r with the Sobel magnitude
# 0.67 (camera), 0.58 (astronaut); inside a 16 px border flat images peak at 0.057 (mid grey), camera at
# 0.98. HED (the reference too) answers the zero-padded image border, up to ~0.38, hence the border.
EDGE_SIDE = 160
EDGE_MIN_R = {"camera": 0.55, "astronaut": 0.45}
EDGE_BORDER = 16
FLAT_COLOURS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (0.3, 0.6, 0.9))
FLAT_MAX_EDGE = 0.1
PHOTO_MIN_EDGE = 0.9  # camera's strongest edge inside the border


@dataclass
class CheckResult:
    """Outcome of one behaviour check: what was measured, its value(s), and whether it passed."""

    expert: str
    claim: str
    measured: dict[str, float]
    passed: bool

    def line(self) -> str:
        """One printable line: PASS/FAIL, expert, claim, measurements."""
        values = ", ".join(f"{k}={v:.3g}" for k, v in self.measured.items())
        return f"{'PASS' if self.passed else 'FAIL'}  {self.expert:9s} {self.claim}: {values}"


def photo_batch(name: str, resolution: int) -> Tensor:
    """A bundled photo as a [1, 3, R, R] square view."""
    return square_view(load_photo(name), resolution)[None]


def render_text(
    text: str,
    size: int,
    background: int,
    canvas: tuple[int, int] = TEXT_CANVAS,
    origin: tuple[int, int] = (12, 40),
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Black `text` in DejaVu Sans, `size` px, at `origin` (x, y) on a grey-level `background` canvas
    (height, width): ([3, H, W] in [0, 1], the text's bounding box (x0, y0, x1, y1))."""
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", canvas[::-1], (background,) * 3)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    draw.text(origin, text, fill=(0, 0, 0), font=font)
    box = draw.textbbox(origin, text, font=font)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255, box


def sobel_magnitude(images: Tensor) -> Tensor:
    """Sobel gradient magnitude [B, 1, H, W] of the greyscale (channel mean) images [B, C, H, W]."""
    grey = images.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), torch.stack([kx, kx.T])[:, None])
    return grad.norm(dim=1, keepdim=True)


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two tensors' values (float64)."""
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def check_semantic(teacher: Teacher) -> CheckResult:
    """EfficientNet-Lite0 puts scikit-image's chelsea photo in an ImageNet cat class (281-285)."""
    probs = teacher.expert_output(load_photo("chelsea")[None]).softmax(-1)[0]
    top1 = int(probs.argmax())
    cat_mass = float(probs[list(IMAGENET_CAT_CLASSES)].sum())
    return CheckResult(
        "semantic", "chelsea -> ImageNet cat class", {"top1_class": top1, "cat_probability": cat_mass},
        passed=top1 in IMAGENET_CAT_CLASSES,
    )  # fmt: skip


def stretched_photo(name: str, size: tuple[int, int]) -> Tensor:
    """A bundled photo resized (aspect not kept) to `size` (height, width), as [3, H, W] in [0, 1]."""
    return F.interpolate(load_photo(name)[None], size=size, mode="bilinear", antialias=True).clamp(0, 1)[0]


def check_text(teacher: Teacher) -> CheckResult:
    """CRAFT's region score fires inside rendered words' boxes, not outside them, not on text-free images."""
    rendered = [render_text(*word) for word in TEXT_WORDS]
    empty = [torch.ones(3, *TEXT_CANVAS)] + [stretched_photo(name, TEXT_CANVAS) for name in TEXT_FREE_PHOTOS]
    scores = teacher.expert_output(torch.stack([image for image, _ in rendered] + empty))
    inside, link, outside, hot_in_box = [], [], [], []
    pad = TEXT_BOX_PAD
    for (_, (x0, y0, x1, y1)), (region, affinity) in zip(rendered, scores[: len(rendered)], strict=True):
        box = torch.zeros(TEXT_CANVAS, dtype=torch.bool)
        box[max(y0 - pad, 0) : y1 + pad, max(x0 - pad, 0) : x1 + pad] = True
        hot = region > 0.5
        inside.append(float(region[box].max()))
        link.append(float(affinity[box].max()))
        outside.append(float(region[~box].max()))
        hot_in_box.append(float((hot & box).sum() / hot.sum()))  # nan (so failing) if nothing is hot
    blank, *photos = scores[len(rendered) :, 0].amax((1, 2)).tolist()
    measured = {
        "word_region_min": min(inside),
        "word_affinity_min": min(link),
        "outside_region_max": max(outside),
        "hot_in_box_min": min(hot_in_box),
        "blank_region_max": blank,
    } | {f"{name}_region_max": value for name, value in zip(TEXT_FREE_PHOTOS, photos, strict=True)}
    passed = (
        measured["word_region_min"] > TEXT_MIN_REGION
        and measured["word_affinity_min"] > TEXT_MIN_AFFINITY
        and measured["hot_in_box_min"] > TEXT_MIN_HOT_IN_BOX
        and max(*outside, blank, *photos) < NO_TEXT_MAX_REGION
    )
    return CheckResult("text", "region fires on rendered words only", measured, passed)


def interior_max(edges: Tensor) -> float:
    """Max edge response at least EDGE_BORDER px away from the image border."""
    return float(edges[..., EDGE_BORDER:-EDGE_BORDER, EDGE_BORDER:-EDGE_BORDER].max())


def check_edges(teacher: Teacher) -> CheckResult:
    """HED's fused edges follow the Sobel magnitude of photos and stay off flat images."""
    photos = {name: photo_batch(name, EDGE_SIDE) for name in EDGE_MIN_R}
    edges = {name: teacher.expert_output(images) for name, images in photos.items()}
    measured = {f"r_{name}": pearson(edges[name], sobel_magnitude(photos[name])) for name in photos}
    flat = torch.tensor(FLAT_COLOURS)[:, :, None, None].expand(-1, -1, EDGE_SIDE, EDGE_SIDE)
    measured["flat_edge_max"] = interior_max(teacher.expert_output(flat))
    measured["camera_edge_max"] = interior_max(edges["camera"])
    passed = (
        all(measured[f"r_{name}"] > r for name, r in EDGE_MIN_R.items())
        and measured["flat_edge_max"] < FLAT_MAX_EDGE
        and measured["camera_edge_max"] > PHOTO_MIN_EDGE
    )
    return CheckResult("edges", "edges follow Sobel on photos, none on flat images", measured, passed)


@torch.no_grad()
def run_check(expert: str, teacher: Teacher) -> CheckResult:
    """Run the behaviour check named in `expert`'s spec on a built teacher."""
    return resolve(expert_spec(expert).check)(teacher)
