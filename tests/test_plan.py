"""The dry-run planner: models sized on the meta device, per-stage memory and FLOPs, data checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import RunConfig, load_config
from distill.pipeline import configured_stages
from distill.plan import RunPlan, format_plan, plan_run


@pytest.fixture(scope="module")
def paper_proxy() -> RunPlan:
    """The paper recipe's proxy stage on 64 GPUs."""
    return plan_run(load_config("paper"), ["proxy"], world_size=64)


def toy(*overrides: str) -> RunConfig:
    return load_config("toy", list(overrides))


def test_paper_plan_counts_parameters_on_meta(paper_proxy: RunPlan) -> None:
    params = {m.role if m.role != "teacher" else m.label: m.params for m in paper_proxy.models}
    assert 1.7e9 < params["proxy"] < 2.0e9
    assert 80e6 < params["student"] < 90e6
    teachers = [m for m in paper_proxy.models if m.role == "teacher"]
    assert [t.dims for t in teachers] == [(1536, 1536), (1536, 1536), (1280, 1280)]
    assert all(t.params > 0.8e9 for t in teachers)
    (stage,) = paper_proxy.stages
    assert stage.teachers == ["pe-core-g", "pe-lang-g", "dinov3-h+"] and stage.per_gpu_batch == 128
    assert stage.train_flops > 1e12 and stage.total_flops > 1e21
    assert "1.84B" in format_plan(paper_proxy)


def test_fsdp_memory_falls_with_world_size(paper_proxy: RunPlan) -> None:
    fewer = plan_run(load_config("paper"), ["proxy"], world_size=8)
    assert fewer.stages[0].memory.trained == pytest.approx(8 * paper_proxy.stages[0].memory.trained)
    assert fewer.stages[0].memory.total > paper_proxy.stages[0].memory.total


def test_toy_plan_has_every_stage_and_no_problems() -> None:
    config = toy()
    plan = plan_run(config, configured_stages(config), world_size=1)
    assert [s.name for s in plan.stages] == ["proxy", "student", "multires", "direct"]
    assert plan.problems == []
    assert plan.stages[1].teachers == ["proxy"] and not plan.stages[0].memory.sharded
    assert format_plan(plan).endswith("no problems found")


@pytest.mark.parametrize("source", ["leaves", "noise", "mixed"])
def test_every_generated_source_passes_the_data_check(source: str) -> None:
    plan = plan_run(toy(f"data.source={source}"), ["proxy"], world_size=1)
    assert plan.problems == [] and f"source {source}: generated, ok" in format_plan(plan)


def test_missing_folder_is_a_problem_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    plan = plan_run(toy(f"data.source=folder:{missing}"), ["proxy"], world_size=1)
    assert any(str(missing) in p for p in plan.problems)
    assert str(missing) in format_plan(plan).split("problems:")[1]


def test_folder_images_are_counted(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"")
    plan = plan_run(toy(f"data.source=folder:{tmp_path}"), ["proxy"], world_size=1)
    assert f"{tmp_path}: 3 images" in plan.data[0]
    assert plan.problems == [f"data.num_images is 640 but {tmp_path} holds 3 images"]


def test_batch_that_does_not_split_is_reported() -> None:
    plan = plan_run(toy(), ["proxy"], world_size=3)
    assert any("batch_size 32 does not split over 3 processes" in p for p in plan.problems)


def test_a_dry_run_whose_plan_cannot_run_exits_non_zero_with_the_reason(tmp_path: Path, capsys) -> None:
    from apps.cli import main

    main(["pipeline", "--config", "configs/toy.yaml", "--dry-run", "--stages", "proxy"])  # fits: exit 0
    assert capsys.readouterr().out.rstrip().endswith("no problems found")
    missing = tmp_path / "nowhere"
    for argv in (["--gpu-memory-gib", "0.001"], [f"data.source=folder:{missing}"]):
        with pytest.raises(SystemExit) as info:
            main(["pipeline", "--config", "configs/toy.yaml", "--dry-run", "--stages", "proxy", *argv])
        line = str(info.value)
        assert line.startswith("eupe: error: the dry run found 1 problem(s): ") and "\n" not in line
        assert ("does not fit" if "gpu" in argv[0] else str(missing)) in line
        assert "problems:" in capsys.readouterr().out  # the plan itself is printed first


def test_the_data_check_names_missing_stamps(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(tmp_path))
    plan = plan_run(toy("data.source=stamps"), ["proxy"], world_size=1)
    assert any("tuxpaint-stamps-default" in problem for problem in plan.problems)
    # in a mix, the stamps' share falls back to scenes: a line of the plan, not a problem
    mixed = plan_run(toy("data.mix={scenes: 0.7, stamps: 0.3}"), ["proxy"], world_size=1)
    assert not mixed.problems and "stamps's share goes to generated scenes" in format_plan(mixed)
