"""An image folder, flat or with one subfolder per class, read as a stream of decoded images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from distill.data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, LabeledImage, SkipLog, decode_image


def is_image_file(path: Path | os.DirEntry) -> bool:
    """True for a JPEG/PNG/WebP name that is a regular file, or a link that cannot be followed (a loop, a
    dangling link): reading that one fails, and the readers skip, name and count it as a corrupt image."""
    if os.path.splitext(path.name)[1].lower() not in IMAGE_EXTENSIONS:
        return False
    return (path.is_symlink() and not os.path.exists(path)) or path.is_file()


class ImageFolder:
    """Images under `root`: one subfolder per class (labels = sorted subfolder index), else flat (label -1).

    Files that cannot be read or decoded (corrupt, truncated, a symlink loop) are skipped with a warning
    that names them, and listed in `skips.skipped`.

    Args:
        root: the folder.

    Raises:
        FileNotFoundError: `root` does not exist or is not a folder.
        ValueError: it holds no JPEG/PNG/WebP image.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        class_dirs = sorted(
            d for d in self.root.iterdir() if d.is_dir() and any(filter(is_image_file, d.rglob("*")))
        )
        if class_dirs:
            self.classes = [d.name for d in class_dirs]
            self.items = [
                (p, i) for i, d in enumerate(class_dirs) for p in sorted(filter(is_image_file, d.rglob("*")))
            ]
        else:
            self.classes = []
            self.items = [(p, -1) for p in sorted(filter(is_image_file, self.root.iterdir()))]
        if not self.items:
            raise ValueError(f"no JPEG/PNG/WebP images in {self.root}")
        self.skips = SkipLog()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[LabeledImage]:
        for path, label in self.items:
            try:
                image = decode_image(path.read_bytes())
            except DECODE_ERRORS as error:
                self.skips.skip(str(path), error)
                continue
            yield LabeledImage(image, label, str(path.relative_to(self.root)))
