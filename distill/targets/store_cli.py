"""`eupe cache build`: the feature store of a config's teachers and data."""

from __future__ import annotations

from pathlib import Path

from distill.config import load_config
from distill.device import pick_device
from distill.targets.store_write import build_store


def cache_build_main(
    config_path: str | Path,
    out: str | Path,
    side: int,
    grid: int,
    budget_gib: float,
    overrides: list[str] | tuple[str, ...] = (),
    shard_size: int = 1024,
    batch_size: int = 64,
) -> None:
    """`eupe cache build`: the store of a config's teachers and data (device: `train.device`, workers:
    `data.workers`)."""
    config = load_config(config_path, overrides)
    device = pick_device(config.train.device)
    workers = config.data.workers
    build_store(config, Path(out), side, grid, budget_gib, shard_size, batch_size, workers, device)
    print(f"feature store complete: {out}")
