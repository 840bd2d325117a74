"""`eupe pipeline --dry-run`: what a run would build, compute and hold, sized without weights or downloads.

Every model is built on the meta device (shapes, no storage): parameters are counted from it, teacher
dims read off it, and forward FLOPs counted by `distill.flops` (the benchmarks' counter), which works on
meta tensors. A trained step is taken as 3x the forward (backward ~ 2x forward; measured 3.00x for the
paper's proxy on meta), plus each teacher's forward. The data source is checked on disk, cheaply.
Anything that would stop or sink the run is collected as a problem line rather than raised.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from distill.backbones import TIMM_ALIASES, create_timm_backbone, input_granularity, prefix_tokens
from distill.checkpoint import read_meta
from distill.config import ConfigError, ModelConfig, RunConfig, check_batch_split, check_stages, shards_model
from distill.data.folder import is_image_file
from distill.data.shards import resolve_shards
from distill.data.views import DEFAULT_MIX, MIXABLE, missing_sources
from distill.flops import forward_flops
from distill.models import DistilledModel
from distill.pipeline import view_resolution
from distill.run_dir import existing_checkpoint
from distill.specs import parse_spec
from distill.stages import EXPERTS, stage_named
from distill.teachers.registry import expert_spec, resolve, teacher_factory

GIB = 2**30
TRAINED_BYTES_PER_PARAM = 16  # fp32 weights, fp32 grads, AdamW's two fp32 moments
ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER = 34  # Korthikanti et al. 2022, 16-bit, fused attention, no recompute
CHECKPOINTED_BYTES_PER_TOKEN_WIDTH_LAYER = 2  # with activation checkpointing: each block's 16-bit input
FOLDER_COUNT_CAP = 1000  # stop counting a folder's images here
# In-place ops of weight initialisers: shape-preserving, so skipping them on meta tensors changes nothing.
INIT_FILLS = frozenset(
    ("uniform_", "normal_", "erfinv_", "clamp_", "mul_", "add_", "sub_", "div_", "fill_", "zero_", "copy_")
)
GENERATED_SOURCES = (*MIXABLE, "mixed")  # the sources `build_views` makes itself (no folder or shards)


@dataclass
class MetaModel:
    """A model built on the meta device and the forward the plan counts.

    Attributes:
        label: what it is (timm name, expert network, config arch).
        module: the meta module.
        run: the forward that gives its features (what a step spends on it).
        dims: (summary_dim, patch_dim) of its features.
        multiple: its input side granularity (sides are rounded to it, as teachers do).
        flops: side -> one image's forward FLOPs, filled on first use.
    """

    label: str
    module: nn.Module
    run: Callable[[Tensor], object]
    dims: tuple[int, int]
    multiple: int = 1
    flops: dict[int, float] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return count_params(self.module)

    def forward_flops(self, side: int) -> float:
        """FLOPs of one image's forward at `side` (rounded to `multiple`), counted once per side.

        A ViT's blocks are alike, so its forward is counted with 1 and 2 of them and extrapolated
        to its depth (meta ops run slowly, in Python: this makes a 48-block ViT ~15x quicker).
        """
        side = max(self.multiple, round(side / self.multiple) * self.multiple)
        if side not in self.flops:
            owner = next((m for m in self.module.modules() if uniform_blocks(m)), None)
            if owner is None:
                self.flops[side] = self.count(side)
            else:
                blocks = owner.blocks
                try:
                    owner.blocks = blocks[:1]
                    one = self.count(side)
                    owner.blocks = blocks[:2]
                    two = self.count(side)
                finally:
                    owner.blocks = blocks
                self.flops[side] = one + (len(blocks) - 1) * (two - one)
        return self.flops[side]

    def count(self, side: int) -> float:
        """FLOPs of one image's forward at `side`, counted on the meta device."""
        return forward_flops(self.run, torch.empty(1, 3, side, side, device="meta"))


def uniform_blocks(module: nn.Module) -> bool:
    """True if `module.blocks` is a sequence of at least 3 blocks of one type and size (a ViT's)."""
    blocks = getattr(module, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) < 3:
        return False
    kinds = {(type(b), count_params(b)) for b in blocks}
    return len(kinds) == 1


@dataclass
class Memory:
    """Per-GPU bytes of one stage; `activations` is None where the ViT formula does not apply."""

    trained: float
    teachers: float
    activations: float | None
    sharded: bool

    @property
    def total(self) -> float:
        return self.trained + self.teachers + (self.activations or 0.0)


@dataclass
class StagePlan:
    """One stage: what it trains on whom, at what size, for how many FLOPs and how much memory."""

    name: str
    model: str
    teachers: list[str]
    backbone_params: int
    adaptor_params: int
    batch_size: int
    per_gpu_batch: int
    resolutions: list[int]
    teacher_sides: list[int]
    steps: int
    epochs: float | None  # None for a stream (its corpus is not counted in full)
    train_flops: float  # per image: 3x the trained model's forward at its largest side
    teacher_flops: float  # per image: every teacher's forward at its largest side
    memory: Memory

    @property
    def step_flops(self) -> float:
        return self.batch_size * (self.train_flops + self.teacher_flops)

    @property
    def total_flops(self) -> float:
        return self.steps * self.step_flops


@dataclass
class ModelSummary:
    """A model of the run as the plan lists it."""

    role: str
    label: str
    params: int
    dims: tuple[int, int] | None = None


@dataclass
class RunPlan:
    """What `plan_run` found: the models, the data, each stage, and every problem."""

    world_size: int
    gpu_memory_gib: float
    fsdp: bool
    models: list[ModelSummary]
    data: list[str]
    stages: list[StagePlan]
    problems: list[str]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SkipMetaFills(TorchFunctionMode):
    """In-place fills of meta tensors (weight init) return at once: they hold no values to fill, and their
    meta kernels run in Python (timm's init of a 1.8B ViT took seconds of a plan)."""

    def __torch_function__(
        self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by keyword
        if getattr(func, "__name__", None) in INIT_FILLS and isinstance(target, Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` under the meta device; tensors it made on the CPU regardless (buffers) moved there too."""
    with torch.device("meta"), SkipMetaFills():
        return build().to("meta")


def timm_teacher(name: str) -> MetaModel:
    """A timm teacher (name, alias or `timm:<name>`) as `TimmTeacher` builds it, without weights."""
    name = name.removeprefix("timm:")
    model = on_meta(lambda: create_timm_backbone(name, "random"))
    dim = int(model.num_features)
    return MetaModel(
        TIMM_ALIASES.get(name, name), model, model.forward_features, (dim, dim), input_granularity(model)
    )


def expert_teacher(name: str) -> MetaModel:
    """An offline expert: its bare network (`ExpertSpec.network`, no weights) and its teacher class's dims."""
    net = on_meta(resolve(expert_spec(name).network))
    teacher_class = typing.get_type_hints(teacher_factory(name))["return"]
    label = type(net).__name__
    return MetaModel(label, net, net, (teacher_class.summary_dim, teacher_class.patch_dim))


def distilled_model(config: ModelConfig, dims: dict[str, tuple[int, int]]) -> DistilledModel:
    return on_meta(lambda: DistilledModel(config, dims))


def as_teacher(model: DistilledModel, label: str) -> MetaModel:
    """A distilled model as `DistilledTeacher` runs it: backbone features only."""
    return MetaModel(label, model, model.features, (model.dim, model.dim), model.stride)


def configured_teacher(name: str) -> MetaModel:
    """A config's teacher: an expert, a distilled checkpoint folder, or a timm model."""
    spec = parse_spec(name)
    if spec.kind == "expert":
        return expert_teacher(name)
    if spec.kind == "folder":
        meta = read_meta(existing_checkpoint(name))
        dims = {k: tuple(v) for k, v in meta["teachers"].items()}
        return as_teacher(distilled_model(ModelConfig(**meta["model_config"]), dims), name)
    return timm_teacher(spec.name)


def teacher_bytes_per_param(precision: str) -> int:
    """Frozen teachers on a GPU: bf16 weights unless the run is fp32 (see `build_stage_teachers`)."""
    return 4 if precision == "fp32" else 2


def activation_bytes(
    backbone: nn.Module, side: int, batch: int, precision: str, checkpointing: bool = False
) -> float | None:
    """Activations a ViT keeps for backward: 34 · tokens · batch · width · depth bytes (16-bit).

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models") give
    s·b·h·(34 + 5·a·s/h) bytes per layer without recomputation; fused attention (SDPA) drops the
    a·s² score term. With activation checkpointing each block keeps only its 16-bit input (2 bytes per
    token and width) and one block's full activations live at a time. fp32 doubles it. Adaptor heads and
    the loss are left out. None for non-ViTs.
    """
    blocks, width = getattr(backbone, "blocks", None), getattr(backbone, "embed_dim", None)
    if blocks is None or width is None:
        return None
    tokens = (side // input_granularity(backbone)) ** 2 + prefix_tokens(backbone)
    scale = 2 if precision == "fp32" else 1
    per_layer = scale * tokens * batch * width
    if checkpointing:
        return per_layer * (
            CHECKPOINTED_BYTES_PER_TOKEN_WIDTH_LAYER * len(blocks) + ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER
        )
    return per_layer * ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER * len(blocks)


def check_data(config: RunConfig, stages: list[str], host_memory_gib: float) -> tuple[list[str], list[str]]:
    """Lines describing the data source and the view store, and the problems found."""
    data, problems = config.data, []
    kind, _, argument = data.source.partition(":")
    if kind in GENERATED_SOURCES and not argument:
        missing = missing_sources((data.mix or DEFAULT_MIX) if kind == "mixed" else {kind: 1.0})
        lines = [f"source {data.source}: generated" + ("" if missing else ", ok")]
        for name, why in missing.items():
            if kind == "mixed":
                lines.append(f"  {name}'s share goes to generated scenes: {why}")
            else:
                problems.append(f"data.source: {why}")
    elif kind == "folder" and argument:
        lines, problems = check_folder(Path(argument), data.num_images)
    elif kind == "shards" and argument:
        try:
            lines = [f"source {data.source}: {len(resolve_shards(argument))} shard file(s)"]
        except FileNotFoundError as error:
            lines, problems = [f"source {data.source}: not found"], [f"data.source: {error}"]
    else:
        lines, problems = [f"source {data.source}: unknown"], [f"data.source: unknown source '{data.source}'"]
    if data.stream:
        return [*lines, "streamed from disk (no view store)"], problems
    side = view_resolution(config, stages)
    store = data.num_images * 3 * side * side  # uint8 views, stacked in each process's memory
    lines.append(f"views: {data.num_images:,} at {side} px = {store / GIB:,.2f} GiB in each process's memory")
    if store > host_memory_gib * GIB:
        problems.append(
            f"the view store ({store / GIB:,.0f} GiB: data.num_images x 3 x {side}² uint8) exceeds "
            f"{host_memory_gib:,.0f} GiB of host memory per process"
        )
    return lines, problems


def check_folder(root: Path, wanted: int) -> tuple[list[str], list[str]]:
    """Count a folder's images up to `FOLDER_COUNT_CAP`; problems for a missing or short folder."""
    if not root.is_dir():
        return [f"source folder:{root}: not found"], [f"data.source: image folder not found: {root}"]
    found = sum(1 for _ in itertools.islice(filter(is_image_file, root.rglob("*")), FOLDER_COUNT_CAP))
    shown = f"≥{found}" if found == FOLDER_COUNT_CAP else str(found)
    lines = [f"source folder:{root}: {shown} images"]
    if found == 0:
        return lines, [f"data.source: no JPEG/PNG/WebP images in {root}"]
    if found < min(wanted, FOLDER_COUNT_CAP):
        return lines, [f"data.num_images is {wanted:,} but {root} holds {found} images"]
    return lines, []


class MetaModels:
    """The run's models on the meta device, each built once: teachers, and each stage's trained model."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.teachers: dict[str, MetaModel] = {}
        self.trained: dict[tuple[str, str], DistilledModel] = {}
        self.problems: list[str] = []
        for spec in config.teachers:
            try:
                self.teachers[spec.name] = configured_teacher(spec.name)
            except (ValueError, KeyError, RuntimeError, FileNotFoundError) as error:
                self.problems.append(f"teacher '{spec.name}' cannot be built: {error.args[0]}")

    def stage_teachers(self, stage: str) -> dict[str, MetaModel]:
        """The teachers of `stage`: the experts, or the model trained by the stage that teaches it."""
        taught_by = stage_named(stage).taught_by
        if taught_by == EXPERTS:
            return self.teachers
        return {taught_by: as_teacher(self.model(taught_by), f"{taught_by} checkpoint")}

    def model(self, stage: str) -> DistilledModel:
        """The model `stage` trains, with one adaptor per teacher of the stage."""
        spec = stage_named(stage)
        key = (spec.model, spec.taught_by)
        if key not in self.trained:
            dims = {name: teacher.dims for name, teacher in self.stage_teachers(stage).items()}
            self.trained[key] = distilled_model(getattr(self.config, spec.model), dims)
        return self.trained[key]

    def backbone_params(self, role: str) -> int:
        """Parameters of the `proxy` or `student` backbone (from a model already built, if any)."""
        built = [model for (kind, _), model in self.trained.items() if kind == role]
        model = built[0] if built else distilled_model(getattr(self.config, role), {})
        return count_params(model.backbone)


def plan_stage(
    config: RunConfig, models: MetaModels, stage: str, world_size: int
) -> tuple[StagePlan, list[str]]:
    """One stage's plan and its problems."""
    cfg, spec, problems = config.stages[stage], stage_named(stage), []
    try:
        check_batch_split(config, stage, world_size)
    except ConfigError as error:
        problems.append(str(error))
    model, teachers = models.model(stage), models.stage_teachers(stage)
    off_grid = [side for side in cfg.resolutions if side % model.stride]
    if off_grid:
        problems.append(
            f"stages.{stage}.resolutions {off_grid} are not multiples of its stride {model.stride}"
        )
    side, teacher_side = max(cfg.resolutions), max(cfg.teacher_sides)
    trained = MetaModel(spec.model, model, model, (model.dim, model.dim), model.stride)
    resolution = {s.name: s.resolution for s in config.teachers} if spec.taught_by == EXPERTS else {}
    teacher_flops = sum(t.forward_flops(resolution.get(n) or teacher_side) for n, t in teachers.items())
    precision = config.train.precision
    sharded = shards_model(config, stage, world_size)
    memory = Memory(
        trained=TRAINED_BYTES_PER_PARAM * trained.params / (world_size if sharded else 1),
        teachers=teacher_bytes_per_param(precision) * sum(t.params for t in teachers.values()),
        activations=activation_bytes(
            model.backbone,
            side,
            -(-cfg.batch_size // world_size),
            precision,
            config.train.activation_checkpointing,
        ),
        sharded=sharded,
    )
    backbone = count_params(model.backbone)
    plan = StagePlan(
        name=stage,
        model=spec.model,
        teachers=list(teachers),
        backbone_params=backbone,
        adaptor_params=trained.params - backbone,
        batch_size=cfg.batch_size,
        per_gpu_batch=cfg.batch_size // world_size,
        resolutions=cfg.resolutions,
        teacher_sides=cfg.teacher_sides,
        steps=cfg.steps,
        epochs=None if config.data.stream else cfg.steps * cfg.batch_size / config.data.num_images,
        train_flops=3 * trained.forward_flops(side),
        teacher_flops=teacher_flops,
        memory=memory,
    )
    return plan, problems


def plan_run(
    config: RunConfig,
    stages: list[str],
    world_size: int,
    gpu_memory_gib: float = 80.0,
    host_memory_gib: float = 1024.0,
) -> RunPlan:
    """Size a run of `stages` on `world_size` GPUs of `gpu_memory_gib` each, allocating no weights.

    `host_memory_gib` bounds the fixed view store each process holds. Problems (a missing data source,
    a batch that does not split, a stage that does not fit) are collected in `RunPlan.problems`.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    check_stages(config, stages)
    models = MetaModels(config)
    data, problems = check_data(config, stages, host_memory_gib)
    problems = models.problems + problems
    stage_plans = []
    if len(models.teachers) == len(config.teachers):
        for stage in stages:
            plan, found = plan_stage(config, models, stage, world_size)
            stage_plans.append(plan)
            problems += found
            if plan.memory.total > gpu_memory_gib * GIB:
                problems.append(
                    f"stage {stage} needs {plan.memory.total / GIB:.1f} GiB per GPU, "
                    f"more than {gpu_memory_gib:g} GiB: does not fit"
                )
    roles = ("proxy", "student")
    summaries = [ModelSummary(r, getattr(config, r).arch, models.backbone_params(r)) for r in roles]
    summaries += [ModelSummary("teacher", t.label, t.params, t.dims) for t in models.teachers.values()]
    return RunPlan(world_size, gpu_memory_gib, config.train.fsdp, summaries, data, stage_plans, problems)


def format_count(n: float) -> str:
    """Parameters in B, M or K."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_flops(n: float) -> str:
    """FLOPs in the largest unit that keeps the number >= 1 (GFLOP up to ZFLOP)."""
    units = (("ZFLOP", 1e21), ("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12))
    return next((f"{n / s:.2f} {u}" for u, s in units if n >= s), f"{n / 1e9:.2f} GFLOP")


def format_memory(memory: Memory, world_size: int) -> str:
    shard = f" (sharded over {world_size})" if memory.sharded else " (replicated)"
    activations = "n/a (not a ViT)" if memory.activations is None else f"{memory.activations / GIB:.1f}"
    return (
        f"model+grads+AdamW {memory.trained / GIB:.1f}{shard} + teachers {memory.teachers / GIB:.1f} "
        f"+ activations {activations} = {memory.total / GIB:.1f} GiB"
    )


def format_stage(stage: StagePlan, plan: RunPlan) -> list[str]:
    sides = "/".join(map(str, stage.resolutions))
    fit = "fits" if stage.memory.total <= plan.gpu_memory_gib * GIB else "DOES NOT FIT"
    images = f"{format_count(stage.steps * stage.batch_size)} images"
    seen = images if stage.epochs is None else f"{stage.epochs:.2f} epochs"
    return [
        f"stage {stage.name}: trains the {stage.model} ({format_count(stage.backbone_params)} backbone + "
        f"{format_count(stage.adaptor_params)} adaptors) on {', '.join(stage.teachers)}",
        f"  batch {stage.batch_size} ({stage.per_gpu_batch} per GPU), sides {sides}, teachers at "
        f"{'/'.join(map(str, stage.teacher_sides))}, {stage.steps:,} steps = {seen}",
        f"  FLOPs per image: train {format_flops(stage.train_flops)} (3x fwd at {max(stage.resolutions)}) "
        f"+ teachers {format_flops(stage.teacher_flops)}; per step {format_flops(stage.step_flops)}, "
        f"stage {format_flops(stage.total_flops)}",
        f"  memory per GPU: {format_memory(stage.memory, plan.world_size)} of {plan.gpu_memory_gib:g}: {fit}",
    ]


def format_plan(plan: RunPlan) -> str:
    """A readable multi-line plan, ending with its problems."""
    layout = "FSDP for the proxy" if plan.fsdp and plan.world_size > 1 else "replicated (DDP)"
    lines = [f"plan: {plan.world_size} GPU(s) of {plan.gpu_memory_gib:g} GiB, {layout}", "models:"]
    for m in plan.models:
        dims = f", dims {m.dims[0]}/{m.dims[1]}" if m.dims else " backbone"
        lines.append(f"  {m.role:8s} {m.label}: {format_count(m.params)} params{dims}")
    lines += ["data:"] + [f"  {line}" for line in plan.data]
    for stage in plan.stages:
        lines += format_stage(stage, plan)
    if plan.stages:
        lines.append(f"total: {format_flops(sum(s.total_flops for s in plan.stages))}")
    lines += ["problems:"] + [f"  - {p}" for p in plan.problems] if plan.problems else ["no problems found"]
    return "\n".join(lines)
