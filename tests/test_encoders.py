"""The encoder API: experts, distilled checkpoints with their expert-space chain, random floors."""

from __future__ import annotations

import shutil

import pytest
import torch

from distill.features import Features
from distill.models import adaptor_key
from distill.standardize import TeacherStandardizer, load_standardizers
from workbench.eval.encoders import build_encoder, random_encoder
from workbench.eval.expert_heads import expert_reading


@pytest.mark.parametrize(("method", "dim"), [("standard", 6), ("phi-s", 8)])
def test_standardizer_inverse_undoes_standardisation(method, dim):
    torch.manual_seed(0)
    standardizer = TeacherStandardizer(dim, 4, method)
    batches = [Features(torch.randn(16, dim) * 3 + 2, torch.randn(16, 4, 3, 3) * 0.5 - 1) for _ in range(2)]
    standardizer.fit(batches)
    back = standardizer.inverse(standardizer(batches[0]))
    torch.testing.assert_close(back.summary, batches[0].summary, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(back.patches, batches[0].patches, atol=1e-4, rtol=1e-4)


def test_proxy_expert_features_are_its_adaptor_outputs_unstandardised(tiny_run):
    proxy = build_encoder(str(tiny_run / "proxy"))
    assert proxy.kind == "proxy" and proxy.experts() == ["semantic", "text", "edges"]
    images = torch.rand(2, 3, 64, 64)
    features = proxy(images, with_experts=True)
    assert features.patches.shape == (2, 48, 4, 4) and features.summary.shape == (2, 48)
    standardizers = load_standardizers(tiny_run / "proxy" / "standardizers.safetensors")
    model = proxy.backbone.model
    for name, estimate in features.experts.items():
        adapted = model.adaptors[adaptor_key(name)](Features(features.summary, features.patches))
        restandardised = standardizers[name](estimate)
        torch.testing.assert_close(restandardised.summary, adapted.summary, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(restandardised.patches, adapted.patches, atol=1e-3, rtol=1e-3)
    assert features.experts["semantic"].summary.shape == (2, 1280)
    assert features.experts["text"].patches.shape == (2, 32, 4, 4)


def test_student_reaches_the_experts_through_the_proxy(tiny_run):
    student = build_encoder(str(tiny_run / "multires"))
    proxy = build_encoder(str(tiny_run / "proxy"))
    images = torch.rand(2, 3, 64, 64)
    features = student(images, with_experts=True)
    standardizers = load_standardizers(tiny_run / "multires" / "standardizers.safetensors")
    as_proxy = standardizers["proxy"].inverse(
        student.backbone.model.adaptors["proxy"](Features(features.summary, features.patches))
    )
    expected = proxy.expert_map(as_proxy)
    assert set(features.experts) == {"semantic", "text", "edges"}
    for name in expected:
        torch.testing.assert_close(features.experts[name].summary, expected[name].summary)
    # the backbone count excludes adaptors; the chain adds the student's and the proxy's adaptors
    assert student.num_parameters() < student.num_parameters(with_adaptors=True)


def test_random_floor_has_the_architecture_but_not_the_weights(tiny_run):
    trained = build_encoder(str(tiny_run / "direct"), resolution=64)
    floor = random_encoder(tiny_run / "direct", resolution=64)
    assert floor.kind == "random" and floor.experts() == []
    assert floor.num_parameters() == trained.num_parameters()
    images = torch.rand(1, 3, 64, 64)
    assert not torch.allclose(floor(images).summary, trained(images).summary)
    # the same seed gives the same floor, and building it leaves the caller's random stream alone
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    again = random_encoder(tiny_run / "direct", resolution=64)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(again(images).summary, floor(images).summary)


def test_experts_and_resolution(tmp_path):
    edges = build_encoder("edges", resolution=64)
    out = edges(torch.rand(1, 3, 100, 80))
    assert out.patches.shape == (1, 512, 8, 8)
    edges.resolution = None
    assert edges(torch.rand(1, 3, 64, 96)).patches.shape == (1, 512, 8, 12)
    with pytest.raises(ValueError, match="below"):
        edges.resolution = 4


def test_bad_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"model\.safetensors is damaged"):
        build_encoder(str(tmp_path))


def test_expert_reading_of_the_experts_own_features_is_its_output():
    images = torch.rand(2, 3, 64, 64)
    for name in ("text", "edges", "semantic"):
        encoder = build_encoder(name)
        expert = encoder.backbone
        reading = expert_reading(name, expert, expert(images), (64, 64))
        if name == "semantic":
            torch.testing.assert_close(reading, expert.expert_output(images).softmax(-1))
            torch.testing.assert_close(reading.sum(-1), torch.ones(2))
        elif name == "text":
            torch.testing.assert_close(reading, expert.expert_output(images)[:, 0])
        else:
            assert reading.shape == (2, 64, 64) and reading.min() >= 0 and reading.max() <= 1


def test_a_student_reads_its_teacher_stage_only_when_its_expert_estimates_are_asked(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "proxy" / "checkpoint")  # the proxy the student's estimates go through
    student = build_encoder(str(run / "multires"), resolution=64)
    features = student(torch.rand(2, 3, 64, 64))  # own features: the proxy is not needed
    assert features.patches.shape == (2, student.patch_dim, 4, 4) and features.experts == {}
    with pytest.raises(FileNotFoundError, match="proxy"):
        student.experts()
