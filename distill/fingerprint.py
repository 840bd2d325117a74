"""Short stable hashes of what a derived file was computed from (cache entries, warm-up statistics)."""

from __future__ import annotations

import hashlib
import json

from torch import Tensor


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-able parts and tensors."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
