"""The scoreboard end to end on a tiny run, its resumability, and its table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from distill.features import Features
from workbench.eval.encoders import EncoderFeatures, build_encoder
from workbench.eval.probes import get_probe, probe_columns, registered_probes
from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs
from workbench.eval.probes.saved import load_probe
from workbench.eval.report import best_rows, markdown_table, write_scoreboard
from workbench.eval.row_cache import encoder_key, probe_folder
from workbench.eval.scoreboard import eval_data, evaluate, run_encoder_specs
from workbench.eval.settings import EvalSettings
from workbench.explore.runs import read_scoreboard

TINY = EvalSettings(
    resolution=64, scene_train=24, scene_test=16, fashion_train=40, fashion_test=20, photos=6, probe_steps=4,
    batch_size=16, latency_repeats=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def scoreboard(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("scoreboard")
    logs: list[str] = []
    rows = evaluate([tiny_run], out, TINY, log=logs.append)
    return out, rows, logs


def test_every_encoder_gets_every_probe_that_applies(scoreboard, tiny_run):
    out, rows, logs = scoreboard
    roles = [r["role"] for r in rows]
    assert roles == ["expert"] * 3 + [
        "proxy (stage 1)",
        "EUPE student (stages 1-2)",
        "EUPE student (stages 1-2-3)",
        "direct student (baseline)",
        "random init (floor)",
    ]
    for row in rows:
        assert row["params_m"] > 0 and row["gflops"] > 0 and row["cpu_ms"] > 0
        scored = ("scene_knn20", "scene_linear", "seg_miou", "depth_rmse", "edges_f", "text_f")
        for key in (*scored, "correspondence_pck10"):
            assert 0 <= row[key] <= (1 if key != "depth_rmse" else 1e3), (row["name"], key)
        distilled = row["role"] not in ("expert", "random init (floor)")
        assert ("semantic_top1" in row) == distilled
        if distilled:
            assert 0 <= row["semantic_top1"] <= row["semantic_top5"] <= 1
        assert list(row["probe_seconds"]) == registered_probes()  # each probe's wall time, in run order
        assert all(seconds >= 0 for seconds in row["probe_seconds"].values())
    assert any(": probe seconds fashion " in line and " segmentation " in line for line in logs)
    # trained dense probes are saved and reload to the same predictions
    probe = load_probe(probe_folder(out, encoder_key("edges")) / "segmentation.safetensors")
    assert probe.task == "segmentation" and probe.num_classes == 11


def test_a_second_evaluation_reuses_saved_rows_whatever_path_names_the_run(
    scoreboard, tiny_run, tmp_path, monkeypatch
):
    out, rows, _ = scoreboard
    logs: list[str] = []
    again = evaluate([tiny_run], out, TINY, experts=[], log=logs.append)
    assert all("reused" in line for line in logs)
    assert [r["seg_miou"] for r in again] == [r["seg_miou"] for r in rows[3:]]
    # rows are keyed by content: a copy of the run, named by a relative path, reuses them too
    shutil.copytree(tiny_run, tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    logs.clear()
    moved = evaluate([Path("moved")], out, TINY, experts=[], log=logs.append)
    assert len(logs) == 5 and all("reused" in line for line in logs)
    assert [r["seg_miou"] for r in moved] == [r["seg_miou"] for r in rows[3:]]
    # and the apps find a row by any path to the same checkpoint
    write_scoreboard(moved, TINY, tmp_path / "board", "eupe eval --runs moved")
    assert read_scoreboard(tmp_path / "board").row_for(str(tiny_run / "multires"))["name"] == "moved/multires"


def test_written_scoreboard(scoreboard, tmp_path):
    _, rows, _ = scoreboard
    paths = write_scoreboard(rows, TINY, tmp_path, "eupe eval --runs tiny")
    table = paths["markdown"].read_text()
    assert "eupe eval --runs tiny" in table
    assert table.count("\n| ") == len(rows) + 1  # header + one line per encoder
    assert all(c.title in table for c in probe_columns())
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["rows"][0]["name"] == "semantic"


def test_best_values_are_bold_and_lower_is_better_for_errors():
    rows = [
        {"name": "e", "role": "expert", "seg_miou": 0.9, "depth_rmse": 0.1},
        {"name": "a", "role": "direct student (baseline)", "seg_miou": 0.5, "depth_rmse": 2.0},
        {"name": "b", "role": "EUPE student (stages 1-2-3)", "seg_miou": 0.6, "depth_rmse": 3.0},
    ]
    assert best_rows(rows, "seg_miou", True) == {2}  # experts are not competitors
    assert best_rows(rows, "depth_rmse", False) == {1}
    table = markdown_table(rows)
    assert "**0.600**" in table and "**2.000**" in table and "—" in table


def test_run_specs_error_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        run_encoder_specs([tmp_path])


def test_agreement_is_perfect_for_the_experts_own_features():
    data = eval_data(EvalSettings(resolution=64, scene_train=2, scene_test=2, fashion_train=2, fashion_test=2,
                                  photos=12))  # fmt: skip
    references = ExpertReferences(["semantic", "edges"], data.photos).ready()
    own = {n: e(data.photos) for n, e in references.experts.items()}

    class Oracle:  # an encoder whose expert-space estimates are the experts' own features
        def experts(self):
            return list(own)

    inputs = ProbeInputs(Oracle(), data, 4)
    inputs.cache["photos"] = EncoderFeatures(torch.zeros(12, 1), torch.zeros(12, 1, 1, 1), own)
    scores = get_probe("agreement").run(inputs, TINY, references).scores
    assert scores["semantic_top1"] == scores["semantic_top5"] == 1.0
    assert scores["edges_agree_f"] == pytest.approx(1.0)
    assert scores["semantic_head_r"] == pytest.approx(1.0) and scores["edges_head_r"] == pytest.approx(1.0)
    # a shuffled estimate disagrees: other images' classes and maps
    shuffled = {n: Features(f.summary.roll(1, 0), f.patches.roll(1, 0)) for n, f in own.items()}
    inputs.cache["photos"] = EncoderFeatures(torch.zeros(12, 1), torch.zeros(12, 1, 1, 1), shuffled)
    scores = get_probe("agreement").run(inputs, TINY, references).scores
    assert scores["semantic_top1"] < 1.0
    assert scores["semantic_head_r"] < 0.95 and scores["edges_head_r"] < 0.8
    assert build_encoder("edges").experts() == []


def test_the_model_card_quotes_the_runs_scoreboard_row(scoreboard, tiny_run, tmp_path):
    from workbench.eval.report import cell
    from workbench.export.timm_folder import export_timm

    _, rows, _ = scoreboard
    board = write_scoreboard(rows, TINY, tmp_path / "eval", "eupe eval --runs tiny")["json"]
    spec = str(tiny_run / "multires")
    folder = export_timm(spec, build_encoder(spec, 64), tmp_path / "export", 64, board)
    card = (folder / "README.md").read_text()
    row = next(r for r in json.loads(board.read_text())["rows"] if r["name"] == "run/multires")
    quoted = dict(
        line.strip("|").split(" | ")[:2]
        for line in card.splitlines()
        if line.startswith("| ") and not line.startswith("| probe")
    )  # the model's column; the references' follow
    expected = {c.title: cell(row[c.key]) for c in probe_columns() if c.key in row}
    assert {k.strip(): v.strip() for k, v in quoted.items() if k.strip() in expected} == expected
    assert "resolution=64" in card and "stage `multires` at step 2" in card
    assert "- `semantic`: Apache-2.0" in card and "- `edges`: MIT" in card  # the experts' licences
