"""`eupe teachers list|pack|show|check`: the experts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apps.cli.command import Command
from apps.cli.options import add_weights_options, check_out, timm_weights


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


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe teachers show`: the figure, its photos, experts and students."""
    from distill.teachers import EXPERTS

    parser.add_argument("--out", type=Path, default=Path("runs/teachers_show.png"))
    parser.add_argument(
        "--resolution",
        type=int,
        help="input side (default: the largest the last --students stage trained at, else 224)",
    )
    parser.add_argument("--photos", nargs="+", default=["astronaut", "coffee"])
    parser.add_argument("--teachers", nargs="+", default=list(EXPERTS), help="experts or timm:<model> names")
    parser.add_argument("--seed", type=int, default=0)
    add_weights_options(parser, "pretrained")
    parser.add_argument(
        "--students",
        nargs="*",
        default=[],
        type=Path,
        help="run stage folders (e.g. runs/toy/multires): each adds its estimate of every expert, in that "
        "expert's PCA basis, and its own features",
    )
    parser.add_argument("--floor", action="store_true", help="also the random floor: the last --students "
                        "stage's architecture at random init, as the scoreboard scores it")  # fmt: skip


def teachers_show(args: argparse.Namespace) -> None:
    """PCA maps of the experts' patch features (and students' estimates of them) on photos and a scene."""
    from distill.data.images import square_view
    from distill.data.photos import load_photo
    from distill.data.scenes import SceneGenerator
    from distill.run_dir import trained_resolution
    from distill.specs import parse_spec
    from distill.teachers import build_teacher
    from workbench.eval.encoders import distilled_encoder
    from workbench.viz.pca_figures import pca_grid_figure

    check_out(args.out, folder=False)
    side = args.resolution or trained_resolution(args.students, 224)
    weights = timm_weights(args)
    images = {name: square_view(load_photo(name), side) for name in args.photos}
    images["generated scene"] = SceneGenerator(side, seed=args.seed).batch(0, 1).images[0]
    encoders = {
        name: build_teacher(name, resolution=side, **(weights if parse_spec(name).kind == "timm" else {}))
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


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe teachers check`: which experts."""
    from distill.teachers import EXPERTS

    parser.add_argument("--experts", nargs="+", default=list(EXPERTS), choices=EXPERTS)


def teachers_check(args: argparse.Namespace) -> None:
    """Run each expert's behaviour check; exit 1 if any fails."""
    from distill.teachers import build_teacher
    from distill.teachers.checks import run_check

    results = [run_check(name, build_teacher(name)) for name in args.experts]
    for result in results:
        print(result.line())
    if not all(r.passed for r in results):
        sys.exit(1)


COMMANDS = (
    Command("list", "experts, dims, parameters, packages, licences", teachers_list),
    Command("pack", "write the experts' compact weights to the cache", teachers_pack),
    Command("show", "PCA maps of the experts' patch features, as a PNG", teachers_show, add_show_arguments),
    Command("check", "run each expert's behaviour check", teachers_check, add_check_arguments),
)
