"""The workbench modules the notebooks call: scales and stages, loss curves, stage inspection, expert
readings, representation figures, agreement, resolution sweeps, the scoreboard reading, image folders."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from distill import trainer
from distill.augment import ViewTransforms
from distill.checkpoint import save_checkpoint
from distill.config import ModelConfig, load_config
from distill.data.scenes import SceneGenerator
from distill.data.training_data import FixedViews
from distill.distilled_teacher import DistilledTeacher
from distill.features import Features
from distill.losses import distillation_loss
from distill.metrics_log import metric_records
from distill.models import DistilledModel
from distill.stage_teachers import StageTeachers
from distill.standardize import TeacherStandardizer
from distill.teachers import build_teacher
from distill.teachers.base import Teacher
from workbench import notebook as notebook_setup
from workbench.eval.encoders import Encoder
from workbench.eval.expert_heads import imagenet_classes, read_experts, teacher_table, top_classes
from workbench.eval.expert_map import ExpertMap
from workbench.eval.reading import compare_roles, written_reading
from workbench.eval.resolution import input_side, patches_at_sides, resolution_sweep
from workbench.eval.settings import EvalSettings
from workbench.eval.similarity import agreement_scores, agreement_table
from workbench.explore.image_folders import folder_images, write_photo_folder
from workbench.explore.training_step import (
    coordinate_std,
    coordinate_table,
    gradient_norm_table,
    gradient_norms,
    loss_terms_table,
    stage_batch_loss,
    standardizer_table,
)
from workbench.notebook import ensure_stages, notebook_scale, stage_step
from workbench.viz.comparison_figures import (
    cka_figure,
    encoder_agreement_figure,
    readings_figure,
    resolution_figure,
)
from workbench.viz.data_figures import image_grid_figure, scene_labels_figure
from workbench.viz.pca_figures import estimate_pca_figure, pca_columns_figure
from workbench.viz.step_figures import coordinate_scale_figure, step_views_figure, transform_title
from workbench.viz.training_curves import (
    logged_teachers,
    loss_curves_figure,
    runs_curves_figure,
    watch_training,
)

TINY_VIT = ModelConfig("vit_small_patch16_dinov3", {"embed_dim": 32, "depth": 1, "num_heads": 2}, 16)


class FakeExpert(Teacher):
    """A tiny frozen conv 'expert': patches [B, 6, H/4, W/4], summary [B, 8]."""

    def __init__(self) -> None:
        super().__init__((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), size_multiple=4)
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 4, stride=4)
        self.proj = nn.Linear(6, 8)
        self.summary_dim, self.patch_dim, self.patch_stride = 8, 6, 4
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        patches = self.conv(x)
        return Features(self.proj(patches.mean((2, 3))), patches)


@pytest.fixture(scope="module")
def student() -> Encoder:
    """A tiny distilled ViT whose adaptor heads estimate the fake expert (identity standardisation)."""
    torch.manual_seed(0)
    model = DistilledModel(TINY_VIT, {"fake": (8, 6)}).eval()
    expert_map = ExpertMap(model.adaptors, model.teacher_names, {"fake": TeacherStandardizer(8, 6)})
    return Encoder("tiny student", "student", DistilledTeacher(model, resolution=32), expert_map)


# ---------------------------------------------------------------- scales and stages


def test_notebook_scale_reads_the_environment_and_refuses_unknown_scales(monkeypatch, tmp_path):
    monkeypatch.setenv("EUPE_SCALE", "tiny")
    monkeypatch.setenv("EUPE_RUNS", str(tmp_path))
    scale = notebook_scale()
    assert scale.name == "tiny" and scale.run_dir == tmp_path / "tiny"
    assert scale.scoreboard_dir == tmp_path / "tiny" / "eval"
    assert load_config(scale.config_path).stages["proxy"].resolutions == [64]
    assert scale.eval_settings.resolution == 64 and scale.scoreboard_experts == []
    toy = notebook_scale("toy", tmp_path / "elsewhere")
    assert toy.run_dir == tmp_path / "elsewhere" / "toy" and toy.config_path.name == "toy.yaml"
    assert toy.eval_settings == EvalSettings()  # what `make demo` (`eupe eval` with defaults) scores with
    monkeypatch.delenv("EUPE_RUNS")
    assert notebook_scale("toy").run_dir == notebook_setup.REPO_ROOT / "runs" / "toy"
    with pytest.raises(ValueError, match="unknown notebook scale 'huge'"):
        notebook_scale("huge")


def fake_checkpoint(run_dir: Path, stage: str, step: int) -> None:
    save_checkpoint(run_dir / stage / "checkpoint", {"w": torch.zeros(1)}, None, {"step": step})


def test_ensure_stages_trains_only_unfinished_stages_and_what_they_read(monkeypatch, tmp_path):
    config = load_config(notebook_scale("tiny").config_path)
    trained: list[str] = []
    fixed = FixedViews(torch.zeros(1), "key")
    monkeypatch.setattr(notebook_setup, "prepare_data", lambda config, stages: fixed)
    monkeypatch.setattr(notebook_setup, "run_stage", lambda config, stage, *args: trained.append(stage))
    run = tmp_path / "run"
    fake_checkpoint(run, "proxy", config.stages["proxy"].steps)  # finished
    fake_checkpoint(run, "student", 1)  # interrupted
    assert stage_step(run, "proxy") == config.stages["proxy"].steps and stage_step(run, "direct") == 0
    logs: list[str] = []
    assert ensure_stages(config, run, ["multires"], log=logs.append) == ["student", "multires"]
    assert trained == ["student", "multires"]
    assert logs[0].startswith("proxy") and logs[0].endswith("reused") and len(logs) == 3
    assert (run / "config.yaml").is_file()
    with pytest.raises(ValueError, match=r"unknown stage 'nope' \(known: proxy, student, multires, direct\)"):
        ensure_stages(config, run, ["nope"])
    other = load_config(notebook_scale("tiny").config_path, ["stages.proxy.steps=99"])
    with pytest.raises(ValueError, match="different config"):
        ensure_stages(other, run, ["proxy"])


# ---------------------------------------------------------------- loss curves


def metrics_line(step: int, teachers: tuple[str, ...] = ("semantic", "edges")) -> str:
    record = {"step": step, "loss": 0.0}
    for i, name in enumerate(teachers):
        record |= {
            f"{name}/summary_cos": 1.0 / (step + 1),
            f"{name}/patch_cos": 0.5,
            f"{name}/patch_smooth_l1": 0.1,
        }
        record[f"{name}/total"] = i + 2.0 / (step + 1)
    return json.dumps(record) + "\n"


def test_metric_records_leaves_out_a_line_still_being_written(tmp_path):
    assert metric_records(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text(metrics_line(0) + metrics_line(1) + '{"step": 2, "lo')
    records = metric_records(tmp_path)
    assert [r["step"] for r in records] == [0, 1]
    assert logged_teachers(records) == ["semantic", "edges"]


def test_loss_curves_figure_draws_every_term_of_every_teacher(tmp_path):
    records = [json.loads(metrics_line(step)) for step in range(5)]
    fig = loss_curves_figure(records, title="proxy")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["semantic", "edges"]
    total = next(line for line in axes[1].lines if line.get_label() == "total")
    assert list(total.get_xdata()) == [0, 1, 2, 3, 4]
    assert total.get_ydata()[0] == pytest.approx(3.0) and total.get_ydata()[4] == pytest.approx(1.4)
    assert len(axes[0].lines) == 4
    with pytest.raises(ValueError, match="no per-teacher loss terms"):
        loss_curves_figure([{"step": 0, "loss": 1.0}])


def test_runs_curves_figure_draws_one_line_per_run_in_each_teacher_panel():
    runs = {"a": [json.loads(metrics_line(step)) for step in range(5)],
            "b": [json.loads(metrics_line(step)) for step in range(0, 5, 2)]}  # fmt: skip
    fig = runs_curves_figure(runs, term="total")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["semantic", "edges"]
    lines = {line.get_label(): line for line in axes[1].lines}
    assert set(lines) == {"a", "b"} and list(lines["b"].get_xdata()) == [0, 2, 4]
    assert lines["a"].get_ydata()[4] == pytest.approx(1.4)
    with pytest.raises(ValueError, match="unknown loss term"):
        runs_curves_figure(runs, term="l2")


def test_watch_training_redraws_as_the_job_logs_and_returns_its_result(tmp_path):
    path = tmp_path / "metrics.jsonl"
    written = threading.Event()

    def job() -> str:
        for step in range(3):
            with path.open("a") as f:
                f.write(metrics_line(step))
            time.sleep(0.05)
        written.set()
        return "done"

    shown: list[int] = []
    result = watch_training(job, tmp_path, draw=lambda records: len(records), show=shown.append, every=0.01)
    assert result == "done" and written.is_set()
    assert shown[-1] == 3 and shown == sorted(set(shown))  # redrawn only on new steps, last with all of them

    def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        watch_training(failing, tmp_path, draw=lambda records: len(records), show=shown.append, every=0.01)


# ---------------------------------------------------------------- stage inspection


def fitted_standardizer(method: str = "standard") -> TeacherStandardizer:
    torch.manual_seed(0)
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0])
    standardizer = TeacherStandardizer(4, 4, method)
    outputs = [
        Features(torch.randn(64, 4) * scales + 5, torch.randn(8, 4, 4, 4) * scales[:, None, None])
        for _ in range(4)
    ]
    standardizer.fit(outputs)
    return standardizer


def test_standardizer_table_and_coordinate_std_report_the_frozen_statistics():
    standard = fitted_standardizer()
    std = coordinate_std(standard, "summary")
    assert std.tolist() == pytest.approx([1.0, 10.0, 0.1, 3.0], rel=0.15)
    phi = fitted_standardizer("phi-s")  # one scale for every coordinate after the rotation
    assert coordinate_std(phi, "patches").std() < 1e-4 * coordinate_std(phi, "patches").mean()
    table = standardizer_table({"fake": standard})
    assert table.count("\n| fake |") == 2
    row = next(line for line in table.splitlines() if "| summary |" in line)
    assert float(row.split("|")[4]) == pytest.approx(5.0, rel=0.05)  # median |mean|


def test_coordinate_scale_figure_shows_unit_spread_after_standardisation():
    standardizer = fitted_standardizer()
    torch.manual_seed(3)
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0])
    raw = Features(torch.randn(256, 4) * scales + 5, torch.randn(16, 4, 4, 4) * scales[:, None, None])
    fig = coordinate_scale_figure({"fake": raw}, {"fake": standardizer(raw)})
    lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].lines}
    assert lines["summary, raw"][0] == pytest.approx(10.0, rel=0.15)
    assert np.allclose(lines["summary, standardised"], 1.0, rtol=0.15)
    with pytest.raises(ValueError, match="name different teachers"):
        coordinate_scale_figure({"fake": raw}, {})


def test_stage_batch_loss_is_the_training_loss_of_the_stage():
    config = load_config(notebook_scale("tiny").config_path)
    expert = FakeExpert()
    standardizer = fitted_standardizer_for(expert)
    teachers = StageTeachers({"fake": expert}, {"fake": standardizer}, {}, {"fake": 0.5}, torch.device("cpu"))
    torch.manual_seed(0)
    model = DistilledModel(TINY_VIT, {"fake": (8, 6)})
    images = torch.rand(2, 3, 32, 32)
    logs = stage_batch_loss(config, teachers, model, images)
    with torch.no_grad():
        _, expected = distillation_loss(
            model(images), {"fake": standardizer(expert(images))}, 0.9, 0.1, {"fake": 0.5}
        )
    assert logs == pytest.approx({k: float(v) for k, v in expected.items()})
    table = loss_terms_table(logs)
    assert f"{logs['fake/patch_cos']:.4f}" in table and f"**{logs['loss']:.4f}**" in table
    with pytest.raises(ValueError, match="no `teacher/term` keys"):
        loss_terms_table({"loss": 1.0})


def fitted_standardizer_for(expert: Teacher) -> TeacherStandardizer:
    standardizer = TeacherStandardizer(expert.summary_dim, expert.patch_dim)
    standardizer.fit(expert(torch.rand(4, 3, 32, 32)) for _ in range(2))
    return standardizer


def test_step_sides_and_optimizer_groups_are_those_of_run_stage(tmp_path, monkeypatch):
    """run_stage draws a step's sides, then its transforms, from the step generator, and groups parameters by
    `optimizer_groups`: the notebook's one step in the open repeats exactly that."""
    overrides = ["stages.proxy.steps=3", "stages.proxy.batch_size=4", "stages.proxy.resolutions=[32, 48, 64]",
                 "stages.proxy.teacher_resolutions=[32, 64]", "augment.flip=0.5", "augment.crop=0.5",
                 "augment.min_crop_cells=1", "train.feature_cache=false"]  # fmt: skip
    config = load_config(notebook_scale("tiny").config_path, overrides)
    expert = FakeExpert()
    teachers = StageTeachers(
        {"fake": expert},
        {"fake": fitted_standardizer_for(expert)},
        {"fake": {}},
        {"fake": 1.0},
        torch.device("cpu"),
    )
    monkeypatch.setattr(trainer, "build_stage_teachers", lambda *args, **kwargs: teachers)
    seen, groups, original = [], [], trainer.transformed

    def recording(images: Tensor, transforms: ViewTransforms | None, side: int) -> Tensor:
        seen.append((transforms, side))
        return original(images, transforms, side)

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, **kwargs) -> None:
            groups.extend(params)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(trainer, "transformed", recording)
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    views = (torch.rand(6, 3, 64, 64) * 255).to(torch.uint8)
    trainer.run_stage(config, "proxy", tmp_path, FixedViews(views, "fake-data"))

    cfg = config.stages["proxy"]
    assert len(seen) == 2 * cfg.steps  # online teachers: the teachers' view, then the model's
    for step in range(cfg.steps):
        rng = trainer.step_generator(config.train.seed, step)
        side, teacher_side = trainer.step_sides(cfg, rng)
        transforms = trainer.view_transforms(config.augment, cfg.batch_size, 64 // 16, rng)
        for (used, used_side), want_side in zip(
            seen[2 * step : 2 * step + 2], (teacher_side, side), strict=True
        ):
            assert used_side == want_side
            assert torch.equal(used.boxes, transforms.boxes) and torch.equal(used.flips, transforms.flips)
    assert len({side for _, side in seen[1::2]}) > 1 or len({side for _, side in seen[::2]}) > 1
    model = DistilledModel(config.proxy, teachers.dims())
    ours = trainer.optimizer_groups(model, cfg.weight_decay)
    assert [g["weight_decay"] for g in ours] == [g["weight_decay"] for g in groups] == [cfg.weight_decay, 0.0]
    for mine, theirs in zip(ours, groups, strict=True):
        assert [p.shape for p in mine["params"]] == [p.shape for p in theirs["params"]]
    assert sum(len(g["params"]) for g in ours) == len(list(model.parameters()))


def test_step_sides_of_a_single_resolution_stage_are_equal():
    config = load_config(notebook_scale("tiny").config_path)
    side, teacher_side = trainer.step_sides(config.stages["proxy"], trainer.step_generator(0, 0))
    assert side == teacher_side == config.stages["proxy"].resolutions[0]


def test_step_views_figure_titles_each_view_and_its_transform():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.25, 0.0, 1.0, 0.75], [0.0, 0.0, 1.0, 1.0]])
    transforms = ViewTransforms(boxes, torch.tensor([True, True, False]))
    assert [transform_title(transforms, k) for k in range(3)] == ["flipped", "flipped, crop 75%", "as is"]
    assert transform_title(None, 0) == "as is"
    whole, index = torch.rand(3, 3, 32, 32), torch.tensor([7, 2, 7])  # a batch may repeat a view
    fig = step_views_figure(whole, trainer.transformed(whole, transforms, 16), index, transforms, count=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["0: view 7", "1: view 2", "0: flipped", "1: flipped, crop 75%"]
    assert fig.axes[2].images[0].get_array().shape[:2] == (16, 16)
    with pytest.raises(ValueError, match="indices"):
        step_views_figure(whole, whole, index[:2], None)


def test_coordinate_table_reports_one_coordinate_before_and_after_standardisation():
    standardizer = fitted_standardizer()
    torch.manual_seed(3)
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0])
    raw = Features(torch.randn(256, 4) * scales + 5, torch.randn(16, 4, 4, 4) * scales[:, None, None])
    table = coordinate_table({"fake": raw}, {"fake": standardizer(raw)}, coordinate=1)
    cells = {row.split("|")[2].strip(): row.split("|")[3:7] for row in table.splitlines()[2:]}
    raw_mean, raw_std, mean, std = (float(c) for c in cells["summary"])
    assert raw_mean == pytest.approx(5.0, abs=1.5) and raw_std == pytest.approx(10.0, rel=0.15)
    assert mean == pytest.approx(0.0, abs=0.15) and std == pytest.approx(1.0, rel=0.15)
    assert float(cells["patches"][1]) == pytest.approx(10.0, rel=0.15)
    with pytest.raises(ValueError, match="4 summary coordinates"):
        coordinate_table({"fake": raw}, {"fake": raw}, coordinate=4)


def test_gradient_norms_split_the_clipped_norm_into_backbone_and_adaptors():
    torch.manual_seed(0)
    model = DistilledModel(TINY_VIT, {"fake": (8, 6), "other.tag": (4, 4)})
    assert gradient_norms(model) == {
        "backbone": 0.0,
        "adaptor fake": 0.0,
        "adaptor other.tag": 0.0,
        "all": 0.0,
    }
    out = model(torch.rand(2, 3, 32, 32))["fake"]  # only the fake teacher's heads take part
    (out.summary.square().mean() + out.patches.square().mean()).backward()
    norms = gradient_norms(model)
    assert norms["adaptor other.tag"] == 0.0 and norms["backbone"] > 0 and norms["adaptor fake"] > 0
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    assert norms["all"] == pytest.approx(float(total), rel=1e-5)
    table = gradient_norm_table(model)
    assert table.count("\n|") == 5 and "| adaptor other.tag |" in table
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert f"| all | {count:.3f} M | {norms['all']:.4g} |" in table


# ---------------------------------------------------------------- the experts' readings


def test_imagenet_names_and_top_classes():
    assert len(imagenet_classes()) == 1000 and imagenet_classes()[285] == "Egyptian cat"
    probabilities = torch.zeros(2, 1000)
    probabilities[0, 285], probabilities[0, 1], probabilities[1, 0] = 0.7, 0.2, 1.0
    top = top_classes(probabilities, k=2)
    assert top[0] == [("Egyptian cat", pytest.approx(0.7)), ("goldfish", pytest.approx(0.2))]
    assert top[1][0] == ("tench", 1.0)
    with pytest.raises(ValueError, match=r"\[B, 1000\]"):
        top_classes(torch.zeros(3))


def test_read_experts_reads_own_features_or_given_estimates():
    experts = {"semantic": build_teacher("semantic", resolution=64), "fake": FakeExpert()}
    images = torch.rand(2, 3, 64, 64)
    readings = read_experts(experts, images)
    assert list(readings) == ["semantic"]  # the fake expert has no head reading
    assert readings["semantic"].shape == (2, 1000) and torch.allclose(
        readings["semantic"].sum(-1), torch.ones(2)
    )
    own = experts["semantic"](images)
    again = read_experts(experts, images, {"semantic": own})
    assert torch.allclose(again["semantic"], readings["semantic"])
    assert read_experts(experts, images, {}) == {}
    table = teacher_table(experts)
    assert "| semantic | 4.65 | 1280 | 1280 @ /32 | 64 |" in table and "any (multiple of 4)" in table


def test_readings_figure_has_one_column_per_map_and_source():
    images = torch.rand(2, 3, 16, 16)
    probabilities = torch.zeros(2, 1000)
    probabilities[:, 285] = 1.0
    readings = {
        "expert": {"semantic": probabilities, "edges": torch.rand(2, 16, 16), "text": torch.rand(2, 16, 16)},
        "student": {"semantic": probabilities, "edges": torch.rand(2, 16, 16)},
    }
    fig = readings_figure(images, readings, row_titles=["a", "b"])
    assert len(fig.axes) == 2 * (1 + 3)
    assert [ax.get_title() for ax in fig.axes[1:4]] == [
        "text map\nexpert",
        "edges map\nexpert",
        "edges map\nstudent",
    ]
    assert "Egyptian cat" in fig.axes[0].get_xlabel() and "student" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="at least one source"):
        readings_figure(images, {})


# ---------------------------------------------------------------- representation figures


def test_cka_figure_annotates_each_matrix():
    names, matrix = ["a", "b"], torch.tensor([[1.0, 0.25], [0.25, 1.0]], dtype=torch.float64)
    fig = cka_figure({"summary": (names, matrix), "patches": (names, matrix)})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["summary", "patches"]
    assert sorted(t.get_text() for t in panels[0].texts) == ["0.25", "0.25", "1.00", "1.00"]
    with pytest.raises(ValueError, match="must be"):
        cka_figure({"bad": (["a"], matrix)})


def test_pca_columns_in_one_group_share_their_colours():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    grid = torch.randn(2, 5, 4, 4)
    fig = pca_columns_figure(
        images, {"a": grid, "b": grid.clone(), "c": torch.randn(2, 7, 8, 8)}, {"a": "g", "b": "g"}
    )
    axes = np.asarray(fig.axes).reshape(2, 4)
    assert np.array_equal(axes[1][1].images[0].get_array(), axes[1][2].images[0].get_array())
    assert axes[0][3].get_title() == "c\n8x8 patches"
    grown = pca_columns_figure(images, {"a": grid, "d": 5 * torch.randn(2, 5, 4, 4)}, {"a": "g", "d": "g"})
    for row in range(2):  # a column added to a group recolours none of the others
        before = np.asarray(fig.axes).reshape(2, 4)[row][1].images[0].get_array()
        assert np.array_equal(np.asarray(grown.axes).reshape(2, 3)[row][1].images[0].get_array(), before)
    titled = pca_columns_figure(images, {"a": grid}, title="stage 2")
    assert titled.get_suptitle() == "stage 2"
    with pytest.raises(ValueError, match="column 'a'"):
        pca_columns_figure(images, {"a": torch.randn(3, 5, 4, 4)})
    experts = {"fake": Features(torch.zeros(2, 8), grid)}
    estimates = {"proxy": {"fake": Features(torch.zeros(2, 8), -grid)}}
    fig = estimate_pca_figure(images, experts, estimates, own={"proxy": torch.randn(2, 6, 2, 2)})
    assert [ax.get_title() for ax in fig.axes[1:4]] == [
        "fake\n4x4 patches",
        "proxy -> fake\n4x4 patches",
        "proxy (own)\n2x2 patches",
    ]


# ---------------------------------------------------------------- agreement and resolution


def test_agreement_scores_and_table():
    torch.manual_seed(0)
    a = Features(torch.randn(2, 8), torch.randn(2, 6, 4, 4) + 3)
    targets = {"x": a, "y": a}
    estimates = {"x": a, "y": Features(a.summary, -a.patches), "z": a}
    scores = agreement_scores(estimates, targets)
    assert scores == pytest.approx({"x": 1.0, "y": -1.0})
    shifted = {"x": Features(a.summary, a.patches + torch.randn(2, 6, 4, 4))}
    standardizer = TeacherStandardizer(8, 6)
    standardizer.patches.mean.fill_(3.0)  # standardising removes the shared offset the raw cosine rewards
    raw = agreement_scores(shifted, {"x": a})["x"]
    assert agreement_scores(shifted, {"x": a}, {"x": standardizer})["x"] < raw
    table = agreement_table({"student": scores})
    assert "| student | 1.000 | -1.000 | 0.000 |" in table


def test_encoder_agreement_figure_titles_the_mean_agreement(student):
    image = torch.rand(3, 32, 32)
    expert = FakeExpert()
    fig = encoder_agreement_figure(student, {"fake": expert}, image)
    expected = agreement_scores(
        student(image[None], with_experts=True).experts, {"fake": expert(image[None])}
    )
    title = next(ax.get_title() for ax in fig.axes if ax.get_title().startswith("fake"))
    assert title == f"fake: {expected['fake']:.2f}"


def test_resolution_sweep_runs_each_encoder_at_each_side_and_restores_it(student):
    images = torch.rand(2, 3, 48, 48)
    grids = patches_at_sides(student, images, [32, 64])
    assert {k: tuple(v.shape[-2:]) for k, v in grids.items()} == {"32 px": (2, 2), "64 px": (4, 4)}
    assert student.resolution == 32
    with pytest.raises(RuntimeError), input_side(student, 48):
        assert student.resolution == 48
        raise RuntimeError
    assert student.resolution == 32
    sweep = resolution_sweep({"s": student}, {"fake": FakeExpert()}, images, [32, 64])
    assert list(sweep["s"]) == [32, 64] and -1 <= sweep["s"][64]["fake"] <= 1
    fig = resolution_figure(sweep, marks=[48])
    (line,) = [line for line in fig.axes[0].lines if line.get_label() == "s"]
    assert list(line.get_xdata()) == [32, 64]
    with pytest.raises(ValueError, match="non-empty sweep"):
        resolution_figure({"s": {}})


# ---------------------------------------------------------------- scoreboard reading


ROWS = [
    {"role": "EUPE student (stages 1-2-3)", "scene_knn20": 0.6, "depth_rmse": 2.0, "seg_miou": 0.3},
    {"role": "direct student (baseline)", "scene_knn20": 0.5, "depth_rmse": 1.0, "seg_miou": 0.301},
    {"role": "random init (floor)", "scene_knn20": 0.1, "depth_rmse": 9.0, "seg_miou": None},
]


def test_compare_roles_respects_the_direction_of_each_column():
    results = {r.title: r.first_better for r in compare_roles(ROWS, ROWS[0]["role"], ROWS[1]["role"])}
    assert results == {"Scenes kNN-20": True, "Seg mIoU": None, "Depth RMSE": False}  # lower RMSE is better
    strict = {r.title: r.first_better for r in compare_roles(ROWS, ROWS[0]["role"], ROWS[1]["role"], tie=0.0)}
    assert strict["Seg mIoU"] is False  # 0.300 < 0.301 once differences under 2 % are not ties
    with pytest.raises(ValueError, match="no scoreboard row with role 'proxy"):
        compare_roles(ROWS, "proxy (stage 1)", ROWS[0]["role"])


def test_written_reading_counts_wins_per_comparison():
    text = written_reading(ROWS)
    lines = text.strip().splitlines()
    assert len(lines) == 2  # stage 2 and the proxy are not on this scoreboard
    assert "better on 1 of 3 probes (Scenes kNN-20); worse on Depth RMSE." in lines[0]
    assert "better on 2 of 2 probes" in lines[1]
    assert written_reading(ROWS[:1]).startswith("No two")


# ---------------------------------------------------------------- data pictures and image folders


def test_scene_labels_figure_and_image_grid():
    batch = SceneGenerator(32, seed=0).batch(0, 3)
    fig = scene_labels_figure(batch, count=2)
    assert len([ax for ax in fig.axes if ax.images]) == 2 * 5
    assert [ax.get_title() for ax in fig.axes[:5]] == ["image", "segmentation", "depth", "edges", "text"]
    with pytest.raises(ValueError, match="count must be between 1 and the batch size 3"):
        scene_labels_figure(batch, count=4)
    fig = image_grid_figure({f"i{k}": torch.rand(3, 8, 8) for k in range(7)}, columns=3)
    assert len(fig.axes) == 9 and sum(bool(ax.images) for ax in fig.axes) == 7
    with pytest.raises(ValueError, match=r"image 'x' must have shape \[3, H, W\]"):
        image_grid_figure({"x": torch.rand(8, 8)})


def test_photo_folder_round_trip(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", ["coffee", "camera"], max_side=64)
    assert sorted(p.name for p in folder.iterdir()) == ["camera.png", "coffee.png"]
    images, names = folder_images(folder, 32)
    assert names == ["camera.png", "coffee.png"] and images.shape == (2, 3, 32, 32)
    assert torch.allclose(images[0][0], images[0][1])  # the greyscale camera photo, replicated
    assert folder_images(folder, 32, limit=1)[1] == ["camera.png"]
    with pytest.raises(ValueError, match="max_side must be at least 16"):
        write_photo_folder(tmp_path / "x", max_side=8)
