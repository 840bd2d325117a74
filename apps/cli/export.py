"""`eupe export`: an encoder as a timm model folder or an ONNX file, checked (`export_and_check`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.cli.command import Command
from apps.cli.options import add_weights_options, check_out, timm_weights


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe export`: the encoder, where and how it is exported, and the model card's scoreboard."""
    parser.add_argument("encoder", help="a run stage or checkpoint folder, timm:<model> or a timm alias")
    parser.add_argument("--out", type=Path, required=True, help="a folder (timm) or a .onnx file")
    from workbench.export import FORMATS

    parser.add_argument("--format", choices=FORMATS, help="default: onnx for .onnx --out, else timm")
    parser.add_argument("--resolution", type=int, default=224, help="ONNX input side; GFLOPs and checks")
    parser.add_argument("--adaptors", action="store_true", help="ONNX: also output every adaptor head")
    parser.add_argument(
        "--int8", action="store_true", help="ONNX: int8 weights (onnxruntime's dynamic quantisation, faster "
        "on CPUs; its agreement with PyTorch is printed and must reach cosine 0.99), not fp32",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, help="ONNX: CPU threads of the latency printed (default: torch's)"
    )
    add_weights_options(parser, "pretrained")
    parser.add_argument("--scoreboard", type=Path, help="the scoreboard.json the model card quotes "
                        "(default: the run's eval/scoreboard.json)")  # fmt: skip


def export_run(args: argparse.Namespace) -> None:
    """Export any timm-based encoder as a timm model folder or an ONNX file, and check the result: against
    PyTorch on generated scenes, and that its output depends on its input."""
    from workbench.export.checked import export_and_check, export_format

    check_out(args.out, folder=export_format(args.out, args.format) == "timm")
    result = export_and_check(
        args.encoder, args.out, args.format, args.resolution, args.int8, args.adaptors, args.scoreboard,
        args.threads, **timm_weights(args),
    )  # fmt: skip
    print("\n".join(result.lines()))


COMMAND = Command(
    "export",
    "export an encoder as a timm model folder (heads, model card) or ONNX, checked",
    export_run,
    add_export_arguments,
)
