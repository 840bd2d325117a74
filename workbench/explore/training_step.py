"""One stage of the distillation opened up on one batch: its teachers' frozen standardisation, the loss
terms a model gets against their targets, and tables of each part of one training step."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from distill.config import RunConfig, check_stages
from distill.data.training_data import FixedViews
from distill.device import pick_device
from distill.features import Features
from distill.losses import distillation_loss
from distill.models import DistilledModel, adaptor_key
from distill.pipeline import save_run_config
from distill.stage_teachers import StageTeachers, build_stage_teachers
from distill.standardize import TeacherStandardizer, patch_rows
from workbench.viz.training_curves import TERMS


def stage_teachers(config: RunConfig, run_dir: str | Path, stage: str, data: FixedViews) -> StageTeachers:
    """A stage's teachers and standardisers exactly as its training builds them.

    Statistics the run folder already holds for the stage are reloaded; otherwise they are fitted on
    the warm-up batches and saved there, so that training reuses them.

    Args:
        config: the run's configuration.
        run_dir: the run folder (refused if it holds a run of another config).
        stage: `proxy`, `student`, `multires` or `direct`.
        data: the run's training views (`workbench.notebook.pipeline_views`).
    """
    run_dir = Path(run_dir)
    check_stages(config, [stage])
    save_run_config(config, run_dir)
    return build_stage_teachers(config, stage, run_dir, pick_device(config.train.device), data)


def coordinate_std(standardizer: TeacherStandardizer, kind: str) -> Tensor:
    """The per-coordinate standard deviation a standardiser divides out (`summary` or `patches`)."""
    scale = getattr(standardizer, kind).scale
    return 1 / (scale.norm(dim=-1) if scale.ndim == 2 else scale)


def standardizer_table(standardizers: dict[str, TeacherStandardizer]) -> str:
    """A Markdown table of each teacher's frozen statistics: dimension, typical |mean|, std range."""
    lines = [
        "| teacher | features | dim | median abs(mean) | std min | std median | std max |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, standardizer in standardizers.items():
        for kind in ("summary", "patches"):
            mean = getattr(standardizer, kind).mean
            std = coordinate_std(standardizer, kind)
            lines.append(
                f"| {name} | {kind} | {mean.numel()} | {mean.abs().median():.3g} | {std.min():.3g} "
                f"| {std.median():.3g} | {std.max():.3g} |"
            )
    return "\n".join(lines) + "\n"


@torch.no_grad()
def stage_batch_loss(
    config: RunConfig, teachers: StageTeachers, model: DistilledModel, images: Tensor
) -> dict[str, float]:
    """The stage's loss terms for `model` on one batch, as training computes them (see `distillation_loss`).

    Args:
        config: the run's configuration (loss weights).
        teachers: the stage's teachers (see `stage_teachers`).
        model: the proxy or student with one adaptor pair per teacher, on the teachers' device.
        images: [B, 3, H, W] in [0, 1], at the side both the model and the teachers see.

    Returns:
        `teacher/term` -> value for every term, and `loss` (the sum over teachers).
    """
    images = images.to(teachers.device)
    targets = {name: teachers.targets(name, images) for name in teachers.teachers}
    loss = config.loss
    _, logs = distillation_loss(
        model(images), targets, loss.alpha, loss.beta, teachers.patch_weights, loss.smooth_l1_beta
    )
    return {key: float(value) for key, value in logs.items()}


def loss_terms_table(logs: dict[str, float]) -> str:
    """A Markdown table of loss terms (`teacher/term` keys): one row per teacher, and the summed loss."""
    teachers = list(dict.fromkeys(key.split("/")[0] for key in logs if "/" in key))
    if not teachers:
        raise ValueError("no `teacher/term` keys in the logs")
    lines = ["| teacher | " + " | ".join(TERMS) + " |", "|---|" + "---:|" * len(TERMS)]
    for name in teachers:
        lines.append(f"| {name} | " + " | ".join(f"{logs[f'{name}/{term}']:.4f}" for term in TERMS) + " |")
    if "loss" in logs:
        lines.append("| **sum** | " + " | " * (len(TERMS) - 1) + f"**{logs['loss']:.4f}** |")
    return "\n".join(lines) + "\n"


def coordinate_table(raw: dict[str, Features], standardised: dict[str, Features], coordinate: int = 0) -> str:
    """A Markdown table: mean and std over a batch of one coordinate of each teacher's summary and patch
    features (patches: over every patch of every image), raw and standardised."""
    lines = [
        "| teacher | features | raw mean | raw std | standardised mean | standardised std |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, out in raw.items():
        for kind, before, after in (
            ("summary", out.summary, standardised[name].summary),
            ("patches", patch_rows(out.patches), patch_rows(standardised[name].patches)),
        ):
            if coordinate >= before.shape[-1]:
                raise ValueError(f"{name} has {before.shape[-1]} {kind} coordinates, not {coordinate + 1}")
            b, a = before[:, coordinate].float(), after[:, coordinate].float()
            lines.append(
                f"| {name} | {kind} | {b.mean():.3g} | {b.std():.3g} | {a.mean():.3g} | {a.std():.3g} |"
            )
    return "\n".join(lines) + "\n"


def model_parts(model: DistilledModel) -> dict[str, nn.Module]:
    """The backbone, then each teacher's adaptor heads (`adaptor <teacher>`)."""
    parts: dict[str, nn.Module] = {"backbone": model.backbone}
    return parts | {f"adaptor {name}": model.adaptors[adaptor_key(name)] for name in model.teacher_names}


def gradient_norms(model: DistilledModel) -> dict[str, float]:
    """L2 norms of the gradients of each of `model_parts` and of all of them (`all`: the norm
    `clip_grad_norm_` clips). Parameters without a gradient count 0."""
    norms = {}
    for label, module in model_parts(model).items():
        grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
        norms[label] = float(torch.stack(grads).norm()) if grads else 0.0
    norms["all"] = sum(v**2 for v in norms.values()) ** 0.5
    return norms


def gradient_norm_table(model: DistilledModel) -> str:
    """A Markdown table of `gradient_norms` with each part's parameter count."""
    sizes = model_parts(model) | {"all": model}
    lines = ["| part | parameters | gradient norm |", "|---|---:|---:|"]
    for label, norm in gradient_norms(model).items():
        count = sum(p.numel() for p in sizes[label].parameters())
        lines.append(f"| {label} | {count / 1e6:.3f} M | {norm:.4g} |")
    return "\n".join(lines) + "\n"
