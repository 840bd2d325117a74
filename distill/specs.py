"""Specs: the one parser of "an expert name, `timm:<model>` or a timm alias, a checkpoint folder, or a
random floor" (`random:<checkpoint>`), used by every entry point that takes a teacher or an encoder.

Torch-free on import (the timm aliases are read on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distill.run_dir import names_a_path
from distill.teachers.registry import registered_teachers, unknown_teacher

FLOOR_PREFIX = "random:"  # a random floor's spec: `random:<checkpoint whose architecture it takes>`
TIMM_PREFIX = "timm:"
SpecKind = Literal["expert", "timm", "folder", "floor"]


@dataclass(frozen=True)
class Spec:
    """A parsed spec.

    Attributes:
        kind: "expert", "timm", "folder" (a checkpoint, run stage or exported folder) or "floor".
        name: the expert's name, the timm model or alias (without `timm:`), the folder, or the checkpoint
            whose architecture a floor takes.
    """

    kind: SpecKind
    name: str

    @property
    def timm_model(self) -> str:
        """The timm model a timm spec names (an alias resolved)."""
        from distill.backbones import TIMM_ALIASES

        return TIMM_ALIASES.get(self.name, self.name)


def is_floor(text: str) -> bool:
    """Whether a spec names a random floor."""
    return text.startswith(FLOOR_PREFIX)


def floor_spec(like: object) -> str:
    """The floor spec of a checkpoint's (or run stage folder's) architecture."""
    return f"{FLOOR_PREFIX}{like}"


def parse_spec(text: str, floor: bool = False) -> Spec:
    """What `text` names: an expert, a timm model, a folder, or (where `floor`) a random floor.

    Raises:
        KeyError: `text` names none of them (one line, listing the experts).
        ValueError: a floor where none is taken.
    """
    from distill.backbones import TIMM_ALIASES

    if text in registered_teachers():
        return Spec("expert", text)
    if is_floor(text):
        if not floor:
            raise ValueError(f"'{text}' is a random floor, not a teacher")
        return Spec("floor", text.removeprefix(FLOOR_PREFIX))
    if text.startswith(TIMM_PREFIX) or text in TIMM_ALIASES:
        return Spec("timm", text.removeprefix(TIMM_PREFIX))
    if names_a_path(text):
        return Spec("folder", text)
    raise KeyError(unknown_teacher(text))
