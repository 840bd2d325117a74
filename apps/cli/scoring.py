"""`eupe eval`, `eupe compare` and `eupe probe`: scoring encoders."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from apps.cli.command import Command
from apps.cli.options import (
    add_eval_settings,
    add_scoring_options,
    add_weights_options,
    check_out,
    eval_settings,
    timm_weights,
)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe eval`: the runs, the scoreboard folder, more encoders and the scoring options."""
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders")
    parser.add_argument("--out", type=Path, required=True, help="scoreboard folder (resumed if it exists)")
    parser.add_argument(
        "--extra", nargs="*", default=[], help="more encoders: timm:<model>, aliases, checkpoint folders"
    )
    add_scoring_options(parser)


def eval_run(args: argparse.Namespace) -> None:
    """Score every encoder of the runs (with the experts and a random floor) and write the scoreboard."""
    from distill.device import check_device, pick_device
    from workbench.eval.report import markdown_table, write_scoreboard
    from workbench.eval.scoreboard import evaluate

    check_out(args.out, folder=True)
    check_device(args.device, "--device")
    settings = eval_settings(args, args.runs)
    device = pick_device(args.device)
    rows = evaluate(args.runs, args.out, settings, args.experts, args.extra, device=device)
    failed = [f"{row['name']} ({row['failed']})" for row in rows if "failed" in row]
    if len(failed) < len(rows):  # a scoreboard of the others
        paths = write_scoreboard(rows, settings, args.out, "eupe " + shlex.join(args.argv))
        print(markdown_table(rows))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if failed:
        raise ValueError(f"{len(failed)} encoder(s) failed, the others are scored: {'; '.join(failed)}")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe compare`: the config, the seeds, where the runs go and the scoring options."""
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, as data.seed and train.seed")
    parser.add_argument(
        "--out", type=Path, default=Path("runs"), help="folder of the runs and of <name>-compare.{md,json}"
    )
    parser.add_argument(
        "--name", help="runs are <name>-seed<k>, each scored into its eval/ (default: the config's stem)"
    )
    add_scoring_options(parser)
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")


def compare_run(args: argparse.Namespace) -> None:
    """Run and score the pipeline once per seed, then print and write mean ± std per encoder and probe."""
    from distill.device import pick_device
    from workbench.eval.seeds import compare_seeds, train_seeds

    check_out(args.out, folder=True)
    name = args.name or args.config.stem
    runs = train_seeds(args.config, args.overrides, args.seeds, args.out, name)
    command = "eupe " + shlex.join(args.argv)
    markdown, paths = compare_seeds(
        runs, eval_settings(args, runs), args.out, name, command, args.experts, pick_device(args.device)
    )
    print(markdown)
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe probe`: which probe, on which encoders, under which settings."""
    from workbench.eval.probes import registered_probes

    parser.add_argument("probe", choices=registered_probes())
    parser.add_argument(
        "--encoders", nargs="+", required=True, help="experts, timm:<model>, run stage or checkpoint folders"
    )
    add_weights_options(parser, "pretrained")
    add_eval_settings(parser)


def probe_run(args: argparse.Namespace) -> None:
    """Run one probe on each named encoder and print its scores."""
    from distill.teachers import EXPERTS
    from workbench.eval.encoders import build_encoder
    from workbench.eval.scoreboard import ExpertReferences, eval_data, score_encoder

    settings = eval_settings(args)
    data = eval_data(settings)
    references = ExpertReferences(list(EXPERTS), data.photos)
    for spec in args.encoders:
        encoder = build_encoder(spec, None if spec in EXPERTS else settings.resolution, **timm_weights(args))
        scores = score_encoder(encoder, data, settings, references, [args.probe])
        text = "  ".join(f"{k}={v:.4f}" for k, v in scores.items()) or "(does not apply)"
        print(f"{encoder.name:24s} {args.probe:12s} {text}")


COMMANDS = (
    Command(
        "eval",
        "scoreboard: every probe on the experts, each run's encoders and a random floor",
        eval_run,
        add_eval_arguments,
    ),
    Command(
        "compare",
        "the pipeline and scoreboard once per seed: mean ± std per encoder and probe",
        compare_run,
        add_compare_arguments,
    ),
    Command("probe", "run one probe on some encoders", probe_run, add_probe_arguments),
)
