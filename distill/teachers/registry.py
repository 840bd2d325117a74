"""Name -> teacher factory registry (the experts register themselves; `timm:<name>` builds any timm model)."""

from __future__ import annotations

from collections.abc import Callable

from distill.teachers.base import Teacher

TeacherFactory = Callable[..., Teacher]
_FACTORIES: dict[str, TeacherFactory] = {}


def register_teacher(name: str) -> Callable[[TeacherFactory], TeacherFactory]:
    """Decorator registering a factory `(**kwargs) -> Teacher` under `name`."""

    def add(factory: TeacherFactory) -> TeacherFactory:
        if name in _FACTORIES:
            raise ValueError(f"teacher '{name}' is registered twice")
        _FACTORIES[name] = factory
        return factory

    return add


def registered_teachers() -> list[str]:
    """Names of the registered teachers, sorted."""
    return sorted(_FACTORIES)


def teacher_factory(name: str) -> TeacherFactory:
    """The factory registered under `name`; a one-line KeyError naming the known ones otherwise."""
    if name not in _FACTORIES:
        raise KeyError(
            f"unknown teacher '{name}'; known: {', '.join(registered_teachers())}, or timm:<model>"
        )
    return _FACTORIES[name]
