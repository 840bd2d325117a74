"""The run dashboard under Streamlit's AppTest, and the run-folder reading it is built on."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app_gradio import make_scored_run

from apps.launch import DASHBOARD, dashboard_command
from workbench.explore import runs as wr

TIMEOUT = 120  # seconds per script run: the first one builds encoders on a loaded CPU


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    return make_scored_run(tiny_run, tmp_path_factory.mktemp("dashboard"))


def dashboard(runs: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("EUPE_RUNS", str(runs))
    return AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT).run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_runs_are_listed_with_their_stages_in_pipeline_order(run, tmp_path):
    assert wr.list_runs(tmp_path / "missing") == []
    (found,) = wr.list_runs(run.parent)
    assert found.name == "tiny" and found.stage_names() == ["proxy", "student", "multires", "direct"]
    assert wr.list_runs(run) == [found]  # a run folder is a folder of one run
    assert found.stage("multires").role == "EUPE student (stages 1-2-3)"
    with pytest.raises(KeyError, match="run tiny has no stage 'eval'"):
        found.stage("eval")


def test_metrics_timeline_and_checkpoints(run, tmp_path):
    (found,) = wr.list_runs(run.parent)
    metrics = wr.read_metrics(found.stage("proxy"))
    assert list(metrics["step"]) == [0, 1, 2, 3]
    terms = wr.loss_terms(metrics)
    assert set(terms["teacher"]) == {"semantic", "text", "edges"}
    assert {"total", "summary_cos", "patch_cos", "patch_smooth_l1"} <= set(terms["term"])
    timeline = wr.timeline(found).set_index("stage")
    # the tiny config: proxy 4 steps, student 4 after it, multires 2 after the student, direct 4 from 0
    assert timeline[["start", "end"]].to_dict("index") == {
        "proxy": {"start": 0, "end": 4}, "student": {"start": 4, "end": 8},
        "multires": {"start": 8, "end": 10}, "direct": {"start": 0, "end": 4},
    }  # fmt: skip
    assert timeline["complete"].all() and (timeline["logged_steps"] == timeline["steps"]).all()
    assert wr.checkpoint_info(found.stage("multires"))["step"] == 2
    stages = [found.stage("multires"), found.stage("direct")]
    assert wr.curves(stages, "loss").index.tolist() == [0, 1, 2, 3]
    along = wr.curves(stages, "loss", wr.recipe_starts([found]))
    assert along["tiny/multires"].dropna().index.tolist() == [8, 9]
    assert along["tiny/direct"].dropna().index.tolist() == [0, 1, 2, 3]
    # a line being written while training (not yet valid JSON) is skipped
    partial = tmp_path / "run" / "proxy"
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text(
        '{"step": 0, "loss": 2.0}\n{"step": 1, "loss": 1.5}\n{"step": 2, "lo'
    )
    assert wr.read_metrics(wr.StageFolder("run", "proxy", partial))["loss"].tolist() == [2.0, 1.5]


def test_scoreboards_rows_probes_and_comparison(run):
    (found,) = wr.list_runs(run.parent)
    (board,) = wr.find_scoreboards(found)
    assert board.row_for("edges")["seg_miou"] == 0.6
    assert wr.scoreboard_row(found, str(found.stage("direct").folder))["seg_miou"] == 0.4
    assert sorted(board.probes(str(run / "multires"))) == ["depth", "segmentation"]
    assert board.probes(str(run / "proxy")) == {}
    rows = {"multires": board.row_for(str(run / "multires")), "direct": board.row_for(str(run / "direct"))}
    values, best = wr.compare_frame(rows)
    assert values.loc["Seg mIoU"].tolist() == [0.5, 0.4] and values.loc["Depth RMSE"].tolist() == [0.3, 0.2]
    assert best.loc["Seg mIoU"].tolist() == [True, False]  # higher is better
    assert best.loc["Depth RMSE"].tolist() == [False, True]  # lower is better
    frame = wr.scoreboard_frame(board.rows)
    assert list(frame.columns) == ["Encoder", "Role", "Seg mIoU", "Depth RMSE"] and len(frame) == 3


def test_config_differences_lists_only_differing_keys():
    table = wr.config_differences(
        {"a": {"train": {"seed": 0, "lr": 1e-3}, "x": [1]}, "b": {"train": {"seed": 1, "lr": 1e-3}}}
    )
    assert table.to_dict("index") == {"train.seed": {"a": "0", "b": "1"}, "x": {"a": "[1]", "b": "—"}}


def test_with_no_runs_it_shows_the_experts_and_how_to_make_a_run(tmp_path, monkeypatch):
    at = dashboard(tmp_path, monkeypatch)
    assert not at.exception
    (info,) = texts(at.info)
    assert "No runs in" in info and "eupe pipeline --config configs/toy.yaml" in info
    experts = at.dataframe[0].value
    assert experts["expert"].tolist() == ["semantic", "text", "edges"]
    assert (experts["params (M)"] > 1).all()
    (images,) = at.get("image")
    assert images.captions == [
        "input", "semantic · 4x4 patches", "text · 64x64 patches", "edges · 16x16 patches",
    ]  # fmt: skip


def test_a_run_its_timeline_curves_scoreboard_and_checkpoint(run, monkeypatch):
    at = dashboard(run.parent, monkeypatch)
    assert not at.exception
    assert texts(at.header) == ["tiny"]
    assert [t.label for t in at.tabs] == ["Overview", "Curves", "Scoreboard", "Checkpoints"]
    timeline = at.dataframe[0].value
    assert timeline["stage"].tolist() == ["proxy", "student", "multires", "direct"]
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 1 + 4 + 3  # timeline, loss terms per stage, loss / lr / throughput overlays
    scoreboard = at.dataframe[1].value
    assert scoreboard["Encoder"].tolist() == ["edges", "tiny/multires", "tiny/direct"]
    picker = next(s for s in at.selectbox if s.label == "Checkpoint")
    assert picker.value == "direct" and picker.options == ["proxy", "student", "multires", "direct"]
    picker.set_value("multires").run()
    assert json.loads(at.json[0].value)["step"] == 2
    (images,) = at.get("image")
    assert images.captions == ["input", "tiny/multires · 8x8 patches"]


def test_compare_overlays_runs_and_highlights_the_better_scores(run, monkeypatch):
    at = dashboard(run.parent, monkeypatch)
    at.sidebar.radio[0].set_value("Compare").run()
    assert not at.exception
    assert at.multiselect[0].value == ["tiny/multires", "tiny/direct"]
    assert at.selectbox[0].value == "loss"
    comparison = at.dataframe[0].value
    assert isinstance(comparison, pd.DataFrame)
    assert comparison.loc["Seg mIoU", "tiny/direct − tiny/multires"] == pytest.approx(-0.1)
    at.multiselect[0].set_value(["tiny/multires"]).run()
    assert texts(at.warning) == ["Pick two or more stages."]


def test_dashboard_command_is_local_headless_and_private():
    command = dashboard_command("runs/x", port=8600)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"
    assert command[command.index("--server.headless") + 1] == "true"
    assert command[-2:] == ["--runs", "runs/x"]
