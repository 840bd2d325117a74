"""The training timeline from snapshots: fidelity per step (workbench.eval.fidelity.stage_timeline), the maps
and curves (workbench.viz.timeline), its GIF, and the dashboard's Timeline tab."""

from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_training import config_file

from apps.launch import DASHBOARD
from distill.config import load_config
from distill.pipeline import run_stages
from workbench.eval.fidelity import stage_timeline
from workbench.explore.timeline import timeline_gif
from workbench.viz.timeline import CELL, TimelineMaps, timeline_figure


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run with snapshots every 2 steps of its proxy, student and direct stages (a random timm teacher)."""
    folder = tmp_path_factory.mktemp("timeline")
    config = load_config(config_file(folder, steps=4), ["train.snapshot_every=2"])
    run_stages(config, folder / "runs" / "snap", ["proxy", "student", "direct"])
    return folder / "runs" / "snap"


def test_the_timeline_of_each_stage_from_its_files(run):
    proxy = stage_timeline(run, "proxy")
    assert proxy.steps == [0, 2, 4]
    teacher = "timm:convnext_atto.d2_in1k"
    assert set(proxy.scores) == {f"{teacher}_cka", f"{teacher}_cos", "rankme"}
    assert all(len(values) == 3 for values in proxy.scores.values())
    assert all(0 <= v <= 1 for v in proxy.scores[f"{teacher}_cka"])
    assert proxy.scores[f"{teacher}_cos"][-1] > proxy.scores[f"{teacher}_cos"][0]  # the estimate learns
    student = stage_timeline(run, "student")  # taught by the proxy; the expert's targets of the proxy stage
    assert set(student.scores) == {"proxy_cka", "proxy_cos", f"{teacher}_cka", "rankme"}
    with pytest.raises(FileNotFoundError, match="snapshot_every"):
        stage_timeline(run, "multires")


def test_maps_in_both_bases_and_the_curves_of_two_stages(run):
    for basis in ("last", "expert"):
        maps = TimelineMaps(run, "direct", basis)
        picture = maps.picture(2)
        assert picture.shape == (len(maps.names) * CELL, len(maps.columns) * CELL, 3)
        assert maps.columns[:2] == ["image", "own features"]
    first, last = maps.picture(0), maps.picture(4)
    assert (first[:, CELL : 2 * CELL] != last[:, CELL : 2 * CELL]).any()  # own features change, fixed basis
    assert (first[:, -CELL:] == last[:, -CELL:]).all()  # the expert's map does not
    with pytest.raises(ValueError, match="no snapshot of step 3"):
        maps.picture(3)
    figure = timeline_figure([stage_timeline(run, "student"), stage_timeline(run, "direct")])
    # CKA: the student with the proxy and the expert, direct with the expert; cosine: each with its teacher
    assert [len(ax.get_lines()) for ax in figure.axes] == [3, 2, 2]


def test_the_gif_has_a_frame_per_snapshot(run, tmp_path):
    path = timeline_gif(TimelineMaps(run, "proxy"), tmp_path / "proxy.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3


def test_the_dashboard_timeline_tab(run, monkeypatch):
    monkeypatch.setenv("EUPE_RUNS", str(run.parent))
    at = AppTest.from_file(str(DASHBOARD), default_timeout=120).run()
    assert not at.exception
    stage = next(s for s in at.selectbox if s.label == "Stage")
    assert stage.options == ["proxy", "student", "direct"] and stage.value == "direct"
    slider = next(s for s in at.select_slider if s.label == "Step")
    assert slider.value == 4
    slider.set_value(0).run()
    assert not at.exception
    curves = next(m for m in at.multiselect if m.label == "Stages (any runs)")
    assert curves.value == ["snap/student", "snap/direct"]  # both students from their random start
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith("step 0;") for c in captions)
