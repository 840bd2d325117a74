"""Where a stage's metrics go: JSON lines in the stage folder, and TensorBoard when it is installed."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from distill.atomic import atomic_path
from distill.disk import check_space, naming_full_disk
from distill.run_dir import METRICS_FILE, TENSORBOARD_FOLDER

TENSORBOARD_ROOM = 1 << 20  # bytes free before a TensorBoard write: its writer thread never meets a full disk


def metric_records(stage_folder: str | Path) -> list[dict]:
    """The logged steps of a stage's `metrics.jsonl`, in file order.

    A line that does not parse or has no integer step is left out: silently for a last line with no line
    end yet (training may be writing it), with a warning naming the file for any other.
    """
    path = Path(stage_folder) / METRICS_FILE
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    finished = len(lines) if text.endswith("\n") else len(lines) - 1  # lines known to be complete
    records, bad = [], 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            records.append(record)
        elif number <= finished:
            bad += 1
    if bad:
        warnings.warn(f"{path}: left out {bad} malformed line(s)", stacklevel=2)
    return records


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl`; mirrors scalars to TensorBoard if present.

    Args:
        folder: the stage folder.
        resume_step: the step training starts from; entries logged at or after it are dropped (they are
            run again), with a line cut short by a kill and any malformed one; TensorBoard's readers drop
            the earlier events at or after it too (`purge_step`), so each step shows once.
    """

    def __init__(self, folder: Path, resume_step: int = 0) -> None:
        self.path = folder / METRICS_FILE
        if self.path.is_file():
            kept = [record for record in metric_records(folder) if record["step"] < resume_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(folder / TENSORBOARD_FOLDER), purge_step=resume_step)
        except ImportError:  # tensorboard is optional
            self.tensorboard = None

    def write(self, metrics: dict[str, float]) -> None:
        """Record one step's metrics (must include `step`); a full disk is one OSError naming the file."""
        with naming_full_disk(self.path), self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.tensorboard is not None:
            folder = self.path.parent / TENSORBOARD_FOLDER
            check_space(folder, TENSORBOARD_ROOM)
            with naming_full_disk(folder):
                for key, value in metrics.items():
                    if key != "step":
                        self.tensorboard.add_scalar(key, value, metrics["step"])
                self.tensorboard.flush()
