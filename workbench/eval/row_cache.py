"""An evaluation folder's saved rows and probes, keyed by the encoder's content, so an interrupted evaluation
resumes and a run folder can move (or be named by another path) and keep its rows.

`<out>/rows/<encoder key>.json` holds an encoder's scoreboard row with the key of what scored it (the
encoder, the settings, whether Fashion-MNIST was there); `<out>/probes/<encoder key>/<probe>.safetensors`
its trained dense probes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from distill.atomic import atomic_path
from workbench.eval.encoders import FLOOR_PREFIX, encoder_identity, is_floor
from workbench.eval.settings import EvalSettings


def json_digest(value: object) -> str:
    """16 hex digits of the SHA-256 of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def encoder_key(spec: str) -> str:
    """What names a scored encoder's row and probes in an evaluation folder, from its content (see
    `encoder_identity`), so a run folder can move, or be named by another path, and keep its rows.
    A `random:<spec>` floor is keyed apart from the checkpoint whose architecture it takes."""
    identity = encoder_identity(spec.removeprefix(FLOOR_PREFIX))
    return json_digest(identity | {"random": True} if is_floor(spec) else identity)


def row_key(encoder: str, settings: EvalSettings, fashion: bool) -> str:
    """What a saved row was scored under: it is redone when the settings change, or when it was scored
    without Fashion-MNIST and the dataset is there now (or the other way round)."""
    return json_digest({"encoder": encoder, "fashion": fashion, **asdict(settings)})


def row_path(out: Path, key: str) -> Path:
    """Where `evaluate` saves the row of the encoder with `encoder_key` `key`."""
    return out / "rows" / f"{key}.json"


def probe_folder(out: Path, key: str) -> Path:
    """Where `evaluate` saves the dense probes trained on the encoder with `encoder_key` `key`."""
    return out / "probes" / key


def saved_row(path: Path, key: str) -> dict | None:
    """The row saved at `path` if it was scored under `key` (see `row_key`), else None."""
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    return row if row.get("key") == key else None


def write_json(path: Path, value: object) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2))
