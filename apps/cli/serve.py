"""`eupe app` and `eupe dashboard`: the live demo and the run dashboard, served on localhost."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apps.cli.command import Command
from apps.cli.options import add_weights_options, timm_weights


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe app`: the runs offered, where it is served, timm weights and torch threads."""
    from apps.launch import LIVE_THREADS

    parser.add_argument(
        "--runs", type=Path, default=Path("runs"), help="folder of runs (or one run) to offer"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    add_weights_options(parser, "random")
    parser.add_argument(
        "--threads", type=int, default=LIVE_THREADS,
        help=f"torch CPU threads (default: {LIVE_THREADS}, which holds its speed beside a busy core)",
    )  # fmt: skip


def app_run(args: argparse.Namespace) -> None:
    """Serve the live demo (Gradio) on localhost."""
    from apps.launch import start_app

    start_app(args.runs, args.host, args.port, timm_weights(args), args.threads)


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """`eupe dashboard`: the runs shown and where it is served."""
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)


def dashboard_run(args: argparse.Namespace) -> None:
    """Serve the run dashboard (Streamlit) on localhost."""
    from apps.launch import launch_dashboard

    sys.exit(launch_dashboard(args.runs, args.host, args.port))


COMMANDS = (
    Command(
        "app", "live demo: what the experts, proxy and students see (Gradio)", app_run, add_app_arguments
    ),
    Command(
        "dashboard",
        "training runs, curves and scoreboards (Streamlit)",
        dashboard_run,
        add_dashboard_arguments,
    ),
)
