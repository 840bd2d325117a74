"""What `eupe app` and `eupe dashboard` call: start the live demo (Gradio) or the run dashboard (Streamlit).

Both bind to 127.0.0.1 unless told otherwise, never make share links and send no usage statistics.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import apps

if TYPE_CHECKING:  # gradio and torch load only when the demo starts, not for the dashboard
    import gradio as gr

DASHBOARD = Path(apps.__file__).parent / "dashboard.py"
# The live demo's torch threads: 1 holds its speed when another process keeps a core busy. On the 2-core
# machine, toy/multires at 224 px: 2 threads 80-91 fps alone but 1.0-1.2 fps beside one busy core, 1 thread
# 59-63 fps either way (issue 26; `eupe bench live --threads 1 2 --load` measures it, README).
LIVE_THREADS = 1
OFFLINE_FONTS = {
    "font": ["ui-sans-serif", "system-ui", "sans-serif"],
    "font_mono": ["ui-monospace", "monospace"],
}


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Serve a Gradio app locally: no share link, errors shown in the page, offline fonts, 50 MB uploads.

    Args:
        block: serve until interrupted (False: return at once, serving from a thread).
    """
    from apps.gradio_app import gr  # sets GRADIO_ANALYTICS_ENABLED=False before gradio loads

    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        max_file_size="50mb",
        prevent_thread_lock=not block,
        theme=gr.themes.Default(**OFFLINE_FONTS),
        quiet=not block,
    )
    return demo


def start_app(
    runs: str | Path = "runs",
    host: str = "127.0.0.1",
    port: int = 7860,
    timm_weights: dict[str, object] | None = None,
    threads: int = LIVE_THREADS,
    warm_up: bool = True,
    block: bool = True,
) -> gr.Blocks:
    """Serve the live demo (`apps.gradio_app`) over the runs in `runs`, and return its Blocks.

    Args:
        runs: a folder of runs (or one run) whose proxies and students are offered.
        host, port: where to listen.
        timm_weights: how `timm:` encoders are loaded (see `EncoderCache`; default random weights).
        threads: torch CPU threads of the app's process (see `LIVE_THREADS`).
        warm_up: load the default encoders and run them once in the background, so the first image is fast.
        block: serve until interrupted (False: return at once, serving from a thread).
    """
    import torch

    from apps.gradio_app import build_app
    from workbench.explore.encoder_cache import EncoderCache
    from workbench.explore.explorer import Explorer

    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    explorer = Explorer(runs, cache=EncoderCache(timm_weights=timm_weights))
    if warm_up:
        threading.Thread(target=explorer.warm_up, daemon=True).start()
    if block:
        print(f"EUPE live demo on http://{host}:{port} (runs from {runs}); Ctrl+C to stop")
    return serve(build_app(explorer), host, port, block)


def dashboard_command(runs: str | Path = "runs", host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The `streamlit run` command line of the dashboard (headless, no usage statistics)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(DASHBOARD),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--", "--runs", str(runs),
    ]  # fmt: skip


def launch_dashboard(runs: str | Path = "runs", host: str = "127.0.0.1", port: int = 8501) -> int:
    """Serve the run dashboard (`apps/dashboard.py`) until it stops: SIGINT and SIGTERM are passed on to the
    Streamlit server, which shuts down; returns its exit status (128 + N when signal N killed it)."""
    print(f"EUPE dashboard on http://{host}:{port} (runs from {runs}); Ctrl+C to stop")
    server = subprocess.Popen(dashboard_command(runs, host, port))
    forwarded = (signal.SIGINT, signal.SIGTERM)
    previous = {
        number: signal.signal(number, lambda number, _: server.send_signal(number)) for number in forwarded
    }
    try:
        status = server.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - status if status < 0 else status
