"""Export, then check: what `eupe export` does, callable from a notebook (`export_and_check`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from distill.data.scenes import SceneGenerator
from workbench.eval.encoders import Encoder, build_encoder
from workbench.export import FORMATS
from workbench.export.input_check import input_dependence
from workbench.export.timm_folder import check_timm_folder, export_timm

CHECK_SCENES = 3  # generated scenes every export is checked on


@dataclass
class ExportResult:
    """What `export_and_check` wrote and measured.

    Attributes:
        path: the ONNX file or timm folder written.
        format: one of `FORMATS`.
        outputs: the ONNX file's output names, or the timm folder's file names.
        differences: max |difference| from PyTorch on the check scenes: per output of an fp32 ONNX file,
            {"features": worst of summary and patches} for a timm folder, empty for an int8 file.
        input_change: relative change of the patch outputs between a blank and a random image.
        precision: an ONNX file's ("fp32" or "int8"); None for a timm folder.
        cosine: an ONNX file's least cosine agreement with PyTorch eager; None for a timm folder.
        latency_ms: an ONNX file's batch-1 median ms, {"eager": PyTorch, "onnx": onnxruntime}.
        threads: the CPU threads the latency was measured with.
    """

    path: Path
    format: str
    outputs: list[str]
    differences: dict[str, float]
    input_change: float
    precision: str | None = None
    cosine: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    threads: int | None = None

    def lines(self) -> list[str]:
        """The report `eupe export` prints."""
        lines = self._onnx_lines() if self.format == "onnx" else self._timm_lines()
        change = f"output change between a blank and a random image: {self.input_change:.3f} (relative)"
        return [*lines, change]

    def _onnx_lines(self) -> list[str]:
        size = self.path.stat().st_size / 2**20
        lines = [f"wrote {self.path} ({size:.1f} MiB, {self.precision}, outputs: {', '.join(self.outputs)})"]
        if self.differences:
            worst = max(self.differences, key=self.differences.get)
            lines.append(f"onnxruntime vs PyTorch on {CHECK_SCENES} scenes: max |difference| "
                         f"{self.differences[worst]:.2e} ({worst})")  # fmt: skip
        eager, onnx = self.latency_ms["eager"], self.latency_ms["onnx"]
        return [
            *lines,
            f"onnxruntime {self.precision} vs PyTorch eager on {CHECK_SCENES} scenes: least cosine "
            f"{self.cosine:.5f}",
            f"batch 1, {self.threads} threads: PyTorch eager {eager:.1f} ms, onnxruntime {self.precision} "
            f"{onnx:.1f} ms ({onnx / eager:.2f}x)",
        ]

    def _timm_lines(self) -> list[str]:
        return [
            f"wrote {self.path}/ ({', '.join(self.outputs)})",
            f"timm.create_model('local-dir:{self.path}') vs the encoder on {CHECK_SCENES} scenes: "
            f"max |difference| {self.differences['features']:.2e}",
        ]


def export_format(out: Path, fmt: str | None = None) -> str:
    """The format asked for, or by default onnx for an `out` ending in .onnx, else timm."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    return fmt or ("onnx" if out.suffix == ".onnx" else "timm")


def export_and_check(
    spec: str, out: str | Path, fmt: str | None = None, resolution: int = 224, int8: bool = False,
    adaptors: bool = False, scoreboard: Path | None = None, threads: int | None = None,
    weights: str = "pretrained", checkpoint: Path | None = None,
) -> ExportResult:  # fmt: skip
    """Export the encoder `spec` names and check the result: against PyTorch on generated scenes, and that
    its output depends on its input.

    Args:
        spec: a run stage or checkpoint folder, `timm:<model>` or a timm alias.
        out: a .onnx file or a timm model folder.
        fmt: "onnx" or "timm" (default: `export_format`).
        resolution: the ONNX input side; the side of the checks and of the model card's GFLOPs.
        int8: ONNX: int8 weights (refused below cosine `MIN_COSINE` with PyTorch), not fp32.
        adaptors: ONNX: also output every adaptor head.
        scoreboard: the scoreboard.json the model card quotes (default: the run's eval/scoreboard.json).
        threads: ONNX: CPU threads of the latency measured (default: torch's).
        weights, checkpoint: how a timm:<model> encoder is loaded (see `build_encoder`).
    """
    out = Path(out)
    fmt = export_format(out, fmt)
    encoder = build_encoder(spec, resolution, weights=weights, checkpoint=checkpoint)
    images = SceneGenerator(resolution, seed=1).batch(0, CHECK_SCENES).images
    if fmt == "onnx":
        return checked_onnx(encoder, out, resolution, images, int8, adaptors, threads)
    return checked_timm(spec, encoder, out, resolution, images, scoreboard)


def checked_onnx(
    encoder: Encoder, out: Path, resolution: int, images: Tensor, int8: bool, adaptors: bool,
    threads: int | None,
) -> ExportResult:  # fmt: skip
    """`export_and_check` to an ONNX file (onnxruntime: the `export` extra)."""
    from workbench.export.onnx_file import (
        INPUT_NAME,
        eager_and_onnx_latency,
        export_checked_onnx,
        exportable_model,
        onnx_session,
    )

    model = exportable_model(encoder)
    precision = "int8" if int8 else "fp32"
    out.parent.mkdir(parents=True, exist_ok=True)
    path, cosine, differences = export_checked_onnx(model, out, resolution, images, precision, adaptors)
    session = onnx_session(path)

    def onnx_patches(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(["patches"], {INPUT_NAME: x.numpy()})[0])

    change = input_dependence(onnx_patches, resolution)
    eager, onnx = eager_and_onnx_latency(model, path, resolution, threads)
    outputs = [o.name for o in session.get_outputs()]
    return ExportResult(path, "onnx", outputs, differences, change, precision, cosine,
                        {"eager": eager, "onnx": onnx}, threads or torch.get_num_threads())  # fmt: skip


def checked_timm(
    spec: str, encoder: Encoder, out: Path, resolution: int, images: Tensor, scoreboard: Path | None
) -> ExportResult:
    """`export_and_check` to a timm model folder, with its heads and model card."""
    path = export_timm(spec, encoder, out, resolution, scoreboard)
    difference = check_timm_folder(path, encoder, images)
    exported = build_encoder(str(path), resolution)
    change = input_dependence(lambda x: exported(x).patches, resolution)
    files = sorted(p.name for p in path.iterdir())
    return ExportResult(path, "timm", files, {"features": difference}, change)
