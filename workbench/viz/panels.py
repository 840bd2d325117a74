"""Pictures for the apps: feature grids, heatmaps and label maps turned into uint8 RGB arrays.

Patch grids are upsampled with nearest-neighbour interpolation so every patch stays visible as a block.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.viz.pca import PCABasis, foreground_mask


def to_picture(rgb: Tensor, side: int) -> np.ndarray:
    """[3, h, w] colours in [0, 1] -> uint8 [side, side, 3], nearest-upsampled."""
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"colours must have shape [3, h, w], got {list(rgb.shape)}")
    big = F.interpolate(rgb[None].float(), size=(side, side), mode="nearest")[0]
    return (big.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def colorize(values: Tensor, cmap: str = "coolwarm", vmin: float = -1.0, vmax: float = 1.0) -> Tensor:
    """[h, w] values -> [3, h, w] colours of a matplotlib colour map over [vmin, vmax]."""
    if values.ndim != 2:
        raise ValueError(f"values must have shape [h, w], got {list(values.shape)}")
    scaled = ((values.detach().float().cpu() - vmin) / max(vmax - vmin, 1e-12)).clamp(0, 1).numpy()
    return torch.from_numpy(matplotlib.colormaps[cmap](scaled)[..., :3]).permute(2, 0, 1).float()


def overlay(image: Tensor, colours: Tensor, alpha: float = 0.65) -> np.ndarray:
    """Colours [3, h, w] (any grid) blended over a square image [3, S, S] -> uint8 [S, S, 3]."""
    side = image.shape[-1]
    top = F.interpolate(colours[None].float(), size=tuple(image.shape[-2:]), mode="nearest")[0]
    return to_picture((1 - alpha) * image.float().cpu() + alpha * top, side)


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


def pca_colours(
    grids: dict[str, Tensor], joint: bool = False, masked: bool = False, threshold: float = 0.0
) -> dict[str, Tensor]:
    """PCA-RGB of several patch grids, each [1, D, h, w].

    Args:
        grids: name -> one image's patch grid.
        joint: fit one basis on all grids (they must share the feature dimension D), so a colour
            means the same feature direction in every panel; otherwise one basis per grid.
        masked: paint background patches (`foreground_mask` of each grid) black and fit on foreground.
        threshold: the foreground cut in standard deviations.

    Returns:
        name -> [3, h, w] colours in [0, 1].
    """
    if joint and len({g.shape[1] for g in grids.values()}) > 1:
        dims = ", ".join(f"{n}: {g.shape[1]}" for n, g in grids.items())
        raise ValueError(f"a joint basis needs one feature dimension, got {dims}")
    masks = {n: foreground_mask(g, threshold) if masked else None for n, g in grids.items()}
    if joint:
        fitted = [n for n in grids if masks[n] is None or masks[n].sum() >= 4]
        basis = PCABasis.fit([grids[n] for n in fitted], mask=[masks[n] for n in fitted] if masked else None)
        bases = dict.fromkeys(grids, basis)
    else:
        bases = {
            n: PCABasis.fit(g, mask=masks[n] if masked and masks[n].sum() >= 4 else None)
            for n, g in grids.items()
        }
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
