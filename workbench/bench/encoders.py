"""Encoder efficiency (`eupe bench encoders`, the scoreboard, the model card): parameters, GFLOPs, latency
and throughput on CPU, GPU and onnxruntime.

Every function takes any callable `fn(images)` with images [B, 3, H, W] in [0, 1]; encoders are
usually `nn.Module`s returning a `Features`, but the output is never inspected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from distill.flops import forward_flops
from workbench.eval.latency import check_batch, evaluating, measure_latency

DEVICES = ("cpu", "cuda")


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or frozen; shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters())


def count_gflops(fn: Callable[[Tensor], object], images: Tensor) -> float:
    """Forward GFLOPs per image, as `distill.flops` counts them.

    A multiply-add counts as 2 FLOPs. Only matrix products, convolutions and attention are
    counted (elementwise ops, norms and activations are not), as is usual for encoder GFLOPs.

    Args:
        fn: the encoder, called once as `fn(images)` under `torch.no_grad()`.
        images: [B, 3, H, W] input batch.
    """
    check_batch(images)
    return forward_flops(fn, images) / 1e9


@dataclass
class EfficiencyRow:
    """One encoder's efficiency at one resolution (None: not measured).

    Attributes:
        name: encoder name.
        params_m: parameters in millions (None for a plain callable).
        gflops: forward GFLOPs per image (multiply-add = 2 FLOPs).
        resolution: square input side.
        cpu_latency_ms, gpu_latency_ms: median ms at batch 1 (PyTorch eager, fp32).
        cpu_throughput, gpu_throughput: images/s at the throughput batch.
        onnx_latency_ms, int8_latency_ms: median ms at batch 1 in onnxruntime on the CPU, fp32 and int8
            (dynamic quantisation, see `workbench.export.onnx_file.quantise_onnx`).
        onnx_cosine, int8_cosine: their agreement with PyTorch (`workbench.export.onnx_file.onnx_cosine`).
    """

    name: str
    params_m: float | None
    gflops: float
    resolution: int
    cpu_latency_ms: float | None
    cpu_throughput: float | None
    gpu_latency_ms: float | None = None
    gpu_throughput: float | None = None
    onnx_latency_ms: float | None = None
    onnx_cosine: float | None = None
    int8_latency_ms: float | None = None
    int8_cosine: float | None = None

    @property
    def onnx_ratio(self) -> float | None:
        """onnxruntime fp32 latency over PyTorch eager CPU latency."""
        return _ratio(self.onnx_latency_ms, self.cpu_latency_ms)

    @property
    def int8_ratio(self) -> float | None:
        """onnxruntime int8 latency over PyTorch eager CPU latency."""
        return _ratio(self.int8_latency_ms, self.cpu_latency_ms)


def _ratio(latency: float | None, eager: float | None) -> float | None:
    return None if latency is None or not eager else latency / eager


COLUMNS = (  # header, attribute, format
    ("encoder", "name", "{}"),
    ("params (M)", "params_m", "{:.2f}"),
    ("GFLOPs", "gflops", "{:.3g}"),
    ("res", "resolution", "{}"),
    ("CPU ms", "cpu_latency_ms", "{:.1f}"),
    ("CPU img/s", "cpu_throughput", "{:.1f}"),
    ("GPU ms", "gpu_latency_ms", "{:.2f}"),
    ("GPU img/s", "gpu_throughput", "{:.0f}"),
    ("ONNX ms", "onnx_latency_ms", "{:.1f}"),
    ("ONNX x", "onnx_ratio", "{:.2f}"),  # of CPU ms
    ("ONNX cos", "onnx_cosine", "{:.5f}"),
    ("int8 ms", "int8_latency_ms", "{:.1f}"),
    ("int8 x", "int8_ratio", "{:.2f}"),
    ("int8 cos", "int8_cosine", "{:.5f}"),
)
HEADERS = [header for header, _, _ in COLUMNS]
NUMBER_WIDTH = 7  # the least width of a number column, so rows printed one by one stay aligned


def default_devices() -> list[str]:
    """CPU, plus CUDA when available."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def benchmark_encoder(
    name: str,
    module_or_fn: Callable[[Tensor], object],
    resolution: int,
    devices: Sequence[str] | None = None,
    throughput_batch: int = 8,
    warmup: int = 2,
    repeats: int = 5,
    threads: int | None = None,
    onnx_path: str | Path | None = None,
    int8_path: str | Path | None = None,
    seed: int = 0,
) -> EfficiencyRow:
    """Measure one encoder on random images at `resolution`.

    Latency is at batch 1, throughput at `throughput_batch`; GFLOPs are counted at batch 1 on the
    last device listed. A module is moved to each device and put in eval mode while measured, then
    restored; a plain callable must handle devices itself.

    Args:
        name: row label.
        module_or_fn: the encoder (an `nn.Module` also gets a parameter count).
        resolution: square input side.
        devices: among "cpu", "cuda" (None: `default_devices()`).
        throughput_batch: batch size of the throughput measurement.
        warmup, repeats: calls per measurement (see `measure_latency`).
        threads: torch CPU threads during CPU measurements (None: as set).
        onnx_path: an exported model of this encoder (`workbench.export.onnx_file.export_onnx`), also timed.
        int8_path: its int8 quantisation (`workbench.export.onnx_file.quantise_onnx`), also timed.
        seed: seed of the random images.
    """
    devices = list(default_devices() if devices is None else devices)
    unknown = [d for d in devices if d not in DEVICES]
    if unknown or not devices:
        raise ValueError(f"devices must be a non-empty list among {', '.join(DEVICES)}, got {devices}")
    if "cuda" in devices and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    if resolution < 1 or throughput_batch < 1:
        raise ValueError(
            f"resolution and throughput_batch must be positive, got {resolution} and {throughput_batch}"
        )
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(throughput_batch, 3, resolution, resolution, generator=generator)
    timings = {}
    for device in devices:
        with evaluating(module_or_fn, device):
            cpu_threads = threads if device == "cpu" else None
            single = measure_latency(module_or_fn, images[:1], warmup, repeats, device, cpu_threads)
            batched = measure_latency(module_or_fn, images, warmup, repeats, device, cpu_threads)
            timings[device] = (single["median_ms"], batched["throughput"])
    with evaluating(module_or_fn, devices[-1]):
        gflops = count_gflops(module_or_fn, images[:1].to(devices[-1]))
    onnx_ms = {}
    for key, path in (("onnx", onnx_path), ("int8", int8_path)):
        if path is not None:
            from workbench.export.onnx_file import onnx_latency  # onnxruntime: the `export` extra

            onnx_ms[key] = onnx_latency(path, images[:1], warmup, repeats, threads)["median_ms"]
    params = count_parameters(module_or_fn) / 1e6 if isinstance(module_or_fn, nn.Module) else None
    cpu, gpu = timings.get("cpu", (None, None)), timings.get("cuda", (None, None))
    return EfficiencyRow(
        name, params, gflops, resolution, *cpu, *gpu, onnx_ms.get("onnx"), int8_latency_ms=onnx_ms.get("int8")
    )


def row_cells(row: EfficiencyRow) -> list[str]:
    """A row's cells in `COLUMNS` order ('-' where not measured)."""
    return ["-" if (v := getattr(row, attr)) is None else fmt.format(v) for _, attr, fmt in COLUMNS]


def column_widths(rows: Sequence[EfficiencyRow] = (), name_width: int = 0) -> list[int]:
    """Widths that fit the headers, the rows' cells, names of `name_width` and numbers of `NUMBER_WIDTH`."""
    table = [HEADERS, *(row_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return [max(widths[0], name_width), *(max(w, NUMBER_WIDTH) for w in widths[1:])]


def render_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """One line of the table: the name left-aligned, numbers right-aligned."""
    first = cells[0].ljust(widths[0])
    return "  ".join([first, *(cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))])


def format_efficiency_table(rows: Sequence[EfficiencyRow]) -> str:
    """An aligned plain-text table: names left-aligned, numbers right-aligned, '-' where not measured."""
    widths = column_widths(rows)
    return "\n".join(render_line(cells, widths) for cells in [HEADERS, *(row_cells(r) for r in rows)])


def rows_to_markdown(rows: Sequence[EfficiencyRow]) -> str:
    """A GitHub-flavoured markdown table of the rows (numbers right-aligned)."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|---" + "|---:" * (len(HEADERS) - 1) + "|"]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)
