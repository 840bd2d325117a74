"""Where a stage's metrics go: JSON lines in the stage folder, and TensorBoard when it is installed."""

from __future__ import annotations

import json
from pathlib import Path

from distill.atomic import atomic_path
from distill.run_dir import METRICS_FILE


def metric_records(stage_folder: str | Path) -> list[dict]:
    """The logged steps of a stage's `metrics.jsonl`, in file order.

    A line that does not parse (the last one while training writes it) or has no step is left out.
    """
    path = Path(stage_folder) / METRICS_FILE
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                records.append(record)
    return records


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl`; mirrors scalars to TensorBoard if present.

    Args:
        folder: the stage folder.
        resume_step: on resume, entries logged at or after this step are dropped (they are run again).
    """

    def __init__(self, folder: Path, resume_step: int = 0) -> None:
        self.path = folder / METRICS_FILE
        if resume_step and self.path.is_file():  # a line cut short by a crash is dropped with them
            kept = [record for record in metric_records(folder) if record["step"] < resume_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(folder / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tensorboard = None

    def write(self, metrics: dict[str, float]) -> None:
        """Record one step's metrics (must include `step`)."""
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.tensorboard is not None:
            for key, value in metrics.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, metrics["step"])
            self.tensorboard.flush()
