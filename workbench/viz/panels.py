"""Pictures for the apps: feature grids, heatmaps and label maps turned into uint8 RGB arrays.

Patch grids are upsampled with nearest-neighbour interpolation so every patch stays visible as a block.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from workbench.viz.pca import PCABasis, foreground_mask


def to_picture(rgb: Tensor, size: int | tuple[int, int]) -> np.ndarray:
    """[3, h, w] colours in [0, 1] -> uint8 [H, W, 3] of `size` (H, W), or [S, S, 3] of a side S,
    nearest-upsampled."""
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"colours must have shape [3, h, w], got {list(rgb.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    big = F.interpolate(rgb[None].float(), size=size, mode="nearest")[0]
    return (big.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def colorize(values: Tensor, cmap: str = "coolwarm", vmin: float = -1.0, vmax: float = 1.0) -> Tensor:
    """[h, w] values -> [3, h, w] colours of a matplotlib colour map over [vmin, vmax]."""
    if values.ndim != 2:
        raise ValueError(f"values must have shape [h, w], got {list(values.shape)}")
    scaled = ((values.detach().float().cpu() - vmin) / max(vmax - vmin, 1e-12)).clamp(0, 1).numpy()
    return torch.from_numpy(matplotlib.colormaps[cmap](scaled)[..., :3]).permute(2, 0, 1).float()


def overlay(image: Tensor, colours: Tensor, alpha: float = 0.65) -> np.ndarray:
    """Colours [3, h, w] (any grid) blended over an image [3, H, W] -> uint8 [H, W, 3]."""
    size = tuple(image.shape[-2:])
    top = F.interpolate(colours[None].float(), size=size, mode="nearest")[0]
    return to_picture((1 - alpha) * image.float().cpu() + alpha * top, size)


def mark_point(
    picture: np.ndarray, point: tuple[float, float], colour: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """A copy of a uint8 [H, W, 3] picture with a cross at `point` (x, y in [0, 1])."""
    marked = picture.copy()
    height, width = marked.shape[:2]
    x, y = min(int(point[0] * width), width - 1), min(int(point[1] * height), height - 1)
    arm, thick = max(4, width // 40), max(1, width // 200)
    marked[max(0, y - thick) : y + thick + 1, max(0, x - arm) : x + arm + 1] = colour
    marked[max(0, y - arm) : y + arm + 1, max(0, x - thick) : x + thick + 1] = colour
    return marked


def match_lines(
    picture_a: np.ndarray,
    picture_b: np.ndarray,
    points_a: Tensor,
    points_b: Tensor,
    colours: list[tuple[int, int, int]],
    widths: list[int],
    gap: int = 8,
) -> np.ndarray:
    """Pictures A and B (uint8 [S, S, 3]) side by side on white, with a line from each point of A
    ([N, 2] normalised (x, y)) to its partner in B, in its colour and width ([N] RGB tuples, [N] px)."""
    if picture_a.shape != picture_b.shape:
        raise ValueError(f"pictures must have one shape, got {picture_a.shape} and {picture_b.shape}")
    if not len(points_a) == len(points_b) == len(colours) == len(widths):
        raise ValueError(
            f"need one colour and width per pair, got {len(points_a)} points in A, {len(points_b)} in B, "
            f"{len(colours)} colours and {len(widths)} widths"
        )
    height, side = picture_a.shape[:2]
    joined = np.full((height, 2 * side + gap, 3), 255, np.uint8)
    joined[:, :side], joined[:, side + gap :] = picture_a, picture_b
    image = Image.fromarray(joined)
    draw = ImageDraw.Draw(image)
    scale = torch.tensor([side - 1, height - 1], dtype=torch.float32)
    pairs = zip(points_a.float() * scale, points_b.float() * scale, colours, widths, strict=True)
    for a, b, colour, width in pairs:
        draw.line([(float(a[0]), float(a[1])), (float(b[0]) + side + gap, float(b[1]))], colour, width)
    return np.asarray(image).copy()


def rainbow(count: int) -> list[tuple[int, int, int]]:
    """`count` uint8 RGB colours spread over a rainbow, so neighbouring lines are told apart."""
    values = matplotlib.colormaps["rainbow"](np.linspace(0, 1, max(count, 1)))[:count, :3]
    return [tuple(round(c * 255) for c in colour) for colour in values.tolist()]


def pca_colours(
    grids: dict[str, Tensor], joint: bool = False, masked: bool = False, threshold: float = 0.0
) -> dict[str, Tensor]:
    """PCA-RGB of several patch grids, each [1, D, h, w].

    Args:
        grids: name -> one image's patch grid.
        joint: colour every grid in the basis of the first (the reference, e.g. an expert's own features
            before the estimates of them), so a colour means the same feature direction in every panel and
            adding a grid recolours none of the others; they must share the feature dimension D.
            Otherwise one basis per grid.
        masked: paint background patches (`foreground_mask` of each grid) black and fit on foreground.
        threshold: the foreground cut in standard deviations.

    Returns:
        name -> [3, h, w] colours in [0, 1].
    """
    if joint and len({g.shape[1] for g in grids.values()}) > 1:
        dims = ", ".join(f"{n}: {g.shape[1]}" for n, g in grids.items())
        raise ValueError(f"a joint basis needs one feature dimension, got {dims}")
    masks = {n: foreground_mask(g, threshold) if masked else None for n, g in grids.items()}

    def basis_of(name: str) -> PCABasis:
        mask = masks[name]
        return PCABasis.fit(grids[name], mask=mask if mask is not None and mask.sum() >= 4 else None)

    bases = dict.fromkeys(grids, basis_of(next(iter(grids)))) if joint else {n: basis_of(n) for n in grids}
    return {n: bases[n].to_rgb(g, masks[n])[0] for n, g in grids.items()}


def palette(count: int) -> Tensor:
    """[count, 3] distinct colours in [0, 1]; index 0 (background) is dark grey."""
    colours = matplotlib.colormaps["tab20"].colors
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the saturated half first
    table = torch.tensor([colours[order[i % 20]] for i in range(count)]).float()
    table[0] = 0.2
    return table


def label_colours(labels: Tensor, count: int) -> Tensor:
    """[H, W] class ids -> [3, H, W] palette colours."""
    return palette(count)[labels.long().clamp(0, count - 1)].permute(2, 0, 1)


def hex_colour(rgb: Tensor) -> str:
    """'#rrggbb' of a colour in [0, 1]."""
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb)
