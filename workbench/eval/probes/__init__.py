"""The probes: one module per probe, each registering itself with `registry.register_probe`; importing this
package registers the built-in ones, in `BUILT_IN`'s order (the scoreboard's), and needs no torch."""

import importlib

from workbench.eval.probes.registry import (
    Column,
    DenseTask,
    Probe,
    ProbeResult,
    dense_probes,
    get_probe,
    probe_columns,
    register_probe,
    registered_probes,
)

BUILT_IN = (
    "fashion",
    "scenes",
    "segmentation",
    "depth",
    "edges",
    "text",
    "agreement",
    "correspondence",
    "fidelity",
    "propagation",
)
for _module in BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "Column",
    "DenseTask",
    "Probe",
    "ProbeResult",
    "dense_probes",
    "get_probe",
    "probe_columns",
    "register_probe",
    "registered_probes",
]
