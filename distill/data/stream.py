"""A streaming training-data source: images decoded and augmented per step, from a folder or tar shards.

The item of `StreamingImages` is a training step: `dataset[step]` is this rank's share of global batch
`step`, a pure function of (seed, step, rank), so a killed run resumes at exactly the same samples, on
one process or many, with any number of loader workers. Only a compact sample index (numpy arrays) and
the current epoch's permutation are held in memory, whatever the corpus size.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.data.folder import is_image_file
from distill.data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, SkipLog, pil_to_tensor, reduced, reduction
from distill.data.shards import resolve_shards, split_key, tar_members
from distill.seeds import derived_seed

MAX_CONSECUTIVE_FAILURES = 64
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # random-resized-crop's aspect ratio range
PREFETCH_PER_WORKER = 2


def packed_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one uint8 blob and int64 offsets [N + 1] (compact, and cheap to copy into workers)."""
    encoded = [os.fsencode(s) for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def unpacked_string(blob: np.ndarray, offsets: np.ndarray, i: int) -> str:
    """String `i` of a `packed_strings` blob."""
    return os.fsdecode(blob[offsets[i] : offsets[i + 1]].tobytes())


def image_files(root: Path) -> list[str]:
    """Relative paths (with `/`) of the JPEG/PNG/WebP files under `root`, recursively, sorted (links that
    cannot be followed included: the stream skips them when it reads them, as it does corrupt images)."""
    found, folders = [], [""]
    while folders:
        relative = folders.pop()
        with os.scandir(root / relative) as entries:
            for entry in entries:
                name = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    folders.append(name)
                elif is_image_file(entry):
                    found.append(name)
    return sorted(found)


class FolderIndex:
    """Every image file under a folder, recursively, in sorted order.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no JPEG/PNG/WebP image.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        files = image_files(self.root)
        if not files:
            raise ValueError(f"no JPEG/PNG/WebP images in {self.root}")
        self.paths, self.offsets = packed_strings(files)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def name(self, i: int) -> str:
        """The path of sample `i`."""
        return str(self.root / unpacked_string(self.paths, self.offsets, i))

    def read(self, i: int) -> tuple[bytes, str]:
        """The bytes and the path of sample `i`."""
        name = self.name(i)
        return Path(name).read_bytes(), name


@dataclass
class ShardScan:
    """The image members of one shard: key.ext names, data offsets and sizes, and what was unreadable
    (truncated members, damaged headers as `tar_members` describes them, an error reading the file)."""

    names: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    truncated: int = 0
    damaged: list[str] = field(default_factory=list)
    error: str | None = None


def scan_shard(path: Path) -> ShardScan:
    """The first image member of each run of members sharing a key, from the tar headers alone (past
    damaged headers: `tar_members`)."""
    scan, last_key, file_size = ShardScan(), None, path.stat().st_size
    try:
        with open(path, "rb") as file:
            for member in tar_members(file, scan.damaged):
                key, extension = split_key(member.name)
                if not member.isfile() or f".{extension}" not in IMAGE_EXTENSIONS or key == last_key:
                    continue
                if member.offset_data + member.size > file_size:
                    scan.truncated += 1
                    continue
                last_key = key
                scan.names.append(f"{key}.{extension}")
                scan.offsets.append(member.offset_data)
                scan.sizes.append(member.size)
    except OSError as error:
        scan.error = f"{type(error).__name__}: {error}"
    return scan


class ShardIndex:
    """The image member of every sample (key) of WebDataset-style uncompressed tar shards.

    Truncated members, and the rest of a shard that cannot be read, are skipped with one warning per shard.

    Raises:
        FileNotFoundError: the glob matches no file.
        ValueError: the shards hold no image member.
    """

    def __init__(self, pattern: str) -> None:
        self.shards = [str(p) for p in resolve_shards(pattern)]
        names, shard_ids, offsets, sizes = [], [], [], []
        self.truncated = 0
        for shard_id, path in enumerate(self.shards):
            scan = scan_shard(Path(path))
            self.truncated += scan.truncated
            warn_unreadable(path, scan)
            names += scan.names
            shard_ids.append(np.full(len(scan.names), shard_id, dtype=np.int32))
            offsets.append(np.asarray(scan.offsets, dtype=np.int64))
            sizes.append(np.asarray(scan.sizes, dtype=np.int64))
        if not names:
            raise ValueError(f"no JPEG/PNG/WebP image members in the tar shard(s) {pattern}")
        self.names, self.name_offsets = packed_strings(names)
        self.shard_ids, self.data_offsets, self.sizes = map(np.concatenate, (shard_ids, offsets, sizes))

    def __len__(self) -> int:
        return len(self.sizes)

    def name(self, i: int) -> str:
        """The name (`shard.tar:key.ext`) of sample `i`."""
        shard = Path(self.shards[self.shard_ids[i]]).name
        return f"{shard}:{unpacked_string(self.names, self.name_offsets, i)}"

    def read(self, i: int) -> tuple[bytes, str]:
        """The bytes and the name of sample `i`."""
        path = self.shards[self.shard_ids[i]]
        with open(path, "rb") as file:
            file.seek(int(self.data_offsets[i]))
            data = file.read(int(self.sizes[i]))
        if len(data) != self.sizes[i]:
            raise OSError(f"{path} is shorter than when it was indexed")
        return data, self.name(i)


def warn_unreadable(path: str, scan: ShardScan) -> None:
    """One warning for the damaged headers, the truncated members and the unreadable rest of a shard."""
    problems = list(scan.damaged)
    if scan.truncated:
        problems.append(f"{scan.truncated} truncated member(s) skipped")
    if scan.error:
        problems.append(f"unreadable after {len(scan.names)} sample(s) ({scan.error})")
    if problems:
        warnings.warn(f"tar shard {path}: {'; '.join(problems)}", stacklevel=3)


def sample_index(source: str) -> FolderIndex | ShardIndex:
    """The sample index of `folder:<path>` or `shards:<glob>`."""
    kind, _, argument = source.partition(":")
    if kind == "folder" and argument:
        return FolderIndex(argument)
    if kind == "shards" and argument:
        return ShardIndex(argument)
    raise ValueError(f"a streamed data source is folder:<path> or shards:<glob>, got '{source}'")


def centre_square(width: int, height: int) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) of the centred square."""
    side = min(width, height)
    return (width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2


def centre_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision's fallback crop: the largest centred box whose aspect ratio is within [3/4, 4/3]."""
    ratio = width / height
    if ratio < 3 / 4:
        width_, height_ = width, round(width * 4 / 3)
    elif ratio > 4 / 3:
        width_, height_ = round(height * 4 / 3), height
    else:
        width_, height_ = width, height
    left, top = (width - width_) // 2, (height - height_) // 2
    return left, top, left + width_, top + height_


def random_crop(
    width: int, height: int, scale: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """A random-resized-crop box: area fraction uniform in `scale`, log-uniform aspect ratio in [3/4, 4/3]."""
    for _ in range(10):
        area_u, ratio_u = torch.rand(2, generator=generator).tolist()
        area = width * height * (scale[0] + (scale[1] - scale[0]) * area_u)
        ratio = math.exp(LOG_RATIO[0] + (LOG_RATIO[1] - LOG_RATIO[0]) * ratio_u)
        crop_w, crop_h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            return left, top, left + crop_w, top + crop_h
    return centre_crop(width, height)


def as_rgb(image: Image.Image) -> Image.Image:
    """An RGB image (alpha composited over white, as `pil_to_tensor` does)."""
    if image.mode == "RGB":
        return image
    return Image.fromarray(pil_to_tensor(image).mul(255).round().byte().permute(1, 2, 0).numpy())


def render_view(
    data: bytes, side: int, scale: tuple[float, float] | None, flip: float, generator: torch.Generator
) -> np.ndarray:
    """A uint8 view [3, side, side] of image bytes: cropped (random, or the centred square if `scale` is
    None), resized (antialiased bilinear) and flipped with probability `flip`. Images much larger than the
    crop needs are decoded at reduced size (JPEG) and box-reduced before any conversion (`reduced`)."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        box = random_crop(width, height, scale, generator) if scale else centre_square(width, height)
        flipped = bool(torch.rand((), generator=generator) < flip)
        zoom = side / min(box[2] - box[0], box[3] - box[1])
        image.draft("RGB", (math.ceil(width * zoom), math.ceil(height * zoom)))
        image.load()
        image = reduced(image, reduction(min(box[2] - box[0], box[3] - box[1]) * image.size[0] / width, side))
        sx, sy = image.size[0] / width, image.size[1] / height
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        view = as_rgb(image).resize((side, side), Image.Resampling.BILINEAR, box=box)
    if flipped:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(view).transpose(2, 0, 1)


@dataclass
class StreamBatch:
    """One rank's share of a global batch: `images` uint8 [B, 3, side, side], their sample `ids` [B], and
    the names of the images that failed to decode while building it (with the `errors`, in order)."""

    step: int
    images: Tensor
    ids: Tensor
    skipped: list[str]
    errors: list[Exception]


class StreamingImages(Dataset):
    """Training steps of decoded, augmented images, streamed from `folder:<path>` or `shards:<glob>`.

    `dataset[step]` is a `StreamBatch`: rank `rank`'s slice of global batch `step`. Global stream position
    p = step * global_batch + rank * local_batch + i is sample perm(seed, epoch)[offset] with
    (epoch, offset) = divmod(p, N), augmented with a generator seeded from (seed, p). An image that fails
    to decode is replaced by the next sample of the epoch's permutation.

    Args:
        source: `folder:<path>` or `shards:<glob>`.
        side: the views' square side.
        global_batch: the batch size over all ranks (a multiple of `world_size`).
        seed: seed of the order and of the augmentation.
        rank, world_size: this process's share of each global batch.
        scale: random-resized-crop's area fraction range; None: the centred square.
        flip: probability of a horizontal flip.
        index: the source's sample index, when already built (`sample_index(source)` otherwise).
    """

    def __init__(
        self,
        source: str,
        side: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        scale: tuple[float, float] | None = (0.35, 1.0),
        flip: float = 0.5,
        index: FolderIndex | ShardIndex | None = None,
    ) -> None:
        if global_batch % world_size or global_batch <= 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"global batch {global_batch} does not split evenly over {world_size} ranks (rank {rank})"
            )
        if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.source, self.side, self.seed, self.scale, self.flip = source, side, seed, scale, flip
        self.global_batch, self.local_batch, self.rank = global_batch, global_batch // world_size, rank
        self.index = sample_index(source) if index is None else index
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.int64)

    def order(self, epoch: int) -> Tensor:
        """The sample permutation of an epoch (the latest one is cached)."""
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, 0, epoch))
            self._epoch, self._order = epoch, torch.randperm(len(self.index), generator=generator)
        return self._order

    def __getitem__(self, step: int) -> StreamBatch:
        images = torch.empty(self.local_batch, 3, self.side, self.side, dtype=torch.uint8)
        ids = torch.empty(self.local_batch, dtype=torch.int64)
        skipped: list[str] = []
        errors: list[Exception] = []
        start = step * self.global_batch + self.rank * self.local_batch
        for i in range(self.local_batch):
            ids[i] = self.sample(start + i, images[i], skipped, errors)
        return StreamBatch(step, images, ids, skipped, errors)

    def sample(self, position: int, out: Tensor, skipped: list[str], errors: list[Exception]) -> int:
        """Write the view of stream position `position` into `out`; its sample id (after replacements)."""
        epoch, offset = divmod(position, len(self.index))
        order = self.order(epoch)
        generator = torch.Generator().manual_seed(derived_seed(self.seed, 1, position))
        for attempt in range(MAX_CONSECUTIVE_FAILURES):
            sample = int(order[(offset + attempt) % len(order)])
            try:
                data = self.index.read(sample)[0]
                # a numpy copy: torch's multithreaded strided copy is slow on busy CPUs
                out.numpy()[:] = render_view(data, self.side, self.scale, self.flip, generator)
                return sample
            except DECODE_ERRORS as error:
                skipped.append(self.index.name(sample))
                errors.append(error)
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_FAILURES} consecutive unreadable images in {self.source} (last: {skipped[-1]})"
        )


def unbatched(batch: StreamBatch) -> StreamBatch:
    """The loader's collate function: a step's batch is already made."""
    return batch


def stream_loader(dataset: StreamingImages, start_step: int, steps: int, workers: int) -> DataLoader:
    """A loader of the batches of steps start_step .. steps - 1, in order (`workers` 0: in process). Its own
    generator, seeded from the dataset's, seeds the workers: making the loader draws nothing from torch's
    global generator (a resumed stage that skips its warm-up loader draws the same numbers after it)."""
    return DataLoader(
        dataset,
        sampler=range(start_step, steps),
        batch_size=None,
        collate_fn=unbatched,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=PREFETCH_PER_WORKER if workers else None,
        generator=torch.Generator().manual_seed(derived_seed(dataset.seed, 2)),
    )


def warn_skipped(batch: StreamBatch, log: SkipLog) -> None:
    """Warn once per image name that failed to decode, and record it in `log`."""
    for name, error in zip(batch.skipped, batch.errors, strict=True):
        if name not in log.skipped:
            log.skip(name, error)
