"""The table `eupe` is built from: a subcommand is its name, help, arguments and what it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    """One subcommand: `add_arguments` declares its options, `run` does its job with the parsed ones."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


class Group(NamedTuple):
    """A subcommand of subcommands (`eupe teachers list`); `dest` names the chosen one in the arguments."""

    name: str
    help: str
    dest: str
    commands: tuple[Command, ...]


def add_commands(subparsers: argparse._SubParsersAction, entries: tuple[Command | Group, ...]) -> None:
    """Each entry as a subparser of `subparsers`, in order; a group's commands below it."""
    for entry in entries:
        parser = subparsers.add_parser(entry.name, help=entry.help)
        if isinstance(entry, Group):
            add_commands(parser.add_subparsers(dest=entry.dest, required=True), entry.commands)
            continue
        if entry.add_arguments is not None:
            entry.add_arguments(parser)
        parser.set_defaults(run=entry.run)
