"""The `eupe` command: one entry point, one subcommand per job, each declared in its own module
(`COMMANDS` below is their table)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from apps.cli import bench, scoring, serve, teachers, training
from apps.cli.command import Group, add_commands
from apps.cli.export import COMMAND as EXPORT


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one `eupe: error: ...` line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"eupe: error: {message} (see {self.prog} --help)\n")


COMMANDS = (
    Group("teachers", "inspect the teachers", "action", teachers.COMMANDS),
    *training.COMMANDS,
    Group("cache", "teacher-feature stores", "action", training.CACHE_COMMANDS),
    *scoring.COMMANDS,
    EXPORT,
    *serve.COMMANDS,
    Group("bench", "benchmarks", "target", bench.COMMANDS),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `eupe` and its subcommands (`COMMANDS`)."""
    parser = Parser(prog="eupe", description="EUPE workbench: distil experts into a small encoder.")
    parser.add_argument(
        "--debug", action="store_true", help="show an error's traceback (accepted anywhere on the line)"
    )
    add_commands(parser.add_subparsers(dest="command", required=True), COMMANDS)
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
