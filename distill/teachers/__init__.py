"""Teachers: the offline experts (see `registry`), any timm model, behind one interface (`Teacher`).

Importing this package needs no torch: the experts' names and facts come from the registry, and the
torch-backed names (`Teacher`, `TimmTeacher`) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from distill.run_dir import existing_checkpoint
from distill.teachers.registry import registered_teachers, teacher_factory

if TYPE_CHECKING:
    from distill.teachers.base import Teacher
    from distill.teachers.timm_teacher import TimmTeacher

EXPERTS = tuple(registered_teachers())  # the built-in experts, in registry order
_LAZY = {
    "Teacher": "distill.teachers.base",
    "TimmTeacher": "distill.teachers.timm_teacher",
}


def __getattr__(name: str) -> object:
    """The torch-backed exports, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def build_teacher(spec: str, **kwargs: object) -> Teacher:
    """A teacher by name: a registered expert, `timm:<model>`, a short timm alias (e.g. `dinov3-h+`),
    or the folder of a distilled checkpoint (`runs/NAME/proxy/checkpoint`).

    Keyword arguments go to the expert's factory, to `TimmTeacher` (weights, checkpoint, resolution)
    or to `DistilledTeacher` (resolution).
    """
    from distill.specs import parse_spec  # which imports this package's registry

    parsed = parse_spec(spec)
    if parsed.kind == "timm":
        from distill.teachers.timm_teacher import TimmTeacher

        return TimmTeacher(parsed.name, **kwargs)
    if parsed.kind == "folder":  # a missing checkpoint is named as such, not as an unknown teacher
        from distill.distilled_teacher import DistilledTeacher

        return DistilledTeacher(existing_checkpoint(parsed.name), **kwargs)
    return teacher_factory(parsed.name)(**kwargs)


__all__ = ["EXPERTS", "Teacher", "TimmTeacher", "build_teacher", "registered_teachers"]
