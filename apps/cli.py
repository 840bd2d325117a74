"""The `eupe` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one `eupe: error: ...` line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"eupe: error: {message} (see {self.prog} --help)\n")


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


def teachers_list(args: argparse.Namespace) -> None:
    """Print each expert: what it is, feature dims, parameters, source package and licence."""
    from distill.teachers import build_teacher
    from distill.teachers.registry import expert_spec, registered_teachers

    print(f"{'expert':9s} {'params':>7s} {'summary':>7s} {'patches':>12s}  model / package / licence")
    for name in registered_teachers():
        teacher = build_teacher(name)
        params = sum(p.numel() for p in teacher.parameters()) / 1e6
        patches = f"{teacher.patch_dim}@/{teacher.patch_stride}"
        facts = " / ".join(expert_spec(name).facts().values())
        print(f"{name:9s} {params:6.2f}M {teacher.summary_dim:7d} {patches:>12s}  {facts}")


def teachers_pack(args: argparse.Namespace) -> None:
    """Convert every expert's weights into the compact cache and print where they are."""
    from distill.teachers import EXPERTS, build_teacher
    from distill.teachers.weights import converted_path

    for name in EXPERTS:
        build_teacher(name)
        path = converted_path(name)
        print(f"{name:9s} {path.stat().st_size / 2**20:6.1f} MiB  {path}")


def teachers_show(args: argparse.Namespace) -> None:
    """PCA maps of the experts' patch features (and students' estimates of them) on photos and a scene."""
    from distill.data.images import square_view
    from distill.data.photos import load_photo
    from distill.data.scenes import SceneGenerator
    from distill.run_dir import trained_resolution
    from distill.teachers import build_teacher, is_timm_spec
    from workbench.eval.encoders import distilled_encoder
    from workbench.viz.pca_figures import pca_grid_figure

    check_out(args.out, folder=False)
    side = args.resolution or trained_resolution(args.students, 224)
    weights = timm_weights(args)
    images = {name: square_view(load_photo(name), side) for name in args.photos}
    images["generated scene"] = SceneGenerator(side, seed=args.seed).batch(0, 1).images[0]
    encoders = {
        name: build_teacher(name, resolution=side, **(weights if is_timm_spec(name) else {}))
        for name in args.teachers
    }
    students = {}
    for folder in args.students:
        student = distilled_encoder(folder, side)
        students[student.name] = student
    if args.floor:
        from workbench.eval.encoders import floor_spec
        from workbench.explore.floor import floor_encoder

        if not args.students:
            raise ValueError("--floor draws the random floor of the last --students stage: name one")
        floor = floor_encoder(floor_spec(args.students[-1]), side)
        students[floor.name] = floor
    print(f"wrote {pca_grid_figure(encoders, images, args.out, students)}")


def teachers_check(args: argparse.Namespace) -> None:
    """Run each expert's behaviour check; exit 1 if any fails."""
    from distill.teachers import build_teacher
    from distill.teachers.checks import run_check

    results = [run_check(name, build_teacher(name)) for name in args.experts]
    for result in results:
        print(result.line())
    if not all(r.passed for r in results):
        sys.exit(1)


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


def bench_distill_run(args: argparse.Namespace) -> None:
    """Print each stage's images/s with and without the feature cache, peak memory, FLOPs and MFU."""
    from distill.bench import bench_distill, format_bench
    from distill.config import load_config

    config = load_config(args.config, args.overrides)
    print(format_bench(bench_distill(config, args.steps, args.stages)))


def cache_build_run(args: argparse.Namespace) -> None:
    """Write the teacher-feature store of a config's streamed corpus (resumed where it stopped)."""
    from distill.targets.store_cli import cache_build_main

    check_out(args.out, folder=True)
    cache_build_main(args.config, args.out, args.side, args.grid, args.budget_gb, args.overrides,
                     args.shard_size, args.batch)  # fmt: skip


def bench_data_run(args: argparse.Namespace) -> None:
    """Print the streaming loader's images/s by source and workers, and its peak memory by corpus size."""
    from distill.data_bench import bench_data, format_data_bench

    rows = bench_data(tuple(args.sizes), tuple(args.workers), args.side, args.batch, args.steps, args.root)
    print(format_data_bench(rows))


def bench_augment_run(args: argparse.Namespace) -> None:
    """Print how closely flipped and cropped cached expert grids match the experts on such views."""
    from distill.augment_bench import bench_augment, format_augment_bench

    print(format_augment_bench(bench_augment(count=args.count, resolution=args.resolution)))


def encoder_specs(args: argparse.Namespace) -> list[str]:
    """The encoders named on the command line plus every stage checkpoint of the named runs."""
    from workbench.eval.scoreboard import run_encoder_specs

    return list(args.encoders) + [spec for spec, _ in run_encoder_specs(args.runs or [])]


def bench_encoders_run(args: argparse.Namespace) -> None:
    """Print params, GFLOPs, CPU (and GPU) latency and throughput of each encoder, one row as soon as it is
    measured; with `--onnx`, beside PyTorch eager, onnxruntime fp32 and int8 with their agreement."""
    import tempfile

    from distill.data.scenes import SceneGenerator
    from distill.teachers import EXPERTS
    from workbench.eval.efficiency import (
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
                from workbench.eval.export import exportable_model, onnx_cosine, onnx_variants

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


def bench_live_run(args: argparse.Namespace) -> None:
    """Print the frames per second of live PCA (forward pass, projection, colouring) of each encoder, per
    thread count, alone and (`--load`) beside a process that keeps one core busy."""
    from apps.launch import LIVE_THREADS
    from workbench.eval.encoders import build_encoder
    from workbench.explore.live import bench_live, format_live_bench

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


def export_run(args: argparse.Namespace) -> None:
    """Export any timm-based encoder as a timm model folder or an ONNX file, and check the result: against
    PyTorch on generated scenes, and that its output depends on its input."""
    from distill.data.scenes import SceneGenerator
    from workbench.eval.encoders import build_encoder
    from workbench.eval.export_checks import input_dependence

    fmt = args.format or ("onnx" if args.out.suffix == ".onnx" else "timm")
    check_out(args.out, folder=fmt == "timm")
    encoder = build_encoder(args.encoder, args.resolution, **timm_weights(args))
    images = SceneGenerator(args.resolution, seed=1).batch(0, 3).images
    if fmt == "onnx":
        import torch

        from workbench.eval.export import (
            eager_and_onnx_latency,
            export_checked_onnx,
            exportable_model,
            onnx_session,
        )

        model = exportable_model(encoder)
        precision = "int8" if args.int8 else "fp32"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        path, cosine, differences = export_checked_onnx(
            model, args.out, args.resolution, images, precision, args.adaptors
        )
        session = onnx_session(path)

        def onnx_patches(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(["patches"], {"images": x.numpy()})[0])

        change = input_dependence(onnx_patches, args.resolution)
        outputs = ", ".join(o.name for o in session.get_outputs())
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {precision}, outputs: {outputs})")
        if differences:
            worst = max(differences, key=differences.get)
            print(f"onnxruntime vs PyTorch on 3 scenes: max |difference| {differences[worst]:.2e} ({worst})")
        print(f"onnxruntime {precision} vs PyTorch eager on 3 scenes: least cosine {cosine:.5f}")
        eager, onnx = eager_and_onnx_latency(model, path, args.resolution, args.threads)
        threads = args.threads or torch.get_num_threads()
        print(f"batch 1, {threads} threads: PyTorch eager {eager:.1f} ms, onnxruntime {precision} "
              f"{onnx:.1f} ms ({onnx / eager:.2f}x)")  # fmt: skip
    else:
        from workbench.eval.timm_export import check_timm_folder, export_timm

        path = export_timm(args.encoder, encoder, args.out, args.resolution, args.scoreboard)
        difference = check_timm_folder(path, encoder, images)
        exported = build_encoder(str(path), args.resolution)
        change = input_dependence(lambda x: exported(x).patches, args.resolution)
        files = ", ".join(sorted(p.name for p in path.iterdir()))
        print(f"wrote {path}/ ({files})")
        print(f"timm.create_model('local-dir:{path}') vs the encoder on 3 scenes: "
              f"max |difference| {difference:.2e}")  # fmt: skip
    print(f"output change between a blank and a random image: {change:.3f} (relative)")


def app_run(args: argparse.Namespace) -> None:
    """Serve the live demo (Gradio) on localhost."""
    from apps.launch import start_app

    start_app(args.runs, args.host, args.port, timm_weights(args), args.threads)


def dashboard_run(args: argparse.Namespace) -> None:
    """Serve the run dashboard (Streamlit) on localhost."""
    from apps.launch import launch_dashboard

    sys.exit(launch_dashboard(args.runs, args.host, args.port))


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


def add_eval_settings(parser: argparse.ArgumentParser) -> None:
    """One option per `EvalSettings` field (default: the dataclass's)."""
    from dataclasses import fields

    from workbench.eval.settings import EvalSettings

    for f in fields(EvalSettings):
        default = "the first run's student resolution, else 128" if f.name == "resolution" else f.default
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=int, help=f"default: {default}"
        )


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """The experts scored, where features are extracted, and the `EvalSettings` options."""
    from distill.teachers import EXPERTS

    parser.add_argument("--experts", nargs="*", default=list(EXPERTS), choices=EXPERTS)
    parser.add_argument("--device", default="auto", help="where features are extracted: auto, cpu, cuda")
    add_eval_settings(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `eupe` and its subcommands."""
    from apps.launch import LIVE_THREADS
    from distill.config import STAGE_NAMES
    from distill.teachers import EXPERTS
    from workbench.eval.settings import PROBE_NAMES

    parser = Parser(prog="eupe", description="EUPE workbench: distil experts into a small encoder.")
    parser.add_argument(
        "--debug", action="store_true", help="show an error's traceback (accepted anywhere on the line)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    teachers = commands.add_parser("teachers", help="inspect the teachers").add_subparsers(
        dest="action", required=True
    )

    teachers.add_parser("list", help="experts, dims, parameters, packages, licences").set_defaults(
        run=teachers_list
    )
    teachers.add_parser("pack", help="write the experts' compact weights to the cache").set_defaults(
        run=teachers_pack
    )

    show = teachers.add_parser("show", help="PCA maps of the experts' patch features, as a PNG")
    show.add_argument("--out", type=Path, default=Path("runs/teachers_show.png"))
    show.add_argument(
        "--resolution",
        type=int,
        help="input side (default: the largest the last --students stage trained at, else 224)",
    )
    show.add_argument("--photos", nargs="+", default=["astronaut", "coffee"])
    show.add_argument("--teachers", nargs="+", default=list(EXPERTS), help="experts or timm:<model> names")
    show.add_argument("--seed", type=int, default=0)
    add_weights_options(show, "pretrained")
    show.add_argument(
        "--students",
        nargs="*",
        default=[],
        type=Path,
        help="run stage folders (e.g. runs/toy/multires): each adds its estimate of every expert, in that "
        "expert's PCA basis, and its own features",
    )
    show.add_argument("--floor", action="store_true", help="also the random floor: the last --students "
                      "stage's architecture at random init, as the scoreboard scores it")  # fmt: skip
    show.set_defaults(run=teachers_show)

    check = teachers.add_parser("check", help="run each expert's behaviour check")
    check.add_argument("--experts", nargs="+", default=list(EXPERTS), choices=EXPERTS)
    check.set_defaults(run=teachers_check)

    for name, help_text in (
        ("distill", "run one distillation stage"),
        ("pipeline", "run the stages in order"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", type=Path, required=True)
        sub.add_argument("--out", type=Path, help="run folder (resumed if it exists)")
        sub.add_argument(
            "--dry-run", action="store_true",
            help="print the plan (parameters, FLOPs, memory per GPU, data check) without training",
        )  # fmt: skip
        sub.add_argument("--world-size", type=int, default=1, help="GPUs the --dry-run plans for")
        sub.add_argument("--gpu-memory-gib", type=float, default=80.0, help="per GPU, for --dry-run")
        if name == "distill":
            sub.add_argument("--stage", required=True, choices=STAGE_NAMES)
        else:
            sub.add_argument(
                "--stages", nargs="+", choices=STAGE_NAMES, help="default: every configured stage"
            )
        sub.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
        sub.set_defaults(run=distill_run)

    cache = commands.add_parser("cache", help="teacher-feature stores").add_subparsers(
        dest="action", required=True
    )
    build = cache.add_parser(
        "build", help="every teacher's features of every sample of a config's corpus, by sample id (float16)"
    )
    build.add_argument("--config", type=Path, required=True)
    build.add_argument("--out", type=Path, required=True, help="store folder (resumed if it exists)")
    build.add_argument("--side", type=int, required=True, help="the centred views' side (the teachers' side)")
    build.add_argument(
        "--grid", type=int, required=True, help="patch grids are average-pooled to grid x grid"
    )
    build.add_argument("--budget-gb", type=float, required=True, help="refuse a larger projected store (GiB)")
    build.add_argument("--shard-size", type=int, default=1024, help="samples per shard folder")
    build.add_argument("--batch", type=int, default=64, help="teacher batch size")
    build.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    build.set_defaults(run=cache_build_run)

    evaluation = commands.add_parser(
        "eval", help="scoreboard: every probe on the experts, each run's encoders and a random floor"
    )
    evaluation.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders")
    evaluation.add_argument(
        "--out", type=Path, required=True, help="scoreboard folder (resumed if it exists)"
    )
    evaluation.add_argument(
        "--extra", nargs="*", default=[], help="more encoders: timm:<model>, aliases, checkpoint folders"
    )
    add_scoring_options(evaluation)
    evaluation.set_defaults(run=eval_run)

    compare = commands.add_parser(
        "compare", help="the pipeline and scoreboard once per seed: mean ± std per encoder and probe"
    )
    compare.add_argument("--config", type=Path, required=True)
    compare.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, as data.seed and train.seed")
    compare.add_argument(
        "--out", type=Path, default=Path("runs"), help="folder of the runs and of <name>-compare.{md,json}"
    )
    compare.add_argument(
        "--name", help="runs are <name>-seed<k>, each scored into its eval/ (default: the config's stem)"
    )
    add_scoring_options(compare)
    compare.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    compare.set_defaults(run=compare_run)

    probe = commands.add_parser("probe", help="run one probe on some encoders")
    probe.add_argument("probe", choices=PROBE_NAMES)
    probe.add_argument(
        "--encoders", nargs="+", required=True, help="experts, timm:<model>, run stage or checkpoint folders"
    )
    add_weights_options(probe, "pretrained")
    add_eval_settings(probe)
    probe.set_defaults(run=probe_run)

    export = commands.add_parser(
        "export", help="export an encoder as a timm model folder (heads, model card) or ONNX, checked"
    )
    export.add_argument("encoder", help="a run stage or checkpoint folder, timm:<model> or a timm alias")
    export.add_argument("--out", type=Path, required=True, help="a folder (timm) or a .onnx file")
    export.add_argument("--format", choices=("timm", "onnx"), help="default: onnx for .onnx --out, else timm")
    export.add_argument("--resolution", type=int, default=224, help="ONNX input side; GFLOPs and checks")
    export.add_argument("--adaptors", action="store_true", help="ONNX: also output every adaptor head")
    export.add_argument(
        "--int8", action="store_true", help="ONNX: int8 weights (onnxruntime's dynamic quantisation, faster "
        "on CPUs; its agreement with PyTorch is printed and must reach cosine 0.99), not fp32",
    )  # fmt: skip
    export.add_argument(
        "--threads", type=int, help="ONNX: CPU threads of the latency printed (default: torch's)"
    )
    add_weights_options(export, "pretrained")
    export.add_argument("--scoreboard", type=Path, help="the scoreboard.json the model card quotes "
                        "(default: the run's eval/scoreboard.json)")  # fmt: skip
    export.set_defaults(run=export_run)

    app = commands.add_parser("app", help="live demo: what the experts, proxy and students see (Gradio)")
    app.add_argument("--runs", type=Path, default=Path("runs"), help="folder of runs (or one run) to offer")
    app.add_argument("--host", default="127.0.0.1")
    app.add_argument("--port", type=int, default=7860)
    add_weights_options(app, "random")
    app.add_argument(
        "--threads", type=int, default=LIVE_THREADS,
        help=f"torch CPU threads (default: {LIVE_THREADS}, which holds its speed beside a busy core)",
    )  # fmt: skip
    app.set_defaults(run=app_run)
    dashboard = commands.add_parser("dashboard", help="training runs, curves and scoreboards (Streamlit)")
    dashboard.add_argument("--runs", type=Path, default=Path("runs"))
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.set_defaults(run=dashboard_run)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="target", required=True)
    encoders = bench.add_parser("encoders", help="params, GFLOPs, latency and throughput of encoders")
    encoders.add_argument("--encoders", nargs="*", default=list(EXPERTS), help="specs (default: the experts)")
    encoders.add_argument("--runs", nargs="*", type=Path, default=[], help="add every stage of these runs")
    encoders.add_argument("--resolution", type=int, default=224)
    encoders.add_argument("--batch", type=int, default=8, help="throughput batch size")
    encoders.add_argument("--repeats", type=int, default=5)
    encoders.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    encoders.add_argument(
        "--onnx",
        action="store_true",
        help="add onnxruntime latency, fp32 and int8, for timm-based encoders "
        "(distilled or timm:<model>), with the ratio to PyTorch eager and the cosine agreement with it",
    )
    encoders.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    add_weights_options(encoders, "random", note=": the speed does not depend on them")
    encoders.set_defaults(run=bench_encoders_run)
    distill = bench.add_parser("distill", help="images/s of each stage with and without the feature cache")
    distill.add_argument("--config", type=Path, default=Path("configs/toy.yaml"))
    distill.add_argument("--steps", type=int, default=20, help="timed steps per stage")
    distill.add_argument("--stages", nargs="+", choices=STAGE_NAMES)
    distill.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    distill.set_defaults(run=bench_distill_run)
    data = bench.add_parser("data", help="streaming loader: images/s by source and workers, memory by corpus")
    data.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="generated corpus sizes")
    data.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    data.add_argument("--side", type=int, default=224)
    data.add_argument("--batch", type=int, default=64)
    data.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    data.add_argument("--root", type=Path, help="keep the generated corpora here (reused when run again)")
    data.set_defaults(run=bench_data_run)
    augment = bench.add_parser("augment", help="cached expert targets under flips and crops vs live experts")
    augment.add_argument("--count", type=int, default=32, help="views")
    augment.add_argument("--resolution", type=int, default=128, help="view side in pixels")
    augment.set_defaults(run=bench_augment_run)
    live = bench.add_parser("live", help="frames per second of the live demo's PCA maps, per encoder")
    live.add_argument("--encoders", nargs="*", default=list(EXPERTS), help="specs (default: the experts)")
    live.add_argument("--runs", nargs="*", type=Path, default=[], help="add every stage of these runs")
    live.add_argument("--resolution", type=int, default=224)
    live.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    live.add_argument("--repeats", type=int, default=20, help="timed frames")
    live.add_argument(
        "--threads", type=int, nargs="+", default=[LIVE_THREADS],
        help=f"torch CPU threads, one measurement each (default: {LIVE_THREADS}, the live demo's)",
    )  # fmt: skip
    live.add_argument(
        "--load", action="store_true",
        help="measure each setting twice: alone, then beside a process that keeps one core busy",
    )  # fmt: skip
    add_weights_options(live, "random", note=": the speed does not depend on them")
    live.set_defaults(run=bench_live_run)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")  # key.sub=value


GLOBAL_FLAGS = ("--debug",)  # options of `eupe` itself, accepted anywhere before a `--`


def hoisted_overrides(argv: list[str]) -> list[str]:
    """The command line with `GLOBAL_FLAGS` moved to the front and its `key.sub=value` overrides to the end,
    after `--`, wherever they were: an option that takes several values (`--stages proxy student`) cannot
    swallow them."""
    cut = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:cut] if a in GLOBAL_FLAGS]
    head, tail = [a for a in argv[:cut] if a not in GLOBAL_FLAGS], argv[cut:]
    if tail or not any(OVERRIDE.match(a) for a in head):
        return flags + head + tail
    overrides = [a for a in head if OVERRIDE.match(a)]
    return flags + [a for a in head if a not in overrides] + ["--"] + overrides


def main(argv: list[str] | None = None) -> None:
    """Entry point: parse, run, and turn any error into one `eupe: error: ...` line (exit status 1; 130 when
    interrupted), or with `--debug` into its traceback."""
    from distill.errors import PLAIN, one_line

    line = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(hoisted_overrides(line))
    args.argv = line
    try:
        args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("eupe: error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if args.debug:
            raise
        hint = "" if isinstance(error, PLAIN) else " (--debug shows the traceback)"
        sys.exit(f"eupe: error: {one_line(error)}{hint}")


if __name__ == "__main__":
    main()
