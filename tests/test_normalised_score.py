"""The normalised score on hand-made scoreboard rows: floor 0, best expert 1, errors, skipped columns."""

from __future__ import annotations

import json

import pytest

from workbench.eval.normalised import column_references, normalised_columns, with_normalised_scores
from workbench.eval.report import markdown_table, write_scoreboard
from workbench.eval.settings import EvalSettings

EFFICIENCY = {"params_m": 1.0, "gflops": 0.1, "cpu_ms": 2.0}
ROWS = [
    {"name": "a", "role": "expert", "scene_knn20": 0.8, "depth_rmse": 2.0, "seg_miou": 0.5},
    {"name": "b", "role": "expert", "scene_knn20": 0.6, "depth_rmse": 1.0, "seg_miou": 0.4},
    {"name": "s", "role": "EUPE student (stages 1-2-3)", "scene_knn20": 0.5, "depth_rmse": 2.5,
     "seg_miou": 0.9, "text_f": 0.2, "semantic_top1": 0.3},
    {"name": "p", "role": "proxy (stage 1)", "seg_miou": 0.7},
    {"name": "r", "role": "random init (floor)", "scene_knn20": 0.2, "depth_rmse": 3.0, "seg_miou": 0.5,
     "text_f": 0.1},
]  # fmt: skip


def test_columns_run_from_the_floor_to_the_best_expert_in_the_columns_direction():
    # seg_miou: best expert 0.5 = floor (undefined); text_f and semantic_top1: no expert value
    assert column_references(ROWS) == {"scene_knn20": (0.2, 0.8), "depth_rmse": (3.0, 1.0)}
    student = normalised_columns(ROWS[2], column_references(ROWS))
    assert student == pytest.approx({"scene_knn20": 0.5, "depth_rmse": 0.25})  # 0.3 / 0.6; -0.5 / -2


def test_a_column_where_the_experts_barely_beat_the_floor_does_not_count():
    # scenes linear: floor 0.95, best expert 0.96 closes 0.01 / 0.05 = 20% of the way to 1: skipped;
    # depth RMSE: floor 3.0, best 2.2 closes 0.8 / 3.0 = 27% of the way to 0: counts
    rows = [
        {"name": "e", "role": "expert", "scene_linear": 0.96, "depth_rmse": 2.2},
        {"name": "r", "role": "random init (floor)", "scene_linear": 0.95, "depth_rmse": 3.0},
    ]
    assert column_references(rows) == {"depth_rmse": (3.0, 2.2)}


def test_the_score_is_the_mean_over_the_usable_columns_a_row_has():
    scores = [row.get("normalised_score") for row in with_normalised_scores(ROWS)]
    # a: (1 + 0.5) / 2; b: (2/3 + 1) / 2; s: (0.5 + 0.25) / 2; p: no usable column; floor: 0
    assert scores == pytest.approx([0.75, 5 / 6, 0.375, None, 0.0])
    assert "normalised_score" not in ROWS[0]  # the input rows are left as they are


def test_without_a_floor_there_is_no_score_and_no_column():
    rows = ROWS[:4]
    assert column_references(rows) == {}
    assert all("normalised_score" not in row for row in with_normalised_scores(rows))
    assert "Norm. score" not in markdown_table(rows)


def test_the_scoreboard_shows_the_score_after_efficiency_and_writes_it_to_json(tmp_path):
    rows = [row | EFFICIENCY for row in ROWS]
    header = markdown_table(rows).splitlines()[0]
    assert "| CPU ms | Norm. score | F-MNIST kNN-20 |" in header
    assert "**0.375**" in markdown_table(rows)  # the best non-expert score is bold
    paths = write_scoreboard(rows, EvalSettings(), tmp_path, "eupe eval")
    written = json.loads(paths["json"].read_text())["rows"]
    assert [r.get("normalised_score") for r in written] == pytest.approx([0.75, 5 / 6, 0.375, None, 0.0])
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"
