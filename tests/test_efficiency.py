"""Efficiency benchmark (params, GFLOPs, latency, tables) and ONNX export checked against PyTorch."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.config import ModelConfig
from distill.models import DistilledModel
from workbench.bench.encoders import (
    EfficiencyRow,
    benchmark_encoder,
    count_gflops,
    count_parameters,
    format_efficiency_table,
    rows_to_markdown,
)
from workbench.eval.latency import measure_latency, timing_summary
from workbench.export import onnx_file as export_module
from workbench.export.onnx_file import (
    check_onnx,
    export_checked_onnx,
    export_onnx,
    onnx_cosine,
    onnx_latency,
    onnx_output_names,
    quantise_onnx,
)

RES = 32


def tiny_model() -> DistilledModel:
    torch.manual_seed(0)
    config = ModelConfig(
        arch="vit_small_patch16_dinov3",
        kwargs={"embed_dim": 64, "depth": 2, "num_heads": 2},
        adaptor_hidden=64,
    )
    return DistilledModel(config, {"semantic": (32, 48), "timm:edges.v1": (16, 24)})


@pytest.fixture(scope="module")
def model() -> DistilledModel:
    return tiny_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> dict[bool, object]:
    """One export without and one with adaptors (each takes seconds)."""
    folder = tmp_path_factory.mktemp("onnx")
    return {a: export_onnx(model, folder / f"tiny_{a}.onnx", RES, with_adaptors=a) for a in (False, True)}


def test_count_parameters_matches_hand_count():
    linear, conv = nn.Linear(10, 20), nn.Conv2d(3, 4, 3)
    assert count_parameters(nn.Sequential(linear, conv)) == (10 * 20 + 20) + (3 * 4 * 9 + 4)
    assert count_parameters(nn.Sequential(linear, linear)) == 10 * 20 + 20  # shared weights once


def test_gflops_of_known_layers_per_image():
    images = torch.rand(4, 3, 10, 10)
    linear = nn.Linear(300, 200)
    assert count_gflops(lambda x: linear(x.flatten(1)), images) == pytest.approx(2 * 300 * 200 / 1e9)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_gflops(conv, images) == pytest.approx(2 * 3 * 9 * 8 * 100 / 1e9)


def test_gflops_count_cpu_attention():
    heads, tokens, dim = 2, 16, 8

    def attend(x):
        q = x.reshape(x.shape[0], heads, tokens, dim)  # [B, 1, 32, 8] -> [B, heads, tokens, dim]
        return F.scaled_dot_product_attention(q, q, q)

    images = torch.rand(3, 1, heads * tokens, dim)
    # Q K^T and A V: two products of tokens x tokens x dim per head, 2 FLOPs per multiply-add.
    assert count_gflops(attend, images) == pytest.approx(2 * 2 * heads * tokens * tokens * dim / 1e9)


def test_timing_summary_known_numbers():
    seconds = [i / 1000 for i in (10, 1, 9, 2, 8, 3, 7, 4, 6, 5)]
    summary = timing_summary(seconds, batch=4)
    assert summary["median_ms"] == pytest.approx(5.5)
    assert summary["p90_ms"] == pytest.approx(9.0)
    assert summary["throughput"] == pytest.approx(4 * 1000 / 5.5)


def test_measure_latency_positive_and_restores_threads():
    threads = torch.get_num_threads()
    conv = nn.Conv2d(3, 4, 3)
    result = measure_latency(conv, torch.rand(2, 3, 16, 16), warmup=1, repeats=3, threads=1)
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    assert result["p90_ms"] >= result["median_ms"]
    assert result["throughput"] == pytest.approx(2 * 1000 / result["median_ms"])
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(conv, torch.rand(1, 3, 8, 8), repeats=0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        measure_latency(conv, torch.rand(3, 8, 8))


def test_benchmark_row_and_tables(model, exported):
    model.train()
    row = benchmark_encoder("tiny", model.features, RES, ["cpu"], 4, 1, 2, onnx_path=exported[False])
    assert row.params_m is None  # a bound method is no module
    assert row.gpu_latency_ms is None and row.gpu_throughput is None
    assert row.cpu_latency_ms > 0 and row.cpu_throughput > 0 and row.onnx_latency_ms > 0
    module_row = benchmark_encoder("tiny module", model, RES, ["cpu"], 2, 0, 1)
    assert module_row.params_m == pytest.approx(count_parameters(model) / 1e6)
    assert module_row.gflops > row.gflops > 0  # the adaptors add FLOPs to the backbone's
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="devices"):
        benchmark_encoder("tiny", model, RES, ["tpu"])

    big = EfficiencyRow("big-encoder", 86.6, 17.6, 224, 120.0, 9.5, 2.5, 800.0, 60.0, 0.99991, 30.0, 0.9987)
    rows = [row, big]
    lines = format_efficiency_table(rows).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1  # aligned
    cells = ["86.60", "17.6", "224", "120.0", "9.5", "2.50", "800", "60.0", "0.50", "0.99991", "30.0", "0.25"]
    assert lines[2].split() == ["big-encoder", *cells, "0.99870"]  # ONNX and int8: ms, x eager, cosine
    markdown = rows_to_markdown(rows).splitlines()
    assert len(markdown) == 4 and markdown[1].startswith("|---|---:")
    assert markdown[3] == "| big-encoder | " + " | ".join(cells) + " | 0.99870 |"


@pytest.mark.parametrize("with_adaptors", [False, True])
def test_onnx_matches_pytorch_at_two_batch_sizes(model, exported, with_adaptors):
    path = exported[with_adaptors]
    expected = ["summary", "patches"]
    if with_adaptors:
        expected += [
            "semantic.summary",
            "semantic.patches",
            "timm_edges__v1.summary",
            "timm_edges__v1.patches",
        ]
    assert onnx_output_names(model, with_adaptors) == expected
    for batch in (1, 3):
        differences = check_onnx(path, model, torch.rand(batch, 3, RES, RES), with_adaptors)
        assert list(differences) == expected
        assert max(differences.values()) < 1e-4
    assert onnx_latency(path, torch.rand(1, 3, RES, RES), warmup=1, repeats=3)["median_ms"] > 0


def test_check_onnx_rejects_a_different_model(model, exported):
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.backbone.norm.weight.add_(0.5)
    with pytest.raises(ValueError, match="'summary' differs from PyTorch"):
        check_onnx(exported[False], changed, torch.rand(2, 3, RES, RES))
    with pytest.raises(ValueError, match="has outputs"):
        check_onnx(exported[False], model, torch.rand(2, 3, RES, RES), with_adaptors=True)


def test_export_rejects_bad_targets_before_exporting(model, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx", RES)
    with pytest.raises(ValueError, match=r"end in \.onnx"):
        export_onnx(model, tmp_path / "m.txt", RES)
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        export_onnx(model, tmp_path / "d.onnx", RES)
    with pytest.raises(ValueError, match="multiple of stride 16"):
        export_onnx(model, tmp_path / "m.onnx", 40)
    assert [p.name for p in tmp_path.iterdir()] == ["d.onnx"]


def test_failed_write_leaves_old_file_and_no_partial(model, tmp_path, monkeypatch):
    class BrokenProgram:
        def save(self, destination, **kwargs):
            destination.write_bytes(b"half a model")
            raise OSError("disk full")

    monkeypatch.setattr(export_module.torch.onnx, "export", lambda *args, **kwargs: BrokenProgram())
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")
    with pytest.raises(OSError, match="disk full"):
        export_onnx(model, target, RES)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert target.read_bytes() == b"previous export"


def test_int8_onnx_is_timed_and_checked_against_pytorch(model, exported, tmp_path, monkeypatch):
    images = torch.rand(3, 3, RES, RES)
    quantised = quantise_onnx(exported[False], tmp_path / "int8.onnx")
    assert quantised.stat().st_size < exported[False].stat().st_size / 2  # int8 weights
    fp32_cosine = onnx_cosine(exported[False], model, images)
    int8_cosine = onnx_cosine(quantised, model, images)
    assert fp32_cosine > 0.99999 and 0.99 < int8_cosine < fp32_cosine
    row = benchmark_encoder("tiny", model.features, RES, ["cpu"], 1, 0, 1, onnx_path=exported[False],
                            int8_path=quantised)  # fmt: skip
    assert row.int8_latency_ms > 0
    assert row.int8_ratio == pytest.approx(row.int8_latency_ms / row.cpu_latency_ms)
    _, cosine, differences = export_checked_onnx(model, tmp_path / "m.onnx", RES, images, "int8")
    assert cosine == pytest.approx(int8_cosine, abs=1e-3) and differences == {}
    monkeypatch.setattr(export_module, "MIN_COSINE", 1.0)  # no int8 file agrees that well
    with pytest.raises(ValueError, match="agrees with PyTorch only to cosine"):
        export_checked_onnx(model, tmp_path / "refused.onnx", RES, images, "int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "m.onnx"]


def test_an_fp32_export_is_checked_with_one_onnxruntime_session(model, tmp_path, monkeypatch):
    sessions = []
    real = export_module.onnx_session
    monkeypatch.setattr(export_module, "onnx_session", lambda *a, **k: sessions.append(a) or real(*a, **k))
    images = torch.rand(3, 3, RES, RES)
    path, cosine, differences = export_checked_onnx(model, tmp_path / "m.onnx", RES, images)
    assert len(sessions) == 1  # the differences and the agreement come from one run of each side
    assert list(differences) == ["summary", "patches"] and max(differences.values()) < 1e-4
    assert cosine == pytest.approx(onnx_cosine(path, model, images))


def test_export_and_check_is_what_eupe_export_does_from_a_notebook(tmp_path):
    from workbench.export.checked import export_and_check

    result = export_and_check("timm:test_vit", tmp_path / "new" / "m.onnx", resolution=32, weights="random")
    assert result.path.is_file() and result.format == "onnx" and result.precision == "fp32"
    assert result.outputs == ["summary", "patches"] == list(result.differences)
    assert result.cosine > 0.999 and result.input_change > 1e-3
    assert set(result.latency_ms) == {"eager", "onnx"}
    lines = result.lines()
    assert lines[0].startswith(f"wrote {result.path} (") and lines[-1].startswith("output change between")
