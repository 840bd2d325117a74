"""Teachers: the three offline experts, any timm model, behind one interface (`Teacher`)."""

from __future__ import annotations

from pathlib import Path

from distill.teachers import craft, efficientnet_lite, hed  # noqa: F401  (register the experts)
from distill.teachers.base import Teacher, TeacherOutput
from distill.teachers.registry import registered_teachers, teacher_factory
from distill.teachers.timm_teacher import TIMM_ALIASES, TimmTeacher

EXPERTS = ("semantic", "text", "edges")


def build_teacher(spec: str, **kwargs: object) -> Teacher:
    """A teacher by name: a registered expert, `timm:<model>`, a short timm alias (e.g. `dinov3-h+`),
    or the folder of a distilled checkpoint (`runs/NAME/proxy/checkpoint`).

    Keyword arguments go to the expert's factory, to `TimmTeacher` (weights, checkpoint, resolution)
    or to `DistilledTeacher` (resolution).
    """
    if (Path(spec) / "model.safetensors").is_file():
        from distill.distilled_teacher import DistilledTeacher

        return DistilledTeacher(spec, **kwargs)
    if spec.startswith("timm:"):
        return TimmTeacher(spec.removeprefix("timm:"), **kwargs)
    if spec in TIMM_ALIASES:
        return TimmTeacher(spec, **kwargs)
    return teacher_factory(spec)(**kwargs)


__all__ = ["EXPERTS", "Teacher", "TeacherOutput", "TimmTeacher", "build_teacher", "registered_teachers"]
