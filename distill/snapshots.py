"""Feature snapshots of a stage while it trains: the model's features and adaptor estimates on a small fixed
probe set, every `train.snapshot_every` steps, so the timeline of distillation can be read from files alone.

```
RUN/<stage>/snapshots/targets.safetensors        once per stage: the probe images (uint8) and each teacher's
                                                 standardised target on them at the student's grid
RUN/<stage>/snapshots/step-000050.safetensors    the model after 50 updates: `features/{summary,patches}`,
                                                 `estimate/<teacher>/{summary,patches}` (float16)
```

Snapshot `s` holds the weights after `s` updates: step 0 (the start), every `snapshot_every` steps, and the
stage's last step. Each is written before the checkpoint of its step, so a recovered checkpoint at step `s`
implies the snapshots up to `s`; those beyond it, left by a killed run, are deleted at the resume and written
again as the steps are run again (the series stays complete, one file per step). Probe images depend on
nothing but this module's constants (no global random state), and snapshots run under `no_grad` in eval
mode, so training is bit-identical with snapshots on or off.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.nn import functional as F

from distill.atomic import atomic_path
from distill.data.images import resize, square_view
from distill.data.photos import HELD_OUT_PHOTOS, load_photo
from distill.data.scenes import SceneGenerator
from distill.features import Features
from distill.models import DistilledModel, adaptor_key
from distill.stage_teachers import StageTeachers

PROBE_SCENES = 2  # generated scenes of the probe set
PROBE_PHOTOS = HELD_OUT_PHOTOS[:2]  # whole held-out photos (centre squares) of the probe set
PROBE_SEED = 104_729  # the probe scenes' generator seed (no training run's data seed by default)
TARGETS_FILE = "targets.safetensors"
STEP_FILE = re.compile(r"step-(?P<step>\d{6})\.safetensors")


def probe_images(side: int) -> tuple[Tensor, list[str]]:
    """The probe set at `side`: [N, 3, side, side] in [0, 1] and the images' names (deterministic)."""
    scenes = SceneGenerator(side, seed=PROBE_SEED).batch(0, PROBE_SCENES).images
    photos = torch.stack([square_view(load_photo(name), side) for name in PROBE_PHOTOS])
    return torch.cat([scenes, photos]), [f"scene {i}" for i in range(PROBE_SCENES)] + list(PROBE_PHOTOS)


def step_file(folder: Path, step: int) -> Path:
    return folder / f"step-{step:06d}.safetensors"


def snapshot_steps(folder: Path) -> list[int]:
    """The steps of the snapshots in a snapshot folder, in order."""
    names = [p.name for p in folder.glob("step-*.safetensors")] if folder.is_dir() else []
    return sorted(int(m["step"]) for m in map(STEP_FILE.fullmatch, names) if m)


def snapshot_series(folder: Path) -> list[int]:
    """`snapshot_steps` of a folder that holds a stage's snapshots and their targets file.

    Raises:
        FileNotFoundError: no snapshots there (the stage trained with `train.snapshot_every` 0).
    """
    steps = snapshot_steps(folder)
    if not steps or not (folder / TARGETS_FILE).is_file():
        raise FileNotFoundError(f"no snapshots in {folder} (train with train.snapshot_every > 0)")
    return steps


def due(step: int, every: int, last: int) -> bool:
    """Whether snapshot `step` (weights after `step` updates) is taken: 0, every `every` steps, and `last`."""
    return every > 0 and (step % every == 0 or step == last)


def to_grid(patches: Tensor, grid: tuple[int, int]) -> Tensor:
    """A patch grid resized to `grid` (bicubic, antialiased when shrinking; unchanged when equal)."""
    if tuple(patches.shape[-2:]) == grid:
        return patches
    return F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False, antialias=True)


def _write(path: Path, tensors: dict[str, Tensor], meta: dict) -> None:
    tensors = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
               for k, v in tensors.items()}  # fmt: skip
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})


def read_snapshot(path: Path) -> tuple[dict[str, Tensor], dict]:
    """A snapshot or targets file: its tensors (float32 for floats) and its metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta


def features_of(tensors: dict[str, Tensor], prefix: str) -> Features:
    return Features(tensors[f"{prefix}/summary"], tensors[f"{prefix}/patches"])


def estimates_of(tensors: dict[str, Tensor]) -> dict[str, Features]:
    """Each teacher's estimate in a snapshot (or target, in a targets file), by teacher name."""
    kind = "estimate" if any(k.startswith("estimate/") for k in tensors) else "target"
    names = {k[len(kind) + 1 :].rsplit("/", 1)[0] for k in tensors if k.startswith(f"{kind}/")}
    return {name: features_of(tensors, f"{kind}/{name}") for name in sorted(names)}


class StageSnapshots:
    """Takes a stage's snapshots (on the main process; see the module docstring)."""

    def __init__(self, folder: Path, every: int, last: int, side: int, device: torch.device,
                 amp: torch.dtype | None) -> None:  # fmt: skip
        self.folder, self.every, self.last, self.amp = folder, every, last, amp
        self.images = probe_images(side)[0].to(device)

    @classmethod
    def start(cls, folder: Path, every: int, last: int, start: int, side: int, teacher_side: int,
              teachers: StageTeachers, model: DistilledModel) -> StageSnapshots | None:  # fmt: skip
        """Open a stage's snapshots at its start (or resume) step: drop the snapshots beyond `start` that a
        killed run left, write the targets file if missing and snapshot `start` if due. None when off."""
        if every <= 0:
            return None
        device = next(model.parameters()).device
        snapshots = cls(folder, every, last, side, device, teachers.amp)
        folder.mkdir(parents=True, exist_ok=True)
        for step in snapshot_steps(folder):
            if step > start:
                step_file(folder, step).unlink()
        if not (folder / TARGETS_FILE).is_file():
            snapshots.write_targets(teachers, teacher_side, model.stride)
        snapshots.after_step(start, model)
        return snapshots

    def write_targets(self, teachers: StageTeachers, teacher_side: int, stride: int) -> None:
        """Each teacher's standardised target on the probe set at the student's grid, and the images."""
        timer = time.perf_counter()
        grid = (self.images.shape[-2] // stride, self.images.shape[-1] // stride)
        teacher_images = resize(self.images, teacher_side)  # as the trainer gives the teachers their side
        tensors: dict[str, Tensor] = {"images": self.images.mul(255).round().to(torch.uint8)}
        for name in teachers.teachers:
            target = teachers.targets(name, teacher_images)
            tensors[f"target/{name}/summary"] = target.summary
            tensors[f"target/{name}/patches"] = to_grid(target.patches, grid)
        _, names = probe_images(self.images.shape[-1])
        meta = {"images": names, "teacher_side": teacher_side, "seconds": time.perf_counter() - timer,
                "time": time.time()}  # fmt: skip
        _write(self.folder / TARGETS_FILE, tensors, meta)

    def after_step(self, step: int, model: DistilledModel) -> None:
        """Snapshot the model after `step` updates, if that step is due."""
        if not due(step, self.every, self.last):
            return
        timer = time.perf_counter()
        was_training = model.training
        model.eval()
        autocast = torch.autocast(self.images.device.type, dtype=self.amp, enabled=self.amp is not None)
        with torch.no_grad(), autocast:
            features = model.features(self.images)
            estimates = {n: model.adaptors[adaptor_key(n)](features) for n in model.teacher_names}
        model.train(was_training)
        tensors = {"features/summary": features.summary, "features/patches": features.patches}
        for name, estimate in estimates.items():
            tensors[f"estimate/{name}/summary"] = estimate.summary
            tensors[f"estimate/{name}/patches"] = estimate.patches
        meta = {"step": step, "seconds": time.perf_counter() - timer, "time": time.time()}
        _write(step_file(self.folder, step), tensors, meta)


@dataclass
class SnapshotOverhead:
    """What a stage's snapshots cost: `seconds` of `stage_seconds` (from the targets file to the last
    snapshot), and the share projected for the stage's configured `steps` at the same costs per step."""

    snapshots: int
    seconds: float
    stage_seconds: float
    projected_share: float

    @property
    def share(self) -> float:
        return self.seconds / max(self.stage_seconds, 1e-9)

    def __str__(self) -> str:
        return (f"{self.snapshots} snapshots {self.seconds:.2f} s of {self.stage_seconds:.1f} s "
                f"({100 * self.share:.1f}%; {100 * self.projected_share:.1f}% projected)")  # fmt: skip


def snapshot_overhead(folder: Path, steps: int, every: int) -> SnapshotOverhead | None:
    """The snapshot overhead of an uninterrupted stage from its snapshot folder (`RunDir.snapshots`), with
    its share projected to `steps` steps with a snapshot every `every`; None without snapshots."""
    taken = snapshot_steps(folder)
    if not taken or not (folder / TARGETS_FILE).is_file():
        return None
    _, targets = read_snapshot(folder / TARGETS_FILE)
    metas = [read_snapshot(step_file(folder, s))[1] for s in taken]
    costs = [m["seconds"] for m in metas]
    spent = targets["seconds"] + sum(costs)
    stage_seconds = metas[-1]["time"] - targets["time"] + targets["seconds"]
    per_step = (stage_seconds - spent) / max(taken[-1] - taken[0], 1)
    count = sum(due(s, every, steps) for s in range(steps + 1))
    projected = targets["seconds"] + count * sum(costs) / len(costs)
    return SnapshotOverhead(len(taken), spent, stage_seconds, projected / (projected + per_step * steps))
