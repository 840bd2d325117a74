"""The teachers of a stage, their frozen standardisation, and the targets they give."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from distill.checkpoint import file_digest
from distill.config import RunConfig
from distill.data.images import resize
from distill.distilled_teacher import DistilledTeacher
from distill.features import Features
from distill.run_dir import MODEL_FILE, RunDir
from distill.stages import EXPERTS, stage_named
from distill.standardize import TeacherStandardizer, load_standardizers, save_standardizers
from distill.teachers import Teacher, build_teacher
from distill.teachers.registry import registered_teachers


@dataclass
class StageTeachers:
    """Frozen teachers of one stage with their frozen standardisers.

    Attributes:
        teachers: name -> teacher.
        standardizers: name -> its summary/patch standardiser.
        identity: name -> JSON-able description (keys the feature cache).
        patch_weights: name -> gamma on its patch terms.
        device: where the teachers run.
    """

    teachers: dict[str, Teacher]
    standardizers: dict[str, TeacherStandardizer]
    identity: dict[str, dict]
    patch_weights: dict[str, float]
    device: torch.device

    def dims(self) -> dict[str, tuple[int, int]]:
        """name -> (summary_dim, patch_dim)."""
        return {n: (t.summary_dim, t.patch_dim) for n, t in self.teachers.items()}

    @torch.no_grad()
    def targets(self, name: str, images: Tensor) -> Features:
        """Standardised features of teacher `name` for images in [0, 1]."""
        return self.standardizers[name](self.teachers[name](images))


def expert_teacher(spec_name: str, resolution: int | None, weights: str, checkpoint: str | None) -> Teacher:
    """An expert or timm teacher from its config fields."""
    if spec_name in registered_teachers():
        return build_teacher(spec_name, resolution=resolution)
    return build_teacher(spec_name, weights=weights, checkpoint=checkpoint, resolution=resolution)


def build_stage_teachers(
    config: RunConfig, stage: str, run_dir: Path, device: torch.device, views: Tensor, save: bool = True
) -> StageTeachers:
    """Build a stage's teachers and fit (or reload) their standardisation on warm-up batches.

    Warm-up: `norm.warmup_batches` batches of the stage's batch size drawn from the views, at each
    of the stage's teacher sides in turn; with `save`, the fitted statistics are written to
    `run_dir/<stage>/standardizers.safetensors`. Statistics already saved there are reloaded instead
    (and the file left as it is), so a resumed run standardises exactly as before.
    """
    run = RunDir(run_dir)
    taught_by = stage_named(stage).taught_by
    if taught_by == EXPERTS:
        teachers, identity, gammas = {}, {}, {}
        for spec in config.teachers:
            teachers[spec.name] = expert_teacher(spec.name, spec.resolution, spec.weights, spec.checkpoint)
            identity[spec.name] = {"name": spec.name, "resolution": spec.resolution, "weights": spec.weights,
                                   "checkpoint": spec.checkpoint}  # fmt: skip
            gammas[spec.name] = spec.patch_weight
    else:
        teacher = run.checkpoint(taught_by)
        if not run.has_checkpoint(taught_by):
            raise FileNotFoundError(
                f"stage '{stage}' needs the {taught_by} checkpoint {teacher}: run the {taught_by} stage first"
            )
        teachers = {taught_by: DistilledTeacher(teacher)}
        identity = {taught_by: {"weights": file_digest(teacher / MODEL_FILE)}}  # content, wherever it lies
        gammas = {taught_by: 1.0}
    teachers = {n: t.to(device) for n, t in teachers.items()}
    saved = run.standardizers(stage)
    if saved.is_file():  # a resumed stage standardises exactly as before
        standardizers = load_standardizers(saved, device)
    else:
        standardizers = {
            n: TeacherStandardizer(t.summary_dim, t.patch_dim, config.norm.method).to(device)
            for n, t in teachers.items()
        }
        batch, sides = config.stages[stage].batch_size, config.stages[stage].teacher_sides
        generator = torch.Generator().manual_seed(config.train.seed + 17)
        draws = [
            torch.randint(views.shape[0], (batch,), generator=generator)
            for _ in range(config.norm.warmup_batches)
        ]
        for name, teacher in teachers.items():
            batches = tqdm(draws, desc=f"{stage}: {name} statistics", leave=False, disable=not save)
            outputs = (
                teacher(resize(views[index].to(device).float().div(255), sides[i % len(sides)]))
                for i, index in enumerate(batches)
            )
            standardizers[name].fit(outputs)
        if save:
            save_standardizers(standardizers, saved)
    stage_teachers = StageTeachers(teachers, standardizers, identity, gammas, device)
    return stage_teachers
