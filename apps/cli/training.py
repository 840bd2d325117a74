"""`eupe distill`, `eupe pipeline` and `eupe cache build`: training runs and their teacher-feature stores."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from apps.cli.command import Command
from apps.cli.options import check_out


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options `eupe distill` and `eupe pipeline` share: config, run folder, the dry run's."""
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="run folder (resumed if it exists)")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the plan (parameters, FLOPs, memory per GPU, data check) without training",
    )  # fmt: skip
    parser.add_argument("--world-size", type=int, default=1, help="GPUs the --dry-run plans for")
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="per GPU, for --dry-run")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The trailing `key.sub=value` config overrides."""
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe distill`: one stage."""
    from distill.config import STAGE_NAMES

    add_run_options(parser)
    parser.add_argument("--stage", required=True, choices=STAGE_NAMES)
    add_overrides(parser)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe pipeline`: the stages in order."""
    from distill.config import STAGE_NAMES

    add_run_options(parser)
    parser.add_argument("--stages", nargs="+", choices=STAGE_NAMES, help="default: every configured stage")
    add_overrides(parser)


def distill_run(args: argparse.Namespace) -> None:
    """Run one stage (`eupe distill`) or several in order (`eupe pipeline`) into a run folder."""
    from distill.config import load_config
    from distill.pipeline import configured_stages, run_stages

    config = load_config(args.config, args.overrides)
    stages = [args.stage] if getattr(args, "stage", None) else (args.stages or configured_stages(config))
    if args.dry_run:
        from distill.plan import format_plan, plan_run

        plan = plan_run(config, stages, args.world_size, args.gpu_memory_gib)
        print(format_plan(plan), flush=True)
        if plan.problems:  # a plan that cannot run is a failure: scripts and CI see it in the exit status
            raise ValueError(f"the dry run found {len(plan.problems)} problem(s): {'; '.join(plan.problems)}")
        return
    if args.out is None:
        raise ValueError("--out is required (the run folder), except with --dry-run")
    results = run_stages(config, args.out, stages)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the first process reports
        return
    for stage, result in results.items():
        loss = f"loss {result.metrics['loss']:.4f}" if "loss" in result.metrics else "no loss logged"
        speed = f"{result.images_per_second:.1f} img/s" if result.trained_steps else "already trained"
        print(f"{stage:9s} {result.steps} steps  {loss}  {speed}  -> {result.folder}")


def add_cache_build_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe cache build`: the corpus, the store folder, its views and its budget."""
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="store folder (resumed if it exists)")
    parser.add_argument(
        "--side", type=int, required=True, help="the centred views' side (the teachers' side)"
    )
    parser.add_argument(
        "--grid", type=int, required=True, help="patch grids are average-pooled to grid x grid"
    )
    parser.add_argument(
        "--budget-gb", type=float, required=True, help="refuse a larger projected store (GiB)"
    )
    parser.add_argument("--shard-size", type=int, default=1024, help="samples per shard folder")
    parser.add_argument("--batch", type=int, default=64, help="teacher batch size")
    add_overrides(parser)


def cache_build_run(args: argparse.Namespace) -> None:
    """Write the teacher-feature store of a config's streamed corpus (resumed where it stopped)."""
    from distill.targets.store_cli import cache_build_main

    check_out(args.out, folder=True)
    cache_build_main(args.config, args.out, args.side, args.grid, args.budget_gb, args.overrides,
                     args.shard_size, args.batch)  # fmt: skip


COMMANDS = (
    Command("distill", "run one distillation stage", distill_run, add_distill_arguments),
    Command("pipeline", "run the stages in order", distill_run, add_pipeline_arguments),
)
CACHE_COMMANDS = (
    Command(
        "build",
        "every teacher's features of every sample of a config's corpus, by sample id (float16)",
        cache_build_run,
        add_cache_build_arguments,
    ),
)
