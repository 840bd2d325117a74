"""Where a stage's metrics go: JSON lines in the stage folder, and TensorBoard when it is installed."""

from __future__ import annotations

import json
from pathlib import Path

from distill.atomic import atomic_path


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl`; mirrors scalars to TensorBoard if present.

    Args:
        folder: the stage folder.
        resume_step: on resume, entries logged at or after this step are dropped (they are run again).
    """

    def __init__(self, folder: Path, resume_step: int = 0) -> None:
        self.path = folder / "metrics.jsonl"
        if resume_step and self.path.is_file():
            kept = [
                line for line in self.path.read_text().splitlines() if json.loads(line)["step"] < resume_step
            ]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
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
