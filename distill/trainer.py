"""One distillation stage, top to bottom: teachers, targets, model, optimiser, loop, checkpoints.

Every random choice of step `s` (which views, which resolutions, dropout) is seeded by
(seed, s), so a run resumed from its checkpoint at step s continues exactly as the uninterrupted
run would have; the model's initial weights are seeded by the seed alone, so a stage killed before its
first checkpoint starts over with the same weights.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from distill import distributed
from distill.augment import ViewTransforms, draw_transforms, transform_grid, transform_images
from distill.checkpoint import load_into, read_meta
from distill.config import (
    AugmentConfig,
    ModelConfig,
    RunConfig,
    StageConfig,
    check_batch_split,
    check_crop_cells,
    check_stage_sides,
    check_stages,
    shards_model,
)
from distill.data.images import resize
from distill.data.training_data import FixedViews, StepBatch, TrainingData
from distill.device import peak_memory_gib, pick_device
from distill.features import Features
from distill.losses import distillation_loss
from distill.metrics_log import MetricsLog, metric_records
from distill.models import DistilledModel
from distill.run_dir import RunDir
from distill.seeds import derived_seed, seeded
from distill.snapshots import StageSnapshots
from distill.stage_checkpoint import last_good_step, recovered_step, resume_optimizer, save_stage_checkpoint
from distill.stage_teachers import StageTeachers, build_stage_teachers
from distill.stages import stage_named
from distill.targets.source import StageTargets, stage_targets
from distill.targets.store import stage_store


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became nan or infinite; the last checkpoint with both finite is kept."""


def non_finite(stage: str, what: str, step: int, kept: int | None, checkpoint: Path) -> NonFiniteLoss:
    """The one-line error of a stage stopped by a nan/inf `what` at `step`, naming the checkpoint kept."""
    outcome = (
        "no checkpoint with a finite loss and weights was saved"
        if kept is None
        else f"kept the checkpoint of step {kept} (finite loss and weights) at {checkpoint}"
    )
    return NonFiniteLoss(f"{stage}: {what} became nan/inf at step {step}; stopped, {outcome}")


@dataclass
class StageResult:
    """What a finished stage leaves: its folder, final step, last logged metrics, throughput, memory."""

    folder: Path
    steps: int
    trained_steps: int  # steps run by this call: 0 when the stage was already complete
    metrics: dict[str, float]
    images_per_second: float
    peak_memory_gib: float
    teacher_dims: dict[str, tuple[int, int]]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where asked or (auto) where the device supports it; None = full fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def learning_rate(step: int, stage: StageConfig) -> float:
    """Linear warm-up to `lr`, then the stage's `schedule`: a cosine decay to zero at the last step, or
    (`wsd`) the peak held until the last `decay_fraction` of the steps, then a linear decay to zero."""
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    if stage.schedule == "wsd":
        decay_steps = max(1, round(stage.decay_fraction * stage.steps))
        decay_start = max(stage.warmup_steps, stage.steps - decay_steps)
        if step < decay_start:
            return stage.lr
        return stage.lr * max(0.0, (stage.steps - step) / max(1, stage.steps - decay_start))
    progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
    return stage.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


MODEL_STREAM = 1  # `derived_seed(seed, MODEL_STREAM)` seeds a stage's initial weights


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one step (independent of everything before it)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def step_sides(stage: StageConfig, generator: torch.Generator) -> tuple[int, int]:
    """The student's and the teachers' input sides of a step, drawn from its generator (in that order).

    The teachers' side is the student's unless the stage lists `teacher_resolutions`, then it is drawn
    independently.
    """
    side = stage.resolutions[int(torch.randint(len(stage.resolutions), (), generator=generator))]
    if stage.teacher_resolutions is None:
        return side, side
    sides = stage.teacher_sides
    return side, sides[int(torch.randint(len(sides), (), generator=generator))]


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: `weight_decay` on parameters of two or more dimensions, none on norms and
    biases."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def view_transforms(
    augment: AugmentConfig, batch: int, cells: int, generator: torch.Generator
) -> ViewTransforms | None:
    """A step's flips and grid-aligned crops (None when augmentation is off)."""
    if augment.flip == 0 and augment.crop == 0:
        return None
    min_cells = augment.min_crop_cells if augment.crop > 0 else 1
    return draw_transforms(batch, cells, generator, augment.flip, augment.crop, min_cells)


def transformed(images: Tensor, transforms: ViewTransforms | None, side: int) -> Tensor:
    """Images [B, 3, R, R] in [0, 1] at `side`, through the step's transforms when there are any."""
    return resize(images, side) if transforms is None else transform_images(images, transforms, side)


def fits_on_device(views: Tensor, targets: dict, device: torch.device, share: float = 0.3) -> bool:
    """Whether the views and cached targets take less than `share` of the device's free memory."""
    size = views.numel() + sum(f.nbytes for f in targets.values())
    return size < share * torch.cuda.mem_get_info(device)[0]


def finished_stage(folder: Path, checkpoint: Path, device: torch.device) -> StageResult:
    """What a stage with nothing left to train reports: its step, what it logged last, its teachers' dims
    (read from the checkpoint: no teacher is built and no feature cache is touched)."""
    meta = read_meta(checkpoint)
    dims = {name: tuple(pair) for name, pair in meta["teachers"].items()}
    metrics = (metric_records(folder) or [{}])[-1]
    return StageResult(folder, meta["step"], 0, metrics, 0.0, peak_memory_gib(device), dims)


def on_device(
    data: TrainingData, targets: StageTargets | None, device: torch.device
) -> tuple[TrainingData, StageTargets | None]:
    """Fixed views and their cached targets moved into the GPU's memory when they fit there
    (`fits_on_device`); anything else as it is."""
    if (
        isinstance(data, FixedViews)
        and targets is not None
        and device.type == "cuda"
        and fits_on_device(data.views, targets, device)
    ):
        return data.to(device), {key: features.to(device) for key, features in targets.items()}
    return data, targets


def stage_model(
    config: RunConfig,
    stage: str,
    model_config: ModelConfig,
    run: RunDir,
    dims: dict[str, tuple[int, int]],
    device: torch.device,
    data: TrainingData,
    resuming: bool,
) -> DistilledModel:
    """The stage's model on `device`: initial weights seeded by the seed alone (the same whatever ran before,
    such as a skipped warm-up), then those of the checkpoint it resumes or starts from; its sides and crops
    checked against its stride (also here for callers that skip `run_stages`)."""
    with seeded(derived_seed(config.train.seed, MODEL_STREAM)):
        model = DistilledModel(model_config, dims).to(device)
    check_stage_sides(config, stage, model.stride)
    if not data.augments:
        check_crop_cells(config, model.stride, data.side)
    starts_from = stage_named(stage).starts_from
    if starts_from is not None and not resuming:
        load_into(model, run.checkpoint(starts_from))
    if resuming:
        load_into(model, run.checkpoint(stage))
    if config.train.activation_checkpointing:
        model.backbone.set_grad_checkpointing(True)
    return model


def stage_optimizer(
    model: nn.Module,
    stage: str,
    cfg: StageConfig,
    ctx: distributed.Context,
    sharded: bool,
    resume: Path | None,
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model wrapped for this process (DDP, or FSDP2 when `sharded`) and its AdamW optimizer, restored
    from the checkpoint `resume` when given."""
    wrapped = distributed.wrap(model, ctx, fsdp=sharded)  # before the optimizer: FSDP2 swaps the parameters
    optimizer = torch.optim.AdamW(optimizer_groups(wrapped, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    if resume is not None:
        resume_optimizer(resume, wrapped, optimizer, sharded, stage)
    return wrapped, optimizer


def step_targets(
    targets: StageTargets | None,
    teachers: StageTeachers,
    batch: StepBatch,
    full: Tensor,
    transforms: ViewTransforms | None,
    teacher_side: int,
) -> tuple[dict[str, Features], Tensor | None]:
    """A step's targets per teacher, and which of their summaries are valid (None: all). Targets of whole
    views have their grids transformed like the images; online teachers see the transformed views
    themselves, all at once per step."""
    device = full.device
    if targets is None:
        teacher_view = transformed(full, transforms, teacher_side)
        return {n: teachers.targets(n, teacher_view) for n in teachers.teachers}, None
    taken = {n: targets[(n, teacher_side)].take(batch.index, device) for n in teachers.teachers}
    if transforms is None:
        return taken, None
    grids = {n: Features(t.summary, transform_grid(t.patches, transforms)) for n, t in taken.items()}
    return grids, transforms.summary_valid.to(device)


def check_finite(first_bad: Tensor, stage: str, checkpoint: Path, ctx: distributed.Context) -> None:
    """Raise `NonFiniteLoss` if a step's loss was nan/inf (`first_bad` >= 0: read here, a sync); a checkpoint
    of that step holds the weights that gave it and is dropped."""
    bad_step = int(first_bad)
    if bad_step >= 0:
        kept = last_good_step(checkpoint, bad_step, ctx)
        raise non_finite(stage, "loss", bad_step, kept, checkpoint)


def step_loss(
    config: RunConfig,
    forward: nn.Module,
    view: tuple[Tensor, ViewTransforms | None, int],
    targets: dict[str, Features],
    summary_mask: Tensor | None,
    patch_weights: dict[str, float],
    amp: torch.dtype | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The distillation loss of the model's predictions on a step's images at the student's side (`view`:
    images, transforms, side; transformed and predicted under autocast at `amp`), and its logs."""
    images, transforms, side = view
    with torch.autocast(images.device.type, dtype=amp, enabled=amp is not None):
        predictions = forward(transformed(images, transforms, side))
    loss = config.loss
    return distillation_loss(
        predictions, targets, loss.alpha, loss.beta, patch_weights, loss.smooth_l1_beta, summary_mask
    )


def optimize(loss: Tensor, optimizer: torch.optim.Optimizer, model: nn.Module, grad_clip: float) -> Tensor:
    """Backpropagate `loss`, clip the gradients to norm `grad_clip` and step; the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return grad_norm


def logged(
    logs: dict[str, Tensor],
    ctx: distributed.Context,
    log: MetricsLog | None,
    bar: tqdm,
    values: dict[str, float | Tensor],
) -> dict[str, float] | None:
    """Average a step's logs over the processes (a collective: every process takes part); on the main process
    write them and `values` (a tensor read here, a sync) to the metrics log and the progress bar, and return
    them (None elsewhere)."""
    averaged = distributed.mean_logs(logs, ctx)
    if not ctx.is_main:
        return None
    metrics = {k: float(v) for k, v in averaged.items()}
    metrics.update({k: float(v) if isinstance(v, Tensor) else v for k, v in values.items()})
    log.write(metrics)
    bar.set_postfix({k.split("/")[0]: f"{v:.3f}" for k, v in metrics.items() if k.endswith("/total")})
    return metrics


def save_or_stop(
    checkpoint: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict,
    ctx: distributed.Context,
    sharded: bool,
) -> None:
    """Save the stage's checkpoint of step `meta["step"]`; raise `NonFiniteLoss` instead if its weights hold a
    nan/inf (the last checkpoint with finite weights is kept)."""
    if not save_stage_checkpoint(checkpoint, model, optimizer, meta, ctx, sharded):
        kept = last_good_step(checkpoint, meta["step"], ctx)
        raise non_finite(meta["stage"], "weights", meta["step"], kept, checkpoint)


def stage_snapshots(
    run: RunDir,
    stage: str,
    cfg: StageConfig,
    every: int,
    start: int,
    teachers: StageTeachers,
    model: nn.Module,
) -> StageSnapshots | None:
    """The stage's feature snapshots every `every` steps (0: none; only the main process of an unsharded model
    takes them), resumed at step `start`."""
    return StageSnapshots.start(run.snapshots(stage), every, cfg.steps, start, max(cfg.resolutions),
                                max(cfg.teacher_sides), teachers, model)  # fmt: skip


def run_stage(config: RunConfig, stage: str, run_dir: str | Path, data: TrainingData) -> StageResult:
    """Train one stage of the pipeline into `run_dir/<stage>`, resuming from its checkpoint if present.

    Args:
        config: the run's configuration.
        stage: `proxy`, `student`, `multires` or `direct`.
        run_dir: the run folder (a stage reads the checkpoints of `Stage.reads` from it).
        data: fixed views in memory (their targets cached when `train.feature_cache`) or a stream.
    """
    check_stages(config, [stage])
    cfg, train = config.stages[stage], config.train
    run = RunDir(run_dir)
    folder, checkpoint = run.stage(stage), run.checkpoint(stage)
    ctx = distributed.context()
    device = ctx.device if ctx.world_size > 1 else pick_device(train.device)
    recovered = recovered_step(checkpoint, cfg.steps, ctx)  # after a kill at any instant, or damage
    if recovered is not None and recovered >= cfg.steps:
        return finished_stage(folder, checkpoint, device)
    amp = autocast_dtype(train.precision, device)
    model_config = getattr(config, stage_named(stage).model)
    check_batch_split(config, stage, ctx.world_size)  # also in `run_stages`, before the run folder is written

    store = stage_store(config, stage, data)
    stored = None if store is None else store.take
    teachers = build_stage_teachers(config, stage, run_dir, device, data, ctx.is_main, amp, stored)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    targets = stage_targets(config, stage, run, data, teachers, ctx, store)
    data, targets = on_device(data, targets, device)
    resuming, start = recovered is not None, recovered or 0
    model = stage_model(config, stage, model_config, run, teachers.dims(), device, data, resuming)
    cells = data.side // model.stride  # crops align to the model's patch grid at the view side
    sharded = shards_model(config, stage, ctx.world_size)
    wrapped, optimizer = stage_optimizer(model, stage, cfg, ctx, sharded, checkpoint if resuming else None)
    forward = torch.compile(wrapped) if train.compile else wrapped

    folder.mkdir(parents=True, exist_ok=True)
    snapshots = stage_snapshots(run, stage, cfg, train.snapshot_every if ctx.is_main and not sharded else 0,
                                start, teachers, model)  # fmt: skip
    log = MetricsLog(folder, resume_step=start) if ctx.is_main else None  # drops steps to be run again
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=stage, disable=not ctx.is_main)
    batches = data.batches(cfg.batch_size, train.seed, start, cfg.steps, ctx.rank, ctx.world_size)
    metrics: dict[str, float] = {}
    timer, images_seen = time.perf_counter(), 0
    first_bad = torch.tensor(-1, device=device)
    for step, batch in zip(bar, batches, strict=True):
        rng = step_generator(train.seed, step)
        side, teacher_side = step_sides(cfg, rng)
        torch.manual_seed(train.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)

        full = batch.images.to(device).float().div(255)
        transforms = None if data.augments else view_transforms(config.augment, len(full), cells, rng)
        targets_now, summary_mask = step_targets(targets, teachers, batch, full, transforms, teacher_side)
        view = (full, transforms, side)
        loss, logs = step_loss(config, forward, view, targets_now, summary_mask, teachers.patch_weights, amp)
        # remember the first non-finite step on the device; it is read (a sync) only at log/checkpoint steps
        first_bad = torch.where(torch.isfinite(loss) | (first_bad >= 0), first_bad, step)
        grad_norm = optimize(loss, optimizer, wrapped, train.grad_clip)
        images_seen += cfg.batch_size
        if snapshots is not None:  # before the step's checkpoint, so a recovered one implies its snapshots
            snapshots.after_step(step + 1, model)

        last = step + 1 == cfg.steps
        if step % train.log_every == 0 or last or (step + 1) % train.checkpoint_every == 0:
            check_finite(first_bad, stage, checkpoint, ctx)
        if step % train.log_every == 0 or last:
            rate = images_seen / max(time.perf_counter() - timer, 1e-9)
            values = {"step": step, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                      "side": side, "teacher_side": teacher_side, "images_per_second": rate}  # fmt: skip
            metrics = logged(logs, ctx, log, bar, values) or metrics
        if (step + 1) % train.checkpoint_every == 0 or last:
            meta = {"step": step + 1, "stage": stage, "teachers": teachers.dims(),
                    "model_config": dataclasses.asdict(model_config)}  # fmt: skip
            save_or_stop(checkpoint, wrapped, optimizer, meta, ctx, sharded)
    throughput = images_seen / max(time.perf_counter() - timer, 1e-9)
    final_step = read_meta(checkpoint)["step"] if run.has_checkpoint(stage) else start
    return StageResult(folder, final_step, final_step - start, metrics, throughput, peak_memory_gib(device),
                       teachers.dims())  # fmt: skip
