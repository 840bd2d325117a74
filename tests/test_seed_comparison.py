"""Several seeds of one recipe: the comparison's arithmetic, its errors, and `eupe compare` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from apps.cli import main
from workbench.eval.seeds import PAIRED, aggregate, comparison_markdown, paired_difference, spread

EUPE, DIRECT = PAIRED


def board(eupe: float, direct: float, rmse: tuple[float, float]) -> list[dict]:
    """One seed's scoreboard: an expert at 1 and a floor at 0 on scene kNN, so normalised = raw there."""
    return [
        {"name": "semantic", "role": "expert", "scene_knn20": 1.0},
        {"name": "s0/multires", "role": EUPE, "scene_knn20": eupe, "depth_rmse": rmse[0]},
        {"name": "s0/direct", "role": DIRECT, "scene_knn20": direct, "depth_rmse": rmse[1]},
        {"name": "random", "role": "random init (floor)", "scene_knn20": 0.0},
    ]


BOARDS = [board(0.5, 0.4, (3.0, 4.0)), board(0.7, 0.4, (2.0, 2.5))]


def test_spread_is_the_mean_and_sample_std():
    assert spread([1.0, 2.0, 3.0]) == spread([3.0, 1.0, 2.0])
    assert (spread([1.0, 2.0, 3.0]).mean, spread([1.0, 2.0, 3.0]).std) == (2.0, 1.0)  # ddof = 1
    assert spread([0.25]).std is None and str(spread([0.25])) == "0.250"
    assert str(spread([1.0, 2.0, 3.0])) == "2.000 ± 1.000"


def test_rows_are_aggregated_per_role_over_seeds():
    spreads = aggregate(BOARDS)
    assert list(spreads) == ["semantic (expert)", EUPE, DIRECT, "random init (floor)"]
    eupe = spreads[EUPE]
    assert eupe["scene_knn20"].mean == pytest.approx(0.6)
    assert eupe["scene_knn20"].std == pytest.approx(0.02**0.5)  # sqrt((0.1² + 0.1²) / (2 - 1))
    assert eupe["normalised_score"].mean == pytest.approx(0.6)  # kNN is its only usable column
    assert spreads[DIRECT]["scene_knn20"].std == 0.0 and "depth_rmse" not in spreads["semantic (expert)"]


def test_paired_difference_is_taken_within_each_seed():
    difference = paired_difference(BOARDS, EUPE, DIRECT)
    # kNN: 0.1 and 0.3; RMSE: -1.0 and -0.5
    assert difference["scene_knn20"].mean == pytest.approx(0.2)
    assert difference["scene_knn20"].std == pytest.approx(0.02**0.5)  # sqrt((0.1² + 0.1²) / (2 - 1))
    assert difference["depth_rmse"].mean == pytest.approx(-0.75)
    assert difference["normalised_score"].n == 2
    assert paired_difference([BOARDS[0][:2]], EUPE, DIRECT) == {}  # no direct student: no difference


def test_markdown_shows_cells_the_difference_and_the_number_of_seeds():
    difference = paired_difference(BOARDS, EUPE, DIRECT)
    text = comparison_markdown(aggregate(BOARDS), difference, [Path("a"), Path("b")], "eupe x")
    assert "2 seeds" in text and "| Encoder | Norm. score | Scenes kNN-20 | Depth RMSE |" in text
    assert f"| {EUPE} | 0.600 ± 0.141 | 0.600 ± 0.141 | 2.500 ± 0.707 |" in text
    assert f"| {EUPE} − {DIRECT}, paired | 0.200 ± 0.141 | 0.200 ± 0.141 | -0.750 ± 0.354 |" in text
    assert "| semantic (expert) | 1.000 ± 0.000 | 1.000 ± 0.000 | — |" in text


def test_bad_input_gives_one_line_errors(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--config", "configs/tiny.yaml", "--seeds", "0", "--out", str(tmp_path)])
    assert str(info.value) == "eupe: error: the number of seeds must be at least 1, not 0"
    with pytest.raises(SystemExit) as info:
        main(["compare", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)])
    assert str(info.value) == f"eupe: error: config file not found: {tmp_path / 'missing.yaml'}"


TINY_EVAL = {  # the smallest evaluation, as tests/test_scoreboard.py scores the tiny run
    "scene-train": 24, "scene-test": 16, "fashion-train": 40, "fashion-test": 20, "photos": 6,
    "probe-steps": 4, "batch-size": 16, "latency-repeats": 1,
}  # fmt: skip


@pytest.mark.slow
def test_compare_trains_and_scores_each_seed_then_writes_the_table(tmp_path, capsys):
    main(["compare", "--config", "configs/tiny.yaml", "--seeds", "2", "--out", str(tmp_path),
          "--device", "cpu", *(a for k, v in TINY_EVAL.items() for a in (f"--{k}", str(v)))])  # fmt: skip
    for seed in (0, 1):
        run = tmp_path / f"tiny-seed{seed}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["data"]["seed"] == config["train"]["seed"] == seed
        assert (run / "multires" / "checkpoint").is_dir() and (run / "eval" / "scoreboard.md").is_file()
        rows = json.loads((run / "eval" / "scoreboard.json").read_text())["rows"]
        assert rows[-1]["normalised_score"] == 0.0 and rows[0]["name"] == "semantic"
        scored = {json.loads(path.read_text())["name"] for path in (run / "eval" / "rows").glob("*.json")}
        assert ("semantic" in scored) == (seed == 0)  # the experts are scored once and shared
    printed = capsys.readouterr().out
    table = (tmp_path / "tiny-compare.md").read_text()
    assert table in printed and "2 seeds" in table and " ± " in table
    assert f"| {EUPE} − {DIRECT}, paired |" in table
    data = json.loads((tmp_path / "tiny-compare.json").read_text())
    assert data["seeds"] == 2 and data["settings"]["resolution"] == 64  # the tiny student's side
    assert data["paired_difference"]["normalised_score"]["n"] == 2
