"""The probes' registry: torch-free names, one-line refusals, and a stand-in probe added in one registration
that the scoreboard, `eupe probe`, the dashboard's tables and the normalised score all pick up."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from test_expert_registry import TINY

from apps.cli import build_parser
from distill.teachers import registry as expert_registry
from distill.teachers.registry import register_expert, registered_teachers
from workbench.eval.normalised import column_references, with_normalised_scores
from workbench.eval.probes import (
    Column,
    Probe,
    ProbeResult,
    get_probe,
    probe_columns,
    register_probe,
    registered_probes,
    registry,
)
from workbench.eval.report import write_scoreboard
from workbench.eval.scoreboard import evaluate
from workbench.eval.settings import EvalSettings
from workbench.explore import runs as wr

BUILT_IN = [
    *("fashion", "scenes", "segmentation", "depth", "edges", "text", "agreement", "correspondence"),
    *("fidelity", "propagation"),
]
SMALL = {"resolution": 32, "scene_train": 20, "scene_test": 8, "fashion_train": 20, "fashion_test": 8,
         "photos": 2, "correspondence_pairs": 2, "probe_steps": 2, "latency_repeats": 1}  # fmt: skip
TITLE = "Scenes feature norm"


def mean_norm(inputs, settings: EvalSettings, references) -> ProbeResult:
    """The stand-in probe: the mean L2 norm of the test scenes' summary vectors."""
    return ProbeResult({"scene_norm": inputs.features("scenes_test").summary.norm(dim=1).mean().item()})


STAND_IN = Probe(
    name="norm",
    columns=(Column("scene_norm", TITLE, digits=2),),
    settings=("resolution", "scene_train", "scene_test", "batch_size", "seed"),
    run=mean_norm,
)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    """The stand-in probe registered, and the stand-in expert as a cheap encoder; both undone after."""
    with monkeypatch.context() as patch:
        patch.setattr(registry, "_PROBES", dict(registry._PROBES))
        patch.setattr(expert_registry, "_SPECS", dict(expert_registry._SPECS))
        register_expert(TINY)
        yield register_probe(STAND_IN)
    assert registered_probes() == BUILT_IN and "tiny" not in registered_teachers()


def test_probe_names_and_columns_need_no_torch() -> None:
    code = (
        "import sys; from workbench.eval.probes import registered_probes, probe_columns, dense_probes; "
        "print(registered_probes(), len(probe_columns()), list(dense_probes()), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{BUILT_IN} 22 ['segmentation', 'depth', 'edges', 'text'] False"


def test_a_bad_registration_is_refused_in_one_line(stand_in: Probe) -> None:
    with pytest.raises(ValueError, match="probe 'norm' is registered twice"):
        register_probe(STAND_IN)
    with pytest.raises(ValueError, match=r"'other' reads unknown settings \['steps'\]; known: resolution"):
        register_probe(Probe("other", (), ("steps",), mean_norm))
    with pytest.raises(ValueError, match=r"probe 'other' writes columns other probes write: \['seg_miou'\]"):
        register_probe(Probe("other", (Column("seg_miou", "mIoU"),), (), mean_norm))
    with pytest.raises(KeyError, match=r"unknown probe 'other'; known: fashion, scenes, .*, norm"):
        get_probe("other")


def test_a_stand_in_probe_is_one_registration(stand_in: Probe, tmp_path) -> None:
    assert registered_probes() == [*BUILT_IN, "norm"] and probe_columns()[-1].title == TITLE
    assert build_parser().parse_args(["probe", "norm", "--encoders", "tiny"]).probe == "norm"  # `eupe probe`
    # the scoreboard scores it after the built-in probes, keeps it in the saved row, and tables it
    settings = EvalSettings(**SMALL)
    (row,) = evaluate([], tmp_path / "eval", settings, experts=["tiny"], log=lambda _: None)
    assert {"scene_knn20", "seg_miou", "correspondence_pck10", "scene_norm"} <= set(row)
    assert list(row)[-1] == "scene_norm" and row["scene_norm"] > 0
    paths = write_scoreboard([row], settings, tmp_path / "eval", "eupe eval")
    header, _, line = paths["markdown"].read_text().splitlines()[-3:]
    assert header.endswith(f"| {TITLE} |") and line.endswith(f"| {row['scene_norm']:.2f} |")
    # the dashboard's table has its column, shown with its digits
    frame = wr.scoreboard_frame(wr.read_scoreboard(tmp_path / "eval").rows)
    assert list(frame.columns)[-1] == TITLE and frame[TITLE].tolist() == [row["scene_norm"]]
    assert wr.title_formats()[TITLE] == "{:.2f}"
    # the normalised score counts it where a floor and an expert qualify it; a column declared out does not
    rows = [
        {"name": "e", "role": "expert", "scene_norm": 0.9, "semantic_head_r": 0.9},
        {"name": "s", "role": "EUPE student (stages 1-2-3)", "scene_norm": 0.5, "semantic_head_r": 0.5},
        {"name": "r", "role": "random init (floor)", "scene_norm": 0.1, "semantic_head_r": 0.1},
    ]
    assert column_references(rows) == {"scene_norm": (0.1, 0.9)}
    assert [r["normalised_score"] for r in with_normalised_scores(rows)] == pytest.approx([1, 0.5, 0])
