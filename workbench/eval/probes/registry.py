"""The probes' registry: one `Probe` per probe, registered by its own module, torch-free.

A probe declares its name, the `EvalSettings` fields it reads, the scoreboard columns it writes, whether it
trains a dense head on the scenes' patch grids (`DenseTask`), and its `run()`. Everything that lists probes
derives from here, in registration order: the scoreboard's probes and columns, `eupe probe`'s choices, the
apps' tables and the normalised score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from workbench.eval.settings import EvalSettings

if TYPE_CHECKING:
    from workbench.eval.probes.dense_head import DenseProbe
    from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs


@dataclass(frozen=True)
class Column:
    """A scoreboard column.

    Attributes:
        key: the row's key it shows.
        title: its title in tables and charts.
        higher_is_better: which way is better (False for errors, sizes and times).
        digits: decimals it is shown with.
        normalised: whether it may enter the normalised score (`workbench.eval.normalised`).
    """

    key: str
    title: str
    higher_is_better: bool = True
    digits: int = 3
    normalised: bool = True


@dataclass(frozen=True)
class DenseTask:
    """What a dense probe trains on the generated scenes' patch grids.

    Attributes:
        task: the head's task (`workbench.eval.probes.dense_head.TASKS`).
        labels: the scenes' label field it predicts (also the name the apps show its predictions by).
        tolerance: the F-score's match radius in pixels (binary maps).
        scores: the head's result key -> the row's key.
    """

    task: str
    labels: str
    tolerance: int
    scores: Mapping[str, str]


@dataclass
class ProbeResult:
    """Scores of one probe, and the dense head it trained (None for the others)."""

    scores: dict[str, float]
    probe: DenseProbe | None = None


Run = Callable[["ProbeInputs", EvalSettings, "ExpertReferences"], ProbeResult]


@dataclass(frozen=True)
class Probe:
    """One probe.

    Attributes:
        name: its name (`eupe probe NAME`, its saved head's file name).
        columns: the scoreboard columns it writes, in table order (its row may hold more keys).
        settings: the `EvalSettings` fields it reads.
        run: `run(inputs, settings, references) -> ProbeResult`.
        dense: what it trains where it is a dense probe, else None.
    """

    name: str
    columns: tuple[Column, ...]
    settings: tuple[str, ...]
    run: Run = field(repr=False)
    dense: DenseTask | None = None


_PROBES: dict[str, Probe] = {}
SETTINGS = tuple(f.name for f in fields(EvalSettings))
DENSE_SETTINGS = ("resolution", "scene_train", "scene_test", "batch_size", "max_grid", "probe_steps", "seed")


def register_probe(probe: Probe) -> Probe:
    """Add a probe to the registry, after those registered before it.

    Raises:
        ValueError: the name or a column key is taken, or a setting is not an `EvalSettings` field.
    """
    if probe.name in _PROBES:
        raise ValueError(f"probe '{probe.name}' is registered twice")
    unknown = [name for name in probe.settings if name not in SETTINGS]
    if unknown:
        raise ValueError(
            f"probe '{probe.name}' reads unknown settings {unknown}; known: {', '.join(SETTINGS)}"
        )
    taken = {column.key for column in probe_columns()} & {column.key for column in probe.columns}
    if taken:
        raise ValueError(f"probe '{probe.name}' writes columns other probes write: {sorted(taken)}")
    _PROBES[probe.name] = probe
    return probe


def registered_probes() -> list[str]:
    """Names of the registered probes, in registration order."""
    return list(_PROBES)


def get_probe(name: str) -> Probe:
    """The probe registered under `name`; a one-line KeyError naming the known ones otherwise."""
    if name not in _PROBES:
        raise KeyError(f"unknown probe '{name}'; known: {', '.join(_PROBES)}")
    return _PROBES[name]


def probe_columns() -> tuple[Column, ...]:
    """Every probe's columns, probe by probe in registration order."""
    return tuple(column for probe in _PROBES.values() for column in probe.columns)


def dense_probes() -> dict[str, DenseTask]:
    """The dense probes' tasks, by probe name."""
    return {name: probe.dense for name, probe in _PROBES.items() if probe.dense is not None}
