"""What a stage trains on, behind one interface: fixed views in memory, or images streamed from disk.

`FixedViews` holds every view in memory (uint8 at the largest side a run draws): its teacher targets can be
cached, and a step's views are drawn by `batch_indices`. `StreamingData` decodes, crops and flips images of a
folder or of tar shards in DataLoader workers, as a stream whose sample at each position is a function of
(seed, epoch, position); memory does not grow with the corpus, and the teachers run online. Either way the
batch of step `s` depends only on (seed, s), so a resumed stage continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data.images import SkipLog
from distill.data.stream import StreamingImages, sample_index, stream_loader, warn_skipped


@dataclass
class StepBatch:
    """One step's images for this process, and their indices, which key cached or stored targets."""

    images: Tensor  # uint8 [B, 3, R, R]
    index: Tensor  # view indices (fixed views) or sample ids (a stream)


def batch_indices(num_views: int, batch_size: int, step: int, seed: int) -> Tensor:
    """View indices of a step: consecutive slices of a per-epoch permutation (a batch may wrap epochs)."""
    position = step * batch_size
    chunks = []
    while len(chunks) == 0 or sum(len(c) for c in chunks) < batch_size:
        epoch, offset = divmod(position, num_views)
        order = torch.randperm(num_views, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        take = order[offset : offset + batch_size - sum(len(c) for c in chunks)]
        chunks.append(take)
        position += len(take)
    return torch.cat(chunks)


class FixedViews:
    """A fixed set of views in memory.

    Args:
        views: uint8 [N, 3, R, R].
        key: fingerprint of the view set (names its feature-cache entries).
    """

    augments = False  # the trainer flips and crops views and their cached grids alike (`augment`)

    def __init__(self, views: Tensor, key: str) -> None:
        self.views, self.key = views, key

    @property
    def side(self) -> int:
        return self.views.shape[-1]

    def to(self, device: torch.device) -> FixedViews:
        return FixedViews(self.views.to(device), self.key)

    def batches(
        self, batch_size: int, seed: int, start: int, steps: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[StepBatch]:
        """Steps `start`..`steps - 1`: this process's share of each global batch of `batch_size`."""
        local = batch_size // world_size
        for step in range(start, steps):
            index = batch_indices(self.views.shape[0], batch_size, step, seed)
            index = index[rank * local : (rank + 1) * local]
            yield StepBatch(self.views[index.to(self.views.device)], index)

    def warmup(self, batch_size: int, count: int, seed: int) -> Iterator[StepBatch]:
        """`count` random batches (the same on every process) to estimate the teachers' statistics from."""
        generator = torch.Generator().manual_seed(seed + 17)
        for _ in range(count):
            index = torch.randint(self.views.shape[0], (batch_size,), generator=generator)
            yield StepBatch(self.views[index], index)


class StreamingData:
    """Images of a `folder:` or `shards:` source streamed through DataLoader workers.

    Args:
        source: `folder:<path>` or `shards:<glob>`.
        side: the side images are cropped to (the largest a run draws).
        workers: DataLoader worker processes (0 = decode in the training process).
        scale: random-resized-crop area range; None = centred square views.
        flip: probability of a horizontal flip.
    """

    def __init__(
        self, source: str, side: int, workers: int, scale: tuple[float, float] | None, flip: float
    ) -> None:
        self.source, self.side, self.workers, self.scale, self.flip = source, side, workers, scale, flip
        self.index = sample_index(source)  # built once: a bad source fails here, before any training
        self.skips = SkipLog()
        # False: centred views, which the trainer flips and crops together with their target grids
        self.augments = scale is not None or flip > 0

    def batches(
        self, batch_size: int, seed: int, start: int, steps: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[StepBatch]:
        """Steps `start`..`steps - 1`: this process's share of each global batch of the stream (unreadable
        files warned about once and counted in `skips`)."""
        dataset = StreamingImages(self.source, self.side, batch_size, seed, rank, world_size, self.scale,
                                  self.flip, self.index)  # fmt: skip
        for batch in stream_loader(dataset, start, steps, self.workers):
            warn_skipped(batch, self.skips)
            yield StepBatch(batch.images, batch.ids)

    def warmup(self, batch_size: int, count: int, seed: int) -> Iterator[StepBatch]:
        """The first `count` whole batches of a stream of its own (the same on every process)."""
        yield from self.batches(batch_size, seed + 17, 0, count)


TrainingData = FixedViews | StreamingData
