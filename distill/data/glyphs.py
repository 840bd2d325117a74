"""Glyph bitmaps for drawing text with tensor ops.

The glyphs are rasterised once (per process) from matplotlib's bundled DejaVu Sans with PIL into
fixed-size cells that share one baseline, so a string is drawn by placing cells side by side
(monospaced layout). Drawing then needs only integer gathers from a flat atlas, which runs the same
on CPU and GPU.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

GLYPH_CHARS: str = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class GlyphAtlas:
    """Coverage bitmaps of a character set, one fixed-size cell per character.

    Attributes:
        bitmaps: [N, Hc, Wc] float32 coverage in [0, 1]; row 0 is the top of the cell.
        chars: the N characters, in bitmap order.
    """

    bitmaps: Tensor
    chars: str

    @property
    def aspect(self) -> float:
        """Cell width over cell height (the advance of one character in units of line height)."""
        return self.bitmaps.shape[2] / self.bitmaps.shape[1]

    def to(self, device: torch.device | str) -> GlyphAtlas:
        """Return the atlas with its bitmaps on `device`."""
        return GlyphAtlas(self.bitmaps.to(device), self.chars)

    def sample(self, codes: Tensor, fx: Tensor, fy: Tensor) -> Tensor:
        """Bilinearly sample glyph coverage.

        Args:
            codes: int64 glyph indices, any shape.
            fx: horizontal position in the cell, 0 = left edge, 1 = right edge (same shape).
            fy: vertical position in the cell, 0 = top, 1 = bottom (same shape).

        Returns:
            Coverage in [0, 1], zero outside the cell.
        """
        n, hc, wc = self.bitmaps.shape
        flat = self.bitmaps.reshape(-1)
        px = fx * wc - 0.5
        py = fy * hc - 0.5
        x0f = px.floor()
        y0f = py.floor()
        ax = px - x0f
        ay = py - y0f
        x0 = x0f.long()
        y0 = y0f.long()
        base = codes.clamp(0, n - 1) * (hc * wc)
        out = torch.zeros_like(px)
        for dy, wy in ((0, 1 - ay), (1, ay)):
            yy = y0 + dy
            vy = (yy >= 0) & (yy < hc)
            for dx, wx in ((0, 1 - ax), (1, ax)):
                xx = x0 + dx
                valid = vy & (xx >= 0) & (xx < wc)
                idx = base + yy.clamp(0, hc - 1) * wc + xx.clamp(0, wc - 1)
                out = out + flat[idx] * (wy * wx) * valid
        return out


@lru_cache(maxsize=4)
def _render_cpu(chars: str, height: int) -> Tensor:
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), height)
    boxes = [font.getbbox(c, anchor="ls") for c in chars]
    top = min(b[1] for b in boxes)
    bottom = max(b[3] for b in boxes)
    pad = max(2, height // 16)
    cell_h = bottom - top + 2 * pad
    widths = sorted(b[2] - b[0] for b in boxes)
    cell_w = int(widths[len(widths) * 3 // 4]) + 2 * pad
    cells = []
    for c in chars:
        img = Image.new("L", (2 * height, cell_h), 0)
        ImageDraw.Draw(img).text((height // 2, pad - top), c, fill=255, font=font, anchor="ls")
        box = img.getbbox()
        glyph = img.crop((box[0], 0, box[2], cell_h))
        inner = cell_w - 2 * pad
        if glyph.width > inner:  # squeeze the widest glyphs (W, M) into the cell
            glyph = glyph.resize((inner, cell_h), Image.Resampling.LANCZOS)
        cell = Image.new("L", (cell_w, cell_h), 0)
        cell.paste(glyph, ((cell_w - glyph.width) // 2, 0))
        cells.append(np.asarray(cell, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(cells))


def glyph_atlas(chars: str = GLYPH_CHARS, height: int = 64, device: torch.device | str = "cpu") -> GlyphAtlas:
    """Rasterise `chars` from DejaVu Sans at font size `height` px (cached) and put them on `device`."""
    if not chars or len(set(chars)) != len(chars):
        raise ValueError(f"chars must be non-empty and without repeats, got {chars!r}")
    if height < 8:
        raise ValueError(f"glyph height must be at least 8 px, got {height}")
    return GlyphAtlas(_render_cpu(chars, height).clone().to(device), chars)
