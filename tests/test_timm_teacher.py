"""timm models as teachers: ViTs with CLS and register tokens, ConvNeXt, local weight files."""

import pytest
import torch
from safetensors.torch import save_file

from distill.backbones import TIMM_ALIASES, create_timm_backbone
from distill.teachers import build_teacher
from distill.teachers.timm_teacher import TimmTeacher

TINY_VIT = "vit_small_patch16_dinov3_qkvb"  # DINOv3-style: RoPE, CLS + 4 registers


def test_vit_with_registers_drops_prefix_tokens():
    teacher = TimmTeacher(TINY_VIT, weights="random")
    assert teacher.model.num_prefix_tokens == 5 and teacher.patch_stride == 16
    images = torch.rand(2, 3, 64, 96)
    out = teacher(images)
    assert out.summary.shape == (2, 384) and out.patches.shape == (2, 384, 4, 6)
    tokens = teacher.model.forward_features(teacher.prepare(images))
    assert torch.allclose(out.summary, tokens[:, 0], atol=1e-5)  # summary = normalised CLS token
    # patch (row 1, col 2) is token 5 + 1*6 + 2 (after CLS and 4 registers), row-major
    assert torch.allclose(out.patches[:, :, 1, 2], tokens[:, 5 + 1 * 6 + 2], atol=1e-5)


def test_vit_rounds_odd_sizes_to_patch_multiples():
    teacher = TimmTeacher(TINY_VIT, weights="random")
    assert teacher(torch.rand(1, 3, 70, 50)).patches.shape[-2:] == (4, 3)
    fixed = TimmTeacher(TINY_VIT, weights="random", resolution=128)
    assert fixed(torch.rand(1, 3, 70, 50)).patches.shape[-2:] == (8, 8)


def test_convnext_summary_and_map():
    teacher = build_teacher("timm:convnext_atto", weights="random")
    out = teacher(torch.rand(2, 3, 96, 64))
    assert out.patches.shape == (2, 320, 3, 2) and out.summary.shape == (2, 320)
    assert teacher.patch_stride == 32
    # summary = ConvNeXt's head norm applied to the pooled map
    pooled = out.patches.mean((2, 3))
    assert torch.allclose(
        out.summary, teacher.model.head.norm(pooled[:, :, None, None]).flatten(1), atol=1e-5
    )


def test_local_weight_file_goes_through_timms_pretrained_loader(tmp_path):
    torch.manual_seed(1)
    source = create_timm_backbone("convnext_atto", "random")
    path = tmp_path / "convnext_atto.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = TimmTeacher("convnext_atto", weights="file", checkpoint=path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).patches, source.forward_features(loaded.prepare(x)))


def test_teacher_is_frozen_and_bad_input_is_refused():
    teacher = TimmTeacher("convnext_atto", weights="random")
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match=r"shape \[B, 3, H, W\]"):
        teacher(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        teacher(torch.rand(1, 3, 32, 32) * 255)


def test_bad_names_and_weights_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown timm model 'not_a_model'"):
        TimmTeacher("not_a_model", weights="random")
    with pytest.raises(ValueError, match="weights must be"):
        TimmTeacher("convnext_atto", weights="hub")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        TimmTeacher("convnext_atto", weights="file", checkpoint=tmp_path / "missing.pth")
    with pytest.raises(KeyError, match="unknown teacher 'nope'"):
        build_teacher("nope")


@pytest.mark.parametrize("alias", sorted(TIMM_ALIASES))
def test_published_models_are_known_to_timm_with_their_tags(alias):
    import timm

    name = TIMM_ALIASES[alias]
    assert name in timm.list_models(name.split(".")[0], pretrained=True)
