"""Where the workbench keeps what it computes outside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of the workbench's cache (`$EUPE_CACHE`, default `~/.cache/eupe`)."""
    return Path(os.environ.get("EUPE_CACHE", Path.home() / ".cache" / "eupe"))
