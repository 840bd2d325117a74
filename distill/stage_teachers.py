"""The teachers of a stage, their frozen standardisation, and the targets they give."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from distill.config import RunConfig, TeacherConfig
from distill.data.images import resize
from distill.data.training_data import FixedViews, TrainingData
from distill.distilled_teacher import DistilledTeacher
from distill.features import Features
from distill.fingerprint import fingerprint
from distill.integrity import file_digest
from distill.run_dir import MODEL_FILE, RunDir
from distill.seeds import seeded
from distill.stages import EXPERTS, STAGE_NAMES, stage_named
from distill.standardize import (
    TeacherStandardizer,
    load_standardizers,
    save_standardizers,
    standardizers_key,
)
from distill.teachers import Teacher, build_teacher
from distill.teachers.registry import registered_teachers

StoredFeatures = Callable[[str, Tensor, torch.device], Features]  # a feature store's `take`: raw features


@dataclass
class StageTeachers:
    """Frozen teachers of one stage with their frozen standardisers.

    Attributes:
        teachers: name -> teacher.
        standardizers: name -> its summary/patch standardiser.
        identity: name -> JSON-able description (keys the feature cache).
        patch_weights: name -> gamma on its patch terms.
        device: where the teachers run.
        amp: autocast dtype of their forward passes (None = fp32).
    """

    teachers: dict[str, Teacher]
    standardizers: dict[str, TeacherStandardizer]
    identity: dict[str, dict]
    patch_weights: dict[str, float]
    device: torch.device
    amp: torch.dtype | None = None

    def dims(self) -> dict[str, tuple[int, int]]:
        """name -> (summary_dim, patch_dim)."""
        return {n: (t.summary_dim, t.patch_dim) for n, t in self.teachers.items()}

    def raw(self, name: str, images: Tensor) -> Features:
        """Teacher `name`'s features (fp32) for images in [0, 1], under the teachers' autocast."""
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.teachers[name](images)
        return Features(out.summary.float(), out.patches.float())

    def targets(self, name: str, images: Tensor) -> Features:
        """Standardised features of teacher `name` for images in [0, 1]."""
        with torch.no_grad():
            return self.standardizers[name](self.raw(name, images))


def expert_teacher(spec_name: str, resolution: int | None, weights: str, checkpoint: str | None) -> Teacher:
    """An expert or timm teacher from its config fields."""
    if spec_name in registered_teachers():
        return build_teacher(spec_name, resolution=resolution)
    return build_teacher(spec_name, weights=weights, checkpoint=checkpoint, resolution=resolution)


def teacher_identity(spec: TeacherConfig, seed: int) -> dict:
    """What names a teacher's features (keys cached targets and feature stores): its config fields, and the
    seed of random weights (`configured_experts` draws them seeded by `train.seed`)."""
    identity = {"name": spec.name, "resolution": spec.resolution, "weights": spec.weights,
                "checkpoint": spec.checkpoint}  # fmt: skip
    return identity | {"seed": seed} if spec.weights == "random" else identity


def configured_experts(config: RunConfig) -> tuple[dict[str, Teacher], dict[str, dict], dict[str, float]]:
    """The config's teachers (experts or timm models), and per name its identity and patch weight; random
    weights are drawn with torch seeded by `train.seed`, whatever ran before."""
    specs = config.teachers
    with seeded(config.train.seed):
        teachers = {s.name: expert_teacher(s.name, s.resolution, s.weights, s.checkpoint) for s in specs}
    identity = {s.name: teacher_identity(s, config.train.seed) for s in specs}
    return teachers, identity, {s.name: s.patch_weight for s in specs}


def build_stage_teachers(
    config: RunConfig,
    stage: str,
    run_dir: Path,
    device: torch.device,
    data: TrainingData,
    save: bool = True,
    amp: torch.dtype | None = None,
    stored: StoredFeatures | None = None,
) -> StageTeachers:
    """Build a stage's frozen teachers and fit (or reload) their standardisation on warm-up batches.

    Warm-up: `norm.warmup_batches` batches of the stage's batch size from the data (`data.warmup`: the
    same on every process), at each of the stage's teacher sides in turn; with `save`, the fitted
    statistics are written to `run_dir/<stage>/standardizers.safetensors`. Statistics already saved there
    are reloaded instead (and the file left as it is), so a resumed run standardises exactly as before.
    With `amp` bf16 on a GPU the teachers' weights are stored in bf16 (half the memory); their forward
    passes run under autocast at `amp` wherever they run. With `stored` (a feature store's `take`: teacher,
    sample ids, device -> raw features) the statistics are those of the stored features of the warm-up
    batches' samples, the targets the stage will read. Statistics another stage of the run fitted on the
    same teachers, views and warm-up (`statistics_key`) are reused, not fitted again.
    """
    run = RunDir(run_dir)
    taught_by = stage_named(stage).taught_by
    if taught_by == EXPERTS:
        teachers, identity, gammas = configured_experts(config)
    else:
        teacher = run.checkpoint(taught_by)
        if not run.has_checkpoint(taught_by):
            raise FileNotFoundError(
                f"stage '{stage}' needs the {taught_by} checkpoint {teacher}: run the {taught_by} stage first"
            )
        teachers = {taught_by: DistilledTeacher(teacher)}
        identity = {taught_by: {"weights": file_digest(teacher / MODEL_FILE)}}  # content, wherever it lies
        gammas = {taught_by: 1.0}
    low_precision = amp is not None and device.type == "cuda"
    teachers = {n: t.to(device, dtype=amp if low_precision else None).eval() for n, t in teachers.items()}
    stage_teachers = StageTeachers(teachers, {}, identity, gammas, device, amp)
    saved, key = run.standardizers(stage), statistics_key(config, stage, identity, data, stored)
    source = saved if saved.is_file() else matching_statistics(run, stage, key)
    if source is not None:  # a resumed stage standardises exactly as before; a twin stage's are reused
        standardizers = load_standardizers(source, device)
    else:
        standardizers = fit_standardizers(config, stage, stage_teachers, data, save, stored)
    if save and source != saved:
        save_standardizers(standardizers, saved, key)
    stage_teachers.standardizers = standardizers
    return stage_teachers


def statistics_key(
    config: RunConfig,
    stage: str,
    identity: dict[str, dict],
    data: TrainingData,
    stored: StoredFeatures | None,
) -> str | None:
    """A fingerprint of everything a stage's warm-up statistics depend on: the teachers, the method, the
    warm-up batches and sides, and the fixed views; None for streamed images or stored features (their
    statistics are fitted in every stage)."""
    if stored is not None or not isinstance(data, FixedViews):
        return None
    settings = config.stages[stage]
    warmup = (config.norm.warmup_batches, settings.batch_size, settings.teacher_sides, config.train.seed)
    return fingerprint(identity, config.norm.method, warmup, data.key)


def matching_statistics(run: RunDir, stage: str, key: str | None) -> Path | None:
    """Another stage's saved statistics fitted under `key`, if any."""
    if key is None:
        return None
    others = (run.standardizers(other) for other in STAGE_NAMES if other != stage)
    return next((path for path in others if path.is_file() and standardizers_key(path) == key), None)


def fit_standardizers(
    config: RunConfig,
    stage: str,
    teachers: StageTeachers,
    data: TrainingData,
    progress: bool,
    stored: StoredFeatures | None,
) -> dict[str, TeacherStandardizer]:
    """Fit each teacher's standardiser on `norm.warmup_batches` warm-up batches (see
    `build_stage_teachers`)."""
    batch_size, sides = config.stages[stage].batch_size, config.stages[stage].teacher_sides
    standardizers = {}
    for name, teacher in teachers.teachers.items():
        standardizer = TeacherStandardizer(teacher.summary_dim, teacher.patch_dim, config.norm.method)
        standardizers[name] = standardizer.to(teachers.device)
        warmup = data.warmup(batch_size, config.norm.warmup_batches, config.train.seed)
        batches = tqdm(warmup, total=config.norm.warmup_batches, desc=f"{stage}: {name} statistics",
                       leave=False, disable=not progress)  # fmt: skip
        outputs = (
            stored(name, batch.index, teachers.device)
            if stored is not None
            else teachers.raw(
                name, resize(batch.images.to(teachers.device).float().div(255), sides[i % len(sides)])
            )
            for i, batch in enumerate(batches)
        )
        standardizers[name].fit(outputs)
    return standardizers
