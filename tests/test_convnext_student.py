"""A ConvNeXt student read at stride 16 (the paper also releases ConvNeXt students): it trains, resumes
exactly after an interruption, and exports as a timm folder and as ONNX."""

import pytest
import torch
from safetensors.torch import load_file
from test_training import config_file

from apps.cli import main
from distill import trainer
from distill.config import load_config
from distill.pipeline import run_stages
from workbench.eval.encoders import build_encoder

CONVNEXT_16 = [
    "student.arch=convnext_atto",
    "student.kwargs={dims: [16, 24, 32, 48], depths: [1, 1, 1, 1], output_stride: 16}",
    "student.adaptor_hidden=32",
    "stages.student.schedule=wsd",
]


@pytest.fixture(scope="module")
def convnext_run(tmp_path_factory):
    """A run whose student stage trained a stride-16 ConvNeXt, and the uninterrupted weights."""
    folder = tmp_path_factory.mktemp("convnext")
    config = load_config(config_file(folder, steps=6), CONVNEXT_16)
    run_stages(config, folder / "whole", ["proxy", "student"])
    return folder, config


def test_the_student_reads_a_stride_16_grid(convnext_run):
    folder, _ = convnext_run
    encoder = build_encoder(str(folder / "whole" / "student"), 64)
    out = encoder(torch.rand(2, 3, 64, 64), with_experts=True)
    assert out.patches.shape == (2, 48, 4, 4) and out.summary.shape == (2, 48)
    assert set(out.experts) == {"timm:convnext_atto.d2_in1k"}


def test_an_interrupted_convnext_student_resumes_to_the_same_weights(convnext_run, monkeypatch):
    folder, config = convnext_run
    run_stages(config, folder / "cut", ["proxy"])
    original, calls = trainer.distillation_loss, {"n": 0}

    def dies_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "distillation_loss", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_stages(config, folder / "cut", ["student"])
    monkeypatch.setattr(trainer, "distillation_loss", original)
    resumed = run_stages(config, folder / "cut", ["student"])["student"]
    assert 0 < resumed.trained_steps < 6
    weights = "student/checkpoint/model.safetensors"
    whole, cut = (load_file(str(folder / run / weights)) for run in ("whole", "cut"))
    assert whole.keys() == cut.keys()
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", ["timm", "onnx"])
def test_the_convnext_student_exports(convnext_run, tmp_path, capsys, fmt):
    folder, _ = convnext_run
    out = tmp_path / ("student.onnx" if fmt == "onnx" else "student")
    student = str(folder / "whole" / "student")
    main(["export", student, "--out", str(out), "--format", fmt, "--resolution", "64"])
    printed = capsys.readouterr().out
    difference = float(printed.split("max |difference| ")[1].split()[0])
    assert difference < 1e-4, printed
    assert out.exists()
