"""The run dashboard under Streamlit's AppTest, and the run-folder reading it is built on."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest
from test_app_gradio import free_port, make_scored_run

from apps.launch import DASHBOARD, dashboard_command
from distill.stages import STAGES
from workbench.eval.scoreboard import FLOOR_ROLE
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
    assert [t.label for t in at.tabs] == ["Overview", "Curves", "Timeline", "Scoreboard", "Checkpoints"]
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
    images = [i for i in at.get("image") if "input" in i.captions]  # the Timeline tab shows its own images
    assert len(images) == 1 and images[0].captions == ["input", "tiny/multires · 8x8 patches"]
    assert not any(c.startswith("Training: redrawn every") for c in texts(at.caption))  # a finished run


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


def copy_run(run: Path, folder: Path) -> Path:
    """A copy of the scored run, to damage."""
    copy = folder / "runs" / "tiny"
    shutil.copytree(run, copy)
    return copy


def warnings(at: AppTest) -> list[str]:
    found = texts(at.warning)
    assert all("\n" not in w for w in found)  # each problem on one line
    return found


def test_bad_files_are_named_and_the_rest_is_read(run, tmp_path):
    copy = copy_run(run, tmp_path)
    (found,) = wr.list_runs(copy)
    (copy / "config.yaml").write_text("stages: [proxy\n")
    with pytest.raises(ValueError, match=r"tiny/config.yaml is not valid YAML"):
        wr.read_config(found)
    (copy / "config.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match=r"tiny/config.yaml is not a config: it holds a list"):
        wr.read_config(found)
    problems = []
    assert wr.planned_steps(found, problems.append) == {} and len(problems) == 1
    metrics = copy / "proxy" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text(
        "\n".join([lines[0], '{"step": null}', lines[1], '{"step": 5, "loss": "x"}', *lines[2:]])
    )
    problems = []
    assert wr.read_metrics(found.stage("proxy"), problems.append)["step"].tolist() == [0, 1, 2, 3]
    assert len(problems) == 2 and all(p.startswith(f"{metrics}: left out 1 ") for p in problems)
    assert '{"step": 5, "loss": "x"}' in problems[1]
    weights = copy / "student" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{weights} is not a readable checkpoint"):
        wr.checkpoint_info(found.stage("student"))
    problems = []
    timeline = wr.timeline(found, problems.append).set_index("stage")
    assert (
        pd.isna(timeline.loc["student", "checkpoint_step"]) and timeline.loc["direct", "checkpoint_step"] == 4
    )
    assert len(problems) == 4  # the config, the malformed metrics line, the non-number record, the checkpoint
    board = copy / "eval" / "scoreboard.json"
    for text, message in (
        ("{not json", "is not a readable scoreboard"),
        ('{"rows": {"a": 1}}', "is not a scoreboard"),
        ('{"rows": [{"name": "x", "seg_miou": "high"}]}', "row 1 has a seg_miou that is not a number"),
    ):
        board.write_text(text)
        with pytest.raises(ValueError, match=message):
            wr.read_scoreboard(copy / "eval")
        problems = []
        assert wr.find_scoreboards(found, problems.append) == [] and str(board) in problems[0]


def test_the_dashboard_shows_each_bad_file_as_a_warning_in_its_place(run, tmp_path, monkeypatch):
    copy = copy_run(run, tmp_path)
    (copy / "config.yaml").write_text("stages: [proxy\n")
    with (copy / "proxy" / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": null}\n')
    weights = copy / "student" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (copy / "eval" / "scoreboard.json").write_text("{not json")
    at = dashboard(copy.parent, monkeypatch)
    assert not at.exception
    assert texts(at.header) == ["tiny"]
    assert at.dataframe[0].value["stage"].tolist() == ["proxy", "student", "multires", "direct"]
    shown = warnings(at)
    for path in ("tiny/config.yaml", "tiny/proxy/metrics.jsonl", str(weights), "tiny/eval/scoreboard.json"):
        assert any(path in w for w in shown), path
    assert len(at.get("vega_lite_chart")) >= 1 + 4 + 3  # the curves are all drawn
    next(s for s in at.selectbox if s.label == "Checkpoint").set_value("student").run()
    assert not at.exception and any(f"{weights} is not a readable checkpoint" in w for w in warnings(at))


def test_a_runs_folder_that_is_not_a_readable_tree_is_refused_in_one_line(monkeypatch):
    with pytest.raises(ValueError, match=r"/proc is not a readable folder of runs \(Permission denied"):
        wr.list_runs("/proc")
    at = dashboard(Path("/proc"), monkeypatch)
    assert not at.exception
    (error,) = texts(at.error)
    assert error.startswith("/proc is not a readable folder of runs") and "\n" not in error


def test_ties_as_shown_are_not_highlighted_and_numbers_are_formatted(run, tmp_path, monkeypatch):
    rows = {"a": {"seg_miou": 0.0061, "cpu_ms": 110.5159}, "b": {"seg_miou": 0.0058, "cpu_ms": 98.04}}
    values, best = wr.compare_frame(rows)
    assert values.loc["Seg mIoU"].tolist() == [0.0061, 0.0058]  # both shown as 0.006: a tie
    assert not best.loc["Seg mIoU"].any() and best.loc["CPU ms"].tolist() == [False, True]
    _, best = wr.compare_frame(rows | {"c": {"seg_miou": 0.004}})
    assert not best.loc["Seg mIoU"].any()  # a shared best, whatever the others
    assert [wr.shown(v, k) for v, k in ((110.5159, "cpu_ms"), (0.123456, "loss"), (None, "seg_miou"))] == [
        "110.5", "0.1235", "—",
    ]  # fmt: skip
    copy = copy_run(run, tmp_path)
    board = copy / "eval" / "scoreboard.json"
    data = json.loads(board.read_text())
    for row, miou, ms in zip(data["rows"][1:], (0.0061, 0.0058), (110.5159, 98.04), strict=True):
        row |= {"seg_miou": miou, "cpu_ms": ms}
    board.write_text(json.dumps(data))
    at = dashboard(copy.parent, monkeypatch)
    at.sidebar.radio[0].set_value("Compare").run()
    assert not at.exception
    styler = at.dataframe[0].proto.arrow_data.styler
    shown = dataframe_util.convert_arrow_bytes_to_pandas_df(styler.display_values)
    titles = at.dataframe[0].value.index.tolist()
    seg, cpu = titles.index("Seg mIoU"), titles.index("CPU ms")
    assert shown.iloc[seg, :2].tolist() == ["0.006", "0.006"] and shown.iloc[cpu].tolist() == [
        "110.5",
        "98.0",
        "-12.5",
    ]
    highlighted = set(re.findall(r"row(\d+)_col(\d+)", styler.styles))
    assert (str(cpu), "1") in highlighted and not any(r == str(seg) for r, _ in highlighted)


def line_charts(at: AppTest) -> list[tuple[str, list[str]]]:
    """(y title, curves drawn) of each chart of curves (`overlay_chart`) of the page."""
    found = []
    for chart in at.get("vega_lite_chart"):
        encoding = json.loads(chart.proto.spec)["encoding"]
        if encoding.get("detail", {}).get("field") == "curve":
            data = dataframe_util.convert_arrow_bytes_to_pandas_df(chart.proto.datasets[0].data.data)
            found.append((encoding["y"]["title"], sorted(data["curve"].unique())))
    return found


def stage_colours(at: AppTest) -> list[dict[str, str]]:
    """Stage -> colour of every chart of the page coloured by stage."""
    found = []
    for chart in at.get("vega_lite_chart"):
        colour = json.loads(chart.proto.spec)["encoding"].get("color", {})
        if colour.get("field") == "stage":
            found.append(dict(zip(colour["scale"]["domain"], colour["scale"]["range"], strict=True)))
    return found


def test_every_chart_colours_a_stage_as_the_stage_table_does_and_notes_identical_curves(run, monkeypatch):
    at = dashboard(run.parent, monkeypatch)
    assert not at.exception
    table = {stage.name: stage.colour for stage in STAGES}
    charts = stage_colours(at)
    assert len(charts) >= 4  # the timeline, then total loss, learning rate and throughput of the stages
    assert all(colours == {stage: table[stage] for stage in colours} for colours in charts)
    assert set(charts[0]) == set(table)
    # the tiny config gives proxy, student and direct one learning-rate schedule: one curve hides the others
    assert "tiny/proxy, tiny/student, tiny/direct: identical lr curves, drawn on top of each other" in texts(
        at.caption
    )
    assert wr.identical_curves(wr.curves(list(wr.read_run(run).stages), "loss")) == []


def test_the_normalised_score_is_in_both_tables_and_the_floor_is_named_by_what_it_is(
    run, tmp_path, monkeypatch
):
    copy = copy_run(run, tmp_path)
    board = copy / "eval" / "scoreboard.json"
    data = json.loads(board.read_text())
    floor = {
        "name": "random vit_small_patch16_dinov3",
        "role": FLOOR_ROLE,
        "spec": f"random:{copy / 'student'}",
    }
    data["rows"].append(floor | {"seg_miou": 0.1})  # the expert has 0.6: multires 0.8, direct 0.6 of the way
    board.write_text(json.dumps(data))
    (scoreboard,) = wr.find_scoreboards(wr.read_run(copy))
    assert scoreboard.rows[-1]["name"].startswith("ViT 32x2, ") and scoreboard.rows[-1]["name"].endswith(
        "M (random init)"
    )
    at = dashboard(copy.parent, monkeypatch)
    assert not at.exception
    frame = at.dataframe[1].value
    assert frame["Norm. score"].round(6).tolist()[1:3] == [0.8, 0.6] and frame["Encoder"].iloc[-1].startswith(
        "ViT"
    )
    at.sidebar.radio[0].set_value("Compare").run()
    comparison = at.dataframe[0].value
    assert comparison.loc["Norm. score"].round(6).tolist() == [0.8, 0.6, -0.2]


def test_compare_draws_losses_only_within_one_objective(run, monkeypatch):
    assert [wr.objective(s) for s in wr.read_run(run).stages] == [
        "the experts", "tiny/proxy", "tiny/proxy", "the experts",
    ]  # fmt: skip
    relative = wr.curves([wr.read_run(run).stage(n) for n in ("multires", "direct")], "loss", relative=True)
    assert [relative[c].dropna().iloc[0] for c in relative] == [1.0, 1.0]
    at = dashboard(run.parent, monkeypatch)
    at.sidebar.radio[0].set_value("Compare").run()
    assert line_charts(at) == [("loss", ["tiny/multires"]), ("loss", ["tiny/direct"])]
    assert texts(at.caption)[-2:] == [
        "loss against tiny/proxy: tiny/multires",
        "loss against the experts: tiny/direct",
    ]
    at.multiselect[0].set_value(["tiny/proxy", "tiny/direct"]).run()  # one objective: one chart
    assert line_charts(at) == [("loss", ["tiny/direct", "tiny/proxy"])]
    at.multiselect[0].set_value(["tiny/multires", "tiny/direct"]).run()
    at.checkbox(key="compare-relative").check().run()
    assert line_charts(at) == [("loss / first", ["tiny/direct", "tiny/multires"])]
    at.selectbox[0].set_value("lr").run()  # not a loss: any stages on one chart
    assert line_charts(at) == [("lr", ["tiny/direct", "tiny/multires"])]


def test_a_run_is_redrawn_live_only_while_it_trains(run, tmp_path, monkeypatch):
    copy = copy_run(run, tmp_path)
    assert not wr.is_running(
        wr.read_run(copy)
    )  # just written, but every planned stage has its final checkpoint
    shutil.rmtree(copy / "direct" / "checkpoint")
    unfinished = wr.read_run(copy)
    assert wr.is_running(unfinished)
    assert not wr.is_running(
        unfinished, now=time.time() + wr.QUIET_S + 1
    )  # nothing changed for long: stopped
    at = dashboard(copy.parent, monkeypatch)
    assert not at.exception and texts(at.header) == ["tiny"]
    assert any(c.startswith("Training: redrawn every") for c in texts(at.caption))


def test_a_run_with_no_stage_yet_is_running_until_it_goes_quiet(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.yaml").write_text("stages: {proxy: {steps: 4}}\n")
    (found,) = wr.list_runs(tmp_path)
    assert found.stages == () and wr.timeline(found).empty
    assert wr.planned_steps(found) == {"proxy": 4}
    assert wr.is_running(found)  # just made: statistics and caches come before the first step
    assert not wr.is_running(found, now=time.time() + wr.QUIET_S + 1)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow  # Streamlit takes 10-20 s to start on a loaded CPU
def test_sigterm_stops_eupe_dashboard_and_its_streamlit_server(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "apps.cli", "dashboard", "--runs", str(tmp_path), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    health = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        deadline = time.monotonic() + 120
        while not answers(health):
            assert process.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert not answers(health)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of what the test started
            os.killpg(process.pid, signal.SIGKILL)
