"""`eupe bench encoders|distill|data|augment|live|allocator`: the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.cli.command import Command
from apps.cli.options import add_weights_options, encoder_specs, timm_weights

SPEED_NOTE = ": the speed does not depend on them"  # the benchmarks' default weights are random


def add_encoder_choice(parser: argparse.ArgumentParser) -> None:
    """The encoders a benchmark measures: specs, and every stage of some runs."""
    from distill.teachers import EXPERTS

    parser.add_argument("--encoders", nargs="*", default=list(EXPERTS), help="specs (default: the experts)")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="add every stage of these runs")
    parser.add_argument("--resolution", type=int, default=224)


def add_encoders_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe bench encoders`: what is measured, how often, and the ONNX variants."""
    add_encoder_choice(parser)
    parser.add_argument("--batch", type=int, default=8, help="throughput batch size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="add onnxruntime latency, fp32 and int8, for timm-based encoders "
        "(distilled or timm:<model>), with the ratio to PyTorch eager and the cosine agreement with it",
    )
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    add_weights_options(parser, "random", note=SPEED_NOTE)


def bench_encoders_run(args: argparse.Namespace) -> None:
    """Print params, GFLOPs, CPU (and GPU) latency and throughput of each encoder, one row as soon as it is
    measured; with `--onnx`, beside PyTorch eager, onnxruntime fp32 and int8 with their agreement."""
    import tempfile

    from distill.data.scenes import SceneGenerator
    from distill.teachers import EXPERTS
    from workbench.bench.encoders import (
        HEADERS,
        benchmark_encoder,
        column_widths,
        render_line,
        row_cells,
        rows_to_markdown,
    )
    from workbench.eval.encoders import build_encoder

    specs = encoder_specs(args)
    widths = column_widths(name_width=max(map(len, specs), default=0))
    print(render_line(HEADERS, widths), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in specs:
            encoder = build_encoder(spec, None if spec in EXPERTS else args.resolution, **timm_weights(args))
            onnx = {}
            if args.onnx and encoder.timm_model is not None:
                from workbench.export.onnx_file import exportable_model, onnx_cosine, onnx_variants

                model = exportable_model(encoder)
                onnx = onnx_variants(model, Path(scratch), args.resolution)
            row = benchmark_encoder(
                encoder.name, encoder, args.resolution, repeats=args.repeats, threads=args.threads,
                throughput_batch=args.batch, onnx_path=onnx.get("fp32"), int8_path=onnx.get("int8"),
            )  # fmt: skip
            if onnx:
                images = SceneGenerator(args.resolution, seed=1).batch(0, 3).images
                row.onnx_cosine = onnx_cosine(onnx["fp32"], model, images)
                row.int8_cosine = onnx_cosine(onnx["int8"], model, images)
            row.params_m = encoder.num_parameters() / 1e6  # the backbone, without adaptor heads
            row.resolution = encoder.resolution or args.resolution  # experts may run at their own side
            rows.append(row)
            print(render_line(row_cells(row), widths), flush=True)  # a later failure loses no row
    if args.markdown:
        print()
        print(rows_to_markdown(rows))


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe bench distill`: the config, its stages and the timed steps."""
    from distill.config import STAGE_NAMES

    parser.add_argument("--config", type=Path, default=Path("configs/toy.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per stage")
    parser.add_argument("--stages", nargs="+", choices=STAGE_NAMES)
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")


def bench_distill_run(args: argparse.Namespace) -> None:
    """Print each stage's images/s with and without the feature cache, peak memory, FLOPs and MFU."""
    from distill.config import load_config
    from workbench.bench.training import bench_distill, format_bench

    config = load_config(args.config, args.overrides)
    print(format_bench(bench_distill(config, args.steps, args.stages)))


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe bench data`: the corpora, workers, views and timed steps."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="generated corpus sizes")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--root", type=Path, help="keep the generated corpora here (reused when run again)")


def bench_data_run(args: argparse.Namespace) -> None:
    """Print the streaming loader's images/s by source and workers, and its peak memory by corpus size."""
    from workbench.bench.data import bench_data, format_data_bench

    rows = bench_data(tuple(args.sizes), tuple(args.workers), args.side, args.batch, args.steps, args.root)
    print(format_data_bench(rows))


def add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe bench augment`: how many views, of which side."""
    parser.add_argument("--count", type=int, default=32, help="views")
    parser.add_argument("--resolution", type=int, default=128, help="view side in pixels")


def bench_augment_run(args: argparse.Namespace) -> None:
    """Print how closely flipped and cropped cached expert grids match the experts on such views."""
    from workbench.bench.augment import bench_augment, format_augment_bench

    print(format_augment_bench(bench_augment(count=args.count, resolution=args.resolution)))


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe bench live`: the encoders, frames, threads and load."""
    from apps.launch import LIVE_THREADS

    add_encoder_choice(parser)
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    parser.add_argument("--repeats", type=int, default=20, help="timed frames")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[LIVE_THREADS],
        help=f"torch CPU threads, one measurement each (default: {LIVE_THREADS}, the live demo's)",
    )  # fmt: skip
    parser.add_argument(
        "--load", action="store_true",
        help="measure each setting twice: alone, then beside a process that keeps one core busy",
    )  # fmt: skip
    add_weights_options(parser, "random", note=SPEED_NOTE)


def bench_live_run(args: argparse.Namespace) -> None:
    """Print the frames per second of live PCA (forward pass, projection, colouring) of each encoder, per
    thread count, alone and (`--load`) beside a process that keeps one core busy."""
    from apps.launch import LIVE_THREADS
    from workbench.bench.live import bench_live, format_live_bench
    from workbench.eval.encoders import build_encoder

    encoders = {}
    for spec in encoder_specs(args):
        encoder = build_encoder(spec, args.resolution, **timm_weights(args))
        encoders[encoder.name] = encoder
    rows = [
        row
        for threads in args.threads
        for loaded in ((False, True) if args.load else (False,))
        for row in bench_live(encoders, args.resolution, None, args.warmup, args.repeats, threads, loaded)
    ]
    print(format_live_bench(rows, args.resolution))
    print(f"the live demo (eupe app) runs with {LIVE_THREADS} torch thread(s) unless told --threads")


def add_allocator_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe bench allocator`: the experts, views and timed passes."""
    from distill.teachers import EXPERTS

    parser.add_argument("--experts", nargs="+", choices=list(EXPERTS), default=list(EXPERTS))
    parser.add_argument("--count", type=int, default=64, help="views per pass (a cache chunk)")
    parser.add_argument("--side", type=int, default=128, help="view side in pixels (the toy run's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per process")


def bench_allocator_run(args: argparse.Namespace) -> None:
    """Print each expert's forward-pass wall, user and system time and page faults with glibc's allocator
    as configured and as the engine tunes it (`distill.allocator`), one fresh process each."""
    from workbench.bench.allocator import bench_allocator, format_allocator_bench

    rows = bench_allocator(args.experts, args.count, args.side, args.repeats)
    print(format_allocator_bench(rows, args.count, args.side))


COMMANDS = (
    Command(
        "encoders",
        "params, GFLOPs, latency and throughput of encoders",
        bench_encoders_run,
        add_encoders_arguments,
    ),
    Command(
        "distill",
        "images/s of each stage with and without the feature cache",
        bench_distill_run,
        add_distill_arguments,
    ),
    Command(
        "data",
        "streaming loader: images/s by source and workers, memory by corpus",
        bench_data_run,
        add_data_arguments,
    ),
    Command(
        "augment",
        "cached expert targets under flips and crops vs live experts",
        bench_augment_run,
        add_augment_arguments,
    ),
    Command(
        "live",
        "frames per second of the live demo's PCA maps, per encoder",
        bench_live_run,
        add_live_arguments,
    ),
    Command(
        "allocator",
        "experts' forward passes with glibc's allocator as configured and as the engine tunes it",
        bench_allocator_run,
        add_allocator_arguments,
    ),
)
