"""Options and checks several `eupe` subcommands share: `--out`, timm weights, evaluation settings."""

from __future__ import annotations

import argparse
from pathlib import Path


def check_out(path: Path, folder: bool) -> None:
    """Refuse an `--out` of the wrong kind (a file where a folder goes, or the reverse, or a file on its
    way) before any work is done."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    existing = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at worst
    if existing == path and path.is_dir() != folder:
        raise ValueError(f"--out {path} is a {other}, not a {kind}")
    if existing != path and not existing.is_dir():
        raise ValueError(f"--out {path}: {existing} is a file, not a folder")


def add_weights_options(parser: argparse.ArgumentParser, default: str, note: str = "") -> None:
    """`--weights` and `--weights-file`: how the command's timm:<model> encoders are loaded."""
    from distill.config import TEACHER_WEIGHTS  # the config's own choices for a teacher's weights

    parser.add_argument(
        "--weights", choices=TEACHER_WEIGHTS, default=default,
        help=f"weights of timm:<model> encoders (default: {default}{note}): pretrained from the hub or its "
        "local cache (offline and not cached: an error within seconds), random, or file (--weights-file)",
    )  # fmt: skip
    parser.add_argument("--weights-file", type=Path, help="the local weights file of --weights file")


def timm_weights(args: argparse.Namespace) -> dict[str, object]:
    """The weights arguments of `build_encoder`/`build_teacher` for timm specs, from `add_weights_options`."""
    if (args.weights == "file") != (args.weights_file is not None):
        raise ValueError("--weights file and --weights-file PATH go together")
    return {"weights": args.weights, "checkpoint": args.weights_file}


def add_eval_settings(parser: argparse.ArgumentParser) -> None:
    """One option per `EvalSettings` field (default: the dataclass's)."""
    from dataclasses import fields

    from workbench.eval.settings import EvalSettings

    for f in fields(EvalSettings):
        default = "the first run's student resolution, else 128" if f.name == "resolution" else f.default
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), help=f"default: {default}"
        )


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """The experts scored, where features are extracted, and the `EvalSettings` options."""
    from distill.teachers import EXPERTS

    parser.add_argument("--experts", nargs="*", default=list(EXPERTS), choices=EXPERTS)
    parser.add_argument("--device", default="auto", help="where features are extracted: auto, cpu, cuda")
    add_eval_settings(parser)


def eval_settings(args: argparse.Namespace, runs: list[Path] | None = None) -> object:
    """`EvalSettings` from the command line (resolution default: the first run's student resolution)."""
    from dataclasses import fields

    from workbench.eval.scoreboard import run_resolution
    from workbench.eval.settings import EvalSettings

    values = {
        f.name: getattr(args, f.name) for f in fields(EvalSettings) if getattr(args, f.name) is not None
    }
    if "resolution" not in values and runs:
        values["resolution"] = run_resolution(runs[0])
    return EvalSettings(**values)


def encoder_specs(args: argparse.Namespace) -> list[str]:
    """The encoders named on the command line plus every stage checkpoint of the named runs."""
    from workbench.eval.scoreboard import run_encoder_specs

    return list(args.encoders) + [spec for spec, _ in run_encoder_specs(args.runs or [])]
