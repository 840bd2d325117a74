"""Object views: photographed animals, food, plants, vehicles and household things from Tux Paint's stamp
collection (Debian's `tuxpaint-stamps-default`, GPL; about 800 cut-out images with alpha masks), pasted
over crops of the training photos or dead-leaves images.

They bring what the bundled photos lack: many kinds of object at many sizes, on natural backgrounds. The
bundled photos are 18, of which training views crop 13, so a model that copies the experts on them
memorises those 13 (the semantic expert's class agrees on new crops of them, not on held-out photos).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

DEBIAN_DIR = Path("/usr/share/tuxpaint/stamps")
MISSING = (
    "Tux Paint's stamps are not installed (apt-get install tuxpaint-stamps-default, "
    "or set TUXPAINT_STAMPS_DIR to a folder of RGBA PNG stamps)"
)
PER_VIEW = (1, 3)  # stamps pasted on each view, inclusive
LONG_SIDE = (0.3, 0.9)  # a stamp's longer side as a fraction of the view's side


def stamps_folder() -> Path:
    """Where the stamps are: $TUXPAINT_STAMPS_DIR, else Debian's package folder."""
    return Path(os.environ.get("TUXPAINT_STAMPS_DIR", DEBIAN_DIR))


def stamp_files(folder: Path | None = None) -> list[Path]:
    """The stamps' PNG files under `folder` (default `stamps_folder()`), sorted; Tux Paint's `*_mirror.png`
    variants are left out (views flip stamps themselves).

    Raises:
        FileNotFoundError: no PNG stamp there (`MISSING` says how to install them).
    """
    folder = folder or stamps_folder()
    found = folder.rglob("*.png") if folder.is_dir() else []
    files = sorted(path for path in found if not path.stem.endswith("_mirror"))
    if not files:
        raise FileNotFoundError(f"no stamps in {folder}: {MISSING}")
    return files


def load_stamp(path: Path) -> Tensor:
    """A stamp as float RGBA [4, H, W] in [0, 1] (palette, grey and RGB files get an opaque alpha)."""
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    return torch.from_numpy(rgba.copy()).permute(2, 0, 1).float().div(255)


def paste(view: Tensor, stamp: Tensor, generator: torch.Generator) -> None:
    """Paste an RGBA `stamp` into `view` [3, S, S] in place: scaled so its longer side is a random
    `LONG_SIDE` fraction of S, randomly flipped, at a random place (up to a quarter of it may fall off an
    edge), composited by its alpha."""
    side = view.shape[-1]
    height, width = stamp.shape[-2:]
    low, high = LONG_SIDE
    scale = (low + (high - low) * torch.rand((), generator=generator).item()) * side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    stamp = F.interpolate(stamp[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    if torch.rand((), generator=generator) < 0.5:
        stamp = stamp.flip(-1)
    top, left = (int(torch.randint(-(n // 4), side - n + n // 4 + 1, (), generator=generator)) for n in size)
    rows = slice(max(top, 0), min(top + size[0], side))
    cols = slice(max(left, 0), min(left + size[1], side))
    piece = stamp[:, rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    alpha = piece[3:].clamp(0, 1)
    view[:, rows, cols] = alpha * piece[:3] + (1 - alpha) * view[:, rows, cols]


def paste_stamps(views: Tensor, generator: torch.Generator) -> Tensor:
    """Paste `PER_VIEW` stamps, drawn uniformly from `stamp_files()`, on each of `views` [N, 3, S, S] in
    [0, 1] (in place; returned).

    Raises:
        FileNotFoundError: the stamps are not installed.
    """
    files = stamp_files()
    for view in views:
        for _ in range(int(torch.randint(PER_VIEW[0], PER_VIEW[1] + 1, (), generator=generator))):
            paste(view, load_stamp(files[int(torch.randint(len(files), (), generator=generator))]), generator)
    return views
