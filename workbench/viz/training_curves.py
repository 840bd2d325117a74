"""Loss curves of a stage from its `metrics.jsonl`, per teacher, and redrawn live while the stage trains."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from matplotlib.figure import Figure

from distill.metrics_log import metric_records
from workbench.viz.comparison_figures import finish_line_panels, line_panels

T = TypeVar("T")
TERMS = ("summary_cos", "patch_cos", "patch_smooth_l1", "total")  # as `distill.losses.teacher_loss` logs them


def logged_teachers(records: list[dict]) -> list[str]:
    """Teacher names in the records, in the order they were logged."""
    return list(dict.fromkeys(key.split("/")[0] for r in records for key in r if key.endswith("/total")))


def loss_curves_figure(records: list[dict], title: str = "") -> Figure:
    """One panel per teacher: its unweighted loss terms and weighted total against the step.

    Args:
        records: logged steps (see `metric_records`).
        title: figure title.
    """
    teachers = logged_teachers(records)
    if not teachers:
        raise ValueError("no per-teacher loss terms in the records (is it a stage's metrics.jsonl?)")
    fig, axes = line_panels(teachers, xlabel="step")
    steps = [r["step"] for r in records]
    for ax, teacher in zip(axes, teachers, strict=True):
        for term in TERMS:
            values = [r.get(f"{teacher}/{term}", float("nan")) for r in records]
            ax.plot(steps, values, label=term, linewidth=2.2 if term == "total" else 1.2)
        ax.set_ylim(bottom=0)
    return finish_line_panels(fig, axes, title=title)


def runs_curves_figure(runs: dict[str, list[dict]], term: str = "total", title: str = "") -> Figure:
    """One panel per teacher: one loss term of several runs of a stage against the step, a line per run.

    Args:
        runs: label -> that run's logged steps (see `metric_records`).
        term: the term drawn (one of `TERMS`).
        title: figure title.
    """
    if term not in TERMS:
        raise ValueError(f"unknown loss term '{term}' (known: {', '.join(TERMS)})")
    teachers = list(dict.fromkeys(t for records in runs.values() for t in logged_teachers(records)))
    if not teachers:
        raise ValueError("no per-teacher loss terms in the records (are they stages' metrics.jsonl?)")
    fig, axes = line_panels(teachers, xlabel="step", ylabel=term)
    for ax, teacher in zip(axes, teachers, strict=True):
        for label, records in runs.items():
            points = [(r["step"], r[f"{teacher}/{term}"]) for r in records if f"{teacher}/{term}" in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=label, linewidth=1.4)
        ax.set_ylim(bottom=0)
    return finish_line_panels(fig, axes, title=title)


def display_updater() -> Callable[[Figure], None]:
    """A callback that shows a figure in the notebook output, replacing the figure it showed before."""
    from IPython.display import display

    handle = None

    def show(fig: Figure) -> None:
        nonlocal handle
        if handle is None:
            handle = display(fig, display_id=True)
        else:
            handle.update(fig)

    return show


def watch_training(
    job: Callable[[], T],
    stage_folder: str | Path,
    draw: Callable[[list[dict]], Figure] = loss_curves_figure,
    show: Callable[[Figure], None] | None = None,
    every: float = 2.0,
) -> T:
    """Run `job` (e.g. a stage's training) in a worker thread and redraw the stage's curves as it logs.

    The curves are redrawn whenever new steps are logged, and once more when the job ends; a stage
    that is already finished is drawn once. The job's exception, if any, is raised here.

    Args:
        job: what to run; its return value is returned.
        stage_folder: the folder whose `metrics.jsonl` the job writes.
        draw: records -> figure.
        show: displays each new figure (default: in place in the notebook output).
        every: seconds between looks at the metrics file.
    """
    show = show or display_updater()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = job()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    drawn = 0
    while True:
        running = worker.is_alive()  # read before the metrics, so the final state is always drawn
        records = metric_records(stage_folder)
        if records and len(records) != drawn:
            show(draw(records))
            drawn = len(records)
        if not running:
            break
        worker.join(every)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
