"""Random state derived from a run's seed alone, never from the global generator's history.

A resumed stage must draw exactly what the uninterrupted one drew, whatever ran before in the process
(a warm-up loader that was skipped because its statistics were reloaded, a teacher loaded or not).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (no collisions between e.g. (seed, epoch) pairs, unlike sums)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()) >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's CPU generator seeded with `seed` inside the block and put back as it was after: what the block
    draws depends on `seed` alone, and what runs after does not depend on the block."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
