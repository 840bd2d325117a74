"""Fashion-MNIST from Debian's dataset-fashion-mnist files, or torchvision's download when online."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.data.images import resize
from distill.paths import cache_dir

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_files(split: str, folder: Path) -> tuple[Path, Path] | None:
    """The (images, labels) files of a split in `folder`, gzipped or raw, if both exist."""
    found = []
    for stem in _FILES[split]:
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def fashion_mnist_folders() -> list[Path]:
    """Where Fashion-MNIST is looked for: $FASHION_MNIST_DIR, Debian's package, torchvision's download."""
    folders = [DEBIAN_DIR, cache_dir() / "FashionMNIST" / "raw"]
    if "FASHION_MNIST_DIR" in os.environ:
        folders.insert(0, Path(os.environ["FASHION_MNIST_DIR"]))
    return folders


MISSING = (
    "Fashion-MNIST not found: install Debian's package (apt-get install dataset-fashion-mnist), "
    "set FASHION_MNIST_DIR to a folder with the four idx files, or go online for torchvision's download"
)


def local_files(split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of a split in the first of `fashion_mnist_folders` that has both."""
    return next(
        (files for folder in fashion_mnist_folders() if (files := find_files(split, folder)) is not None),
        None,
    )


def load_fashion_mnist(split: str = "train", download: bool = True) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST images [N, 1, 28, 28] uint8 and labels [N] int64.

    Args:
        split: "train" (60k) or "test" (10k).
        download: when no local copy exists, try torchvision's download (needs network).

    Raises:
        FileNotFoundError: no local copy and no download possible, with how to get one.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got '{split}'")
    files = local_files(split)
    if files is not None:
        images, labels = (torch.from_numpy(read_idx(p).copy()) for p in files)
        return images[:, None], labels.long()
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            data = FashionMNIST(str(cache_dir()), train=split == "train", download=True)
            return data.data[:, None], data.targets.long()
        except (OSError, RuntimeError):
            pass
    raise FileNotFoundError(MISSING)


def fashion_sample(
    split: str, count: int, resolution: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A random subset of a local split (drawn from `generator`): RGB images [count, 3, R, R] in [0, 1] at
    `resolution`, and their labels."""
    images, labels = load_fashion_mnist(split, download=False)
    index = torch.randperm(len(labels), generator=generator)[:count]
    return resize(images[index].float().div(255).expand(-1, 3, -1, -1), resolution), labels[index]
