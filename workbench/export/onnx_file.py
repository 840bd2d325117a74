"""ONNX export of a distilled model (backbone, optionally with adaptors), checked against PyTorch.

Uses the `torch.export`-based exporter (`torch.onnx.export(..., dynamo=True)`, with onnxscript):
PyTorch's default since 2.9 and the one that stays; the TorchScript exporter is deprecated. It
handles timm ViTs with register tokens and RoPE (e.g. `vit_small_patch16_dinov3`). The batch axis is
dynamic; the resolution is fixed at export time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import torch
from torch import Tensor, nn

from distill.atomic import atomic_path
from distill.config import ModelConfig
from distill.models import DistilledModel, adaptor_key
from workbench.eval.encoders import Encoder, timm_model_of
from workbench.eval.latency import evaluating, measure_latency

INPUT_NAME = "images"
PRECISIONS = ("fp32", "int8")  # an ONNX file's: as exported, or its weights quantised (`quantise_onnx`)
MIN_COSINE = 0.99  # the least agreement with PyTorch a quantised file may have
SINGLE_FILE_LIMIT = 2**31  # bytes of weights a single-file ONNX model (protobuf) can hold


def onnx_output_names(model: DistilledModel, with_adaptors: bool = False) -> list[str]:
    """ "summary", "patches", then "<teacher>.summary", "<teacher>.patches" per adaptor.

    Teacher names are made identifier-safe: `adaptor_key`, then any other non-word character -> '_'.
    """
    names = ["summary", "patches"]
    if with_adaptors:
        for teacher in model.teacher_names:
            key = re.sub(r"\W", "_", adaptor_key(teacher))
            names += [f"{key}.summary", f"{key}.patches"]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names {model.teacher_names} collide once made ONNX-safe: {names}")
    return names


class OnnxWrapper(nn.Module):
    """A distilled model as a plain function of images: a tuple in `onnx_output_names` order.

    Args:
        model: the distilled model (it normalises its own input).
        with_adaptors: also return every adaptor's summary and patches.
    """

    def __init__(self, model: DistilledModel, with_adaptors: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_adaptors = with_adaptors

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """[B, 3, H, W] in [0, 1] -> (summary [B, D], patches [B, D, h, w], adaptor outputs...)."""
        features = self.model.features(images)
        outputs = [features.summary, features.patches]
        if self.with_adaptors:
            for teacher in self.model.teacher_names:
                adapted = self.model.adaptors[adaptor_key(teacher)](features)
                outputs += [adapted.summary, adapted.patches]
        return tuple(outputs)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's warnings during the block (onnxscript's optimiser logs harmless notes)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_target(path: Path) -> None:
    """Fail fast, before the slow export, on a path that cannot take the file."""
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX export path must end in .onnx, got '{path}'")
    if path.is_dir():
        raise ValueError(f"ONNX export path '{path}' is a folder")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"cannot write '{path}': folder '{path.parent}' is not writable")


def exportable_model(encoder: Encoder) -> DistilledModel:
    """A distilled encoder's model, or a timm encoder's model wrapped as one (without adaptor heads, with the
    same input normalisation); a one-line error for the offline experts, which are not timm models."""
    inner = getattr(encoder.backbone, "model", None)
    if isinstance(inner, DistilledModel):
        return inner
    model, _ = timm_model_of(encoder)
    name = model.pretrained_cfg.get("architecture", type(model).__name__)
    wrapped = DistilledModel(ModelConfig(name), {})
    wrapped.backbone.load_state_dict(model.state_dict())
    return wrapped.eval()


def export_onnx(
    model: DistilledModel,
    path: str | Path,
    resolution: int,
    with_adaptors: bool = False,
    opset: int | None = None,
) -> Path:
    """Export `model` to a single ONNX file, written atomically (a failure leaves no file).

    The graph takes "images" [batch, 3, resolution, resolution] in [0, 1] and returns the outputs
    named by `onnx_output_names`; batch is dynamic.

    Args:
        model: a distilled model (proxy or student); put in eval mode for the export, then restored.
        path: target file, ending in .onnx, in an existing writable folder.
        resolution: square input side, a multiple of the model's stride.
        with_adaptors: also export every teacher's adaptor heads.
        opset: ONNX opset (None: the exporter's default, 18 with torch 2.x).

    Returns:
        The path written.
    """
    path = Path(path)
    _check_target(path)
    if resolution < model.stride or resolution % model.stride:
        raise ValueError(f"resolution must be a positive multiple of stride {model.stride}, got {resolution}")
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if weights >= SINGLE_FILE_LIMIT:
        raise ValueError(f"weights take {weights / 2**30:.1f} GiB; a single-file ONNX model holds < 2 GiB")
    wrapper = OnnxWrapper(model, with_adaptors)
    # An example batch of 2: export specialises a size-1 dimension to a constant.
    images = torch.rand(2, 3, resolution, resolution, device=model.input_mean.device)
    with evaluating(wrapper), _quiet("onnxscript"):
        program = torch.onnx.export(
            wrapper,
            (images,),
            input_names=[INPUT_NAME],
            output_names=onnx_output_names(model, with_adaptors),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    with atomic_path(path) as tmp:
        program.save(tmp, external_data=False)
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session (`threads` intra-op threads; None: onnxruntime's default)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_and_pytorch(
    path: str | Path, model: DistilledModel, images: Tensor, with_adaptors: bool = False
) -> dict[str, tuple[Tensor, Tensor]]:
    """Each output of an ONNX file on `images` (onnxruntime, CPU) beside its PyTorch model's: one run of each.

    Returns:
        Output name (in `onnx_output_names` order) -> (onnxruntime's, PyTorch's), float32 on the CPU.

    Raises:
        ValueError: the file's outputs or their shapes differ from the model's.
    """
    session = onnx_session(path)
    names = onnx_output_names(model, with_adaptors)
    found = [o.name for o in session.get_outputs()]
    if found != names:
        raise ValueError(f"'{path}' has outputs {found}, expected {names} (with_adaptors={with_adaptors})")
    actual = session.run(names, {INPUT_NAME: images.detach().cpu().float().numpy()})
    with evaluating(model), torch.no_grad():
        expected = OnnxWrapper(model, with_adaptors)(images.to(model.input_mean.device))
    pairs = {}
    for name, got, ref in zip(names, actual, expected, strict=True):
        if tuple(got.shape) != tuple(ref.shape):
            raise ValueError(f"ONNX output '{name}' has shape {list(got.shape)}, PyTorch {list(ref.shape)}")
        pairs[name] = (torch.from_numpy(got), ref.float().cpu())
    return pairs


def max_differences(pairs: dict[str, tuple[Tensor, Tensor]], rtol: float = 1e-3) -> dict[str, float]:
    """Max abs difference per output of `onnx_and_pytorch`'s pairs, each within `rtol` of its output's scale
    (its max abs value in PyTorch), or a ValueError naming the first that is not (NaN included)."""
    differences = {}
    for name, (got, ref) in pairs.items():
        difference = (got - ref).abs().max().item()
        tolerance = rtol * max(ref.abs().max().item(), 1e-6)
        if not difference <= tolerance:  # also catches NaN
            raise ValueError(
                f"ONNX output '{name}' differs from PyTorch by {difference:.3g} (tolerance {tolerance:.3g})"
            )
        differences[name] = difference
    return differences


def least_cosine(pairs: dict[str, tuple[Tensor, Tensor]]) -> float:
    """The least cosine similarity, over outputs and images, between each image's flattened outputs."""
    cosines = [
        nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1)).min() for got, ref in pairs.values()
    ]
    return min(cosines).item()


def check_onnx(
    path: str | Path, model: DistilledModel, images: Tensor, with_adaptors: bool = False, rtol: float = 1e-3
) -> dict[str, float]:
    """Max abs difference per output between onnxruntime (CPU) and PyTorch on `images`.

    Args:
        path: an `export_onnx` file of `model`.
        model: the PyTorch model it was exported from.
        images: [B, 3, H, W] in [0, 1] at the export resolution (any B).
        with_adaptors: whether the file was exported with adaptors.
        rtol: tolerance relative to each output's scale (its max abs value in PyTorch).

    Returns:
        Output name -> max abs difference.

    Raises:
        ValueError: the file's outputs or shapes differ, or a difference exceeds the tolerance.
    """
    return max_differences(onnx_and_pytorch(path, model, images, with_adaptors), rtol)


def quantise_onnx(path: str | Path, out: str | Path) -> Path:
    """Write `path`'s model with int8 weights to `out`, atomically: onnxruntime's dynamic quantisation of
    matrix products (uint8 weights and activations, the activations' scales computed per call), the
    fastest of its CPU variants measured for a ViT-T at batch 1 (see `eupe bench encoders --onnx`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    _check_target(out)
    with atomic_path(out) as tmp, _quiet("root"):  # it logs advice to pre-process the graph first
        quantize_dynamic(Path(path), tmp, weight_type=QuantType.QUInt8)
    return out


def export_checked_onnx(
    model: DistilledModel, out: Path, resolution: int, images: Tensor, precision: str = "fp32",
    with_adaptors: bool = False,
) -> tuple[Path, float, dict[str, float]]:  # fmt: skip
    """Export `model` to `out` at `precision` (see `PRECISIONS`) and check it against PyTorch on `images`.

    Returns:
        The path, the agreement (`least_cosine`) and, for fp32, the max abs difference per output (checked
        by `max_differences`); an int8 file is written only if its agreement reaches `MIN_COSINE`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "fp32":
        path = export_onnx(model, out, resolution, with_adaptors)
        pairs = onnx_and_pytorch(path, model, images, with_adaptors)
        return path, least_cosine(pairs), max_differences(pairs)
    _check_target(out)
    with tempfile.TemporaryDirectory() as scratch:
        quantised = onnx_variants(model, Path(scratch), resolution, with_adaptors)["int8"]
        cosine = onnx_cosine(quantised, model, images, with_adaptors)
        if cosine < MIN_COSINE:
            raise ValueError(f"the int8 model agrees with PyTorch only to cosine {cosine:.4f} "
                             f"(< {MIN_COSINE}): export fp32 instead")  # fmt: skip
        with atomic_path(out) as tmp:
            shutil.copyfile(quantised, tmp)
    return out, cosine, {}


def onnx_variants(
    model: DistilledModel, folder: Path, resolution: int, with_adaptors: bool = False
) -> dict[str, Path]:
    """`model` exported into `folder` once per precision: {"fp32": path, "int8": path} (unchecked)."""
    fp32 = export_onnx(model, folder / "fp32.onnx", resolution, with_adaptors)
    return {"fp32": fp32, "int8": quantise_onnx(fp32, folder / "int8.onnx")}


def eager_and_onnx_latency(
    model: DistilledModel, path: str | Path, resolution: int, threads: int | None = None, repeats: int = 10
) -> tuple[float, float]:
    """Median ms at batch 1 of PyTorch eager and of the ONNX file of `model`, measured one after the other
    under the same `threads`."""
    images = torch.rand(1, 3, resolution, resolution)
    with evaluating(model):
        eager = measure_latency(model.features, images, 2, repeats, threads=threads)["median_ms"]
    return eager, onnx_latency(path, images, 2, repeats, threads)["median_ms"]


def onnx_cosine(
    path: str | Path, model: DistilledModel, images: Tensor, with_adaptors: bool = False
) -> float:
    """The agreement of an ONNX file with its PyTorch model on `images` (`least_cosine`)."""
    return least_cosine(onnx_and_pytorch(path, model, images, with_adaptors))


def onnx_latency(
    path: str | Path, images: Tensor, warmup: int = 2, repeats: int = 5, threads: int | None = None
) -> dict[str, float]:
    """onnxruntime CPU wall time per batch of `images`, as `workbench.eval.latency.measure_latency`.

    Returns:
        {"median_ms", "p90_ms", "throughput"} (throughput in images/s).
    """
    session = onnx_session(path, threads)
    feed = {INPUT_NAME: images.detach().cpu().float().numpy()}
    return measure_latency(lambda _: session.run(None, feed), images, warmup, repeats)
