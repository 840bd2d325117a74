"""Run configuration: dataclasses filled from YAML, with `key.sub=value` command-line overrides.

An unknown key, a value of the wrong type, a non-finite number or one of the wrong sign is a one-line
`ConfigError` naming the key, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.stages import STAGE_NAMES, stage_named

CONFIG_DIR = Path(__file__).with_name("configs")  # a link to the repository's configs/, shipped in the wheel


class ConfigError(ValueError):
    """A bad configuration key or value (the message names it)."""


class ConfigLoader(yaml.SafeLoader):
    """YAML as configs are written: PyYAML's YAML 1.1 rules, except that a float needs no dot (`1e-3`,
    `5E+2` are floats, as in YAML 1.2 and Python, not strings)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


MAX_NODES = 100_000  # values a config may expand to through YAML aliases (an alias bomb expands to billions)


def expanded_nodes(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `node` stands for once its aliases are expanded (`sizes` memoises shared nodes).

    Raises:
        ConfigError: an alias refers to a node that contains it (a recursive structure).
    """
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise ConfigError("a YAML alias refers to a node that contains it (a recursive config)")
    open_.add(id(node))
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    sizes[id(node)] = 1 + sum(expanded_nodes(child, sizes, open_) for child in children)
    open_.discard(id(node))
    return sizes[id(node)]


def parse_yaml(text: str) -> Any:
    """A YAML document or scalar, read by `ConfigLoader` (a SafeLoader).

    Raises:
        ConfigError: its aliases expand it to more than `MAX_NODES` values (checked on the node graph,
            before anything is built), or one refers to a node containing it.
    """
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_nodes(node, {}, set())
        if size > MAX_NODES:
            raise ConfigError(f"YAML aliases expand the config to {size:,} values (at most {MAX_NODES:,}); "
                              "write the values out")  # fmt: skip
        return loader.construct_document(node)
    finally:
        loader.dispose()


@dataclass
class TeacherConfig:
    """One teacher of a stage.

    Attributes:
        name: an expert (`semantic`, `text`, `edges`), `timm:<model>` or a short timm alias.
        resolution: square side the teacher sees; None = the training view's size.
        weights: for timm teachers: pretrained (hub), random, or file.
        checkpoint: local weight file for weights=file.
        patch_weight: the optional gamma on this teacher's patch terms (1 = the paper's default).
    """

    name: str
    resolution: int | None = None
    weights: str = "pretrained"
    checkpoint: str | None = None
    patch_weight: float = 1.0


@dataclass
class ModelConfig:
    """A distilled backbone (proxy or student): any timm architecture plus adaptor heads.

    Attributes:
        arch: timm model name (without pretrained tag).
        kwargs: extra `timm.create_model` arguments (e.g. embed_dim, depth, reg_tokens).
        adaptor_hidden: hidden width of every adaptor MLP.
    """

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    adaptor_hidden: int = 1024


@dataclass
class DataConfig:
    """Training images.

    Attributes:
        source: `scenes` (generated), `photos` (random crops of the bundled training photos, never of
            the held-out ones), `fashion` (Fashion-MNIST's train split, unlabelled), `leaves` (dead-leaves
            images) and `noise` (1/f spectral noise) with natural statistics, `stamps` (Tux Paint's
            photographed objects pasted on photo crops and dead leaves), `mixed` (a mixture of those),
            `folder:<path>` or `shards:<glob>`.
        num_images: size of the fixed view set (what the feature cache holds); unused when streaming.
        seed: seed of the generator and of view sampling.
        mix: `mixed`'s share of each source, e.g. {scenes: 0.5, photos: 0.25, fashion: 0.25}; None = 3/4
            scenes and 1/4 photos. Without Fashion-MNIST or the stamps installed, their share goes to scenes
            (with a warning).
        stream: stream a `folder:` or `shards:` source from disk (decoded, randomly cropped by
            `augment.scale` and flipped by `augment.flip` in DataLoader workers; teachers run online)
            instead of holding `num_images` fixed views in memory.
        workers: DataLoader worker processes of a stream (0 = decode in the training process).
        store: a teacher-feature store of this source (`eupe cache build`): the stages the experts teach
            read their targets from it by sample id instead of running the teachers; the stream then
            gives centred views, flipped and cropped with their target grids by `augment.flip`/`crop`.
    """

    source: str = "mixed"
    num_images: int = 2048
    seed: int = 0
    mix: dict[str, float] | None = None
    stream: bool = False
    workers: int = 2
    store: str | None = None


@dataclass
class StageConfig:
    """Hyper-parameters of one stage.

    Attributes:
        steps: optimisation steps.
        batch_size: global batch size (split over processes under DDP).
        lr: peak learning rate.
        warmup_steps: linear warm-up steps before the decay.
        schedule: after warm-up, `cosine` (decay to zero over the remaining steps) or `wsd` (warm-up,
            stable, decay: the peak rate held, then a linear decay to zero over the last `decay_fraction`
            of the steps).
        decay_fraction: the share of a `wsd` stage's steps spent decaying (0 < f <= 1).
        resolutions: student input sides; more than one = a pyramid, drawn per step.
        teacher_resolutions: teacher input sides, drawn independently per step (None = same as student's).
        weight_decay: AdamW weight decay.
    """

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    resolutions: list[int] = field(default_factory=lambda: [128])
    teacher_resolutions: list[int] | None = None
    weight_decay: float = 0.05

    @property
    def teacher_sides(self) -> list[int]:
        """The sides the teachers see: `teacher_resolutions`, else the student's `resolutions`."""
        return self.teacher_resolutions or self.resolutions


@dataclass
class LossConfig:
    """The paper's loss: cos(summary) + alpha cos(patches) + beta smoothL1(patches), per teacher."""

    alpha: float = 0.9
    beta: float = 0.1
    smooth_l1_beta: float = 1.0


@dataclass
class NormConfig:
    """Teacher target standardisation: `standard` (per coordinate) or `phi-s` (RADIOv2.5's PHI-S)."""

    method: str = "standard"
    warmup_batches: int = 20


@dataclass
class AugmentConfig:
    """Feature-consistent augmentation of the fixed views and their cached targets (see distill.augment).

    Attributes:
        flip: probability of a horizontal flip of a view and of its teacher grids.
        crop: probability of a square crop aligned to the student's patch grid, resized to the training
            side; the crop's teacher grids are resampled over the same region, and its summary terms
            are skipped (a cached summary describes the whole view).
        min_crop_cells: the smallest crop side, in the student's patch cells at the view resolution.
        scale: a stream's random-resized crop: the range of the crop's share of the image's area
            (None = centred square views); fixed views use `crop` instead.
    """

    flip: float = 0.0
    crop: float = 0.0
    min_crop_cells: int = 5
    scale: list[float] | None = field(default_factory=lambda: [0.35, 1.0])


@dataclass
class TrainConfig:
    """Loop settings shared by every stage."""

    device: str = "auto"
    precision: str = "auto"  # auto (bf16 on CUDA), bf16, fp32
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    snapshot_every: int = 0  # features on a fixed probe set every N steps (distill.snapshots); 0 = off
    feature_cache: bool = True  # cache the teachers' targets of fixed views (a stream's teachers run online)
    fsdp: bool = False  # shard the proxy with FSDP2 under torchrun (DDP otherwise)
    activation_checkpointing: bool = False  # recompute the backbone's blocks in the backward pass
    compile: bool = False  # torch.compile the trained model


@dataclass
class RunConfig:
    """Everything a pipeline run needs."""

    teachers: list[TeacherConfig]
    proxy: ModelConfig
    student: ModelConfig
    stages: dict[str, StageConfig]
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SCHEDULES = ("cosine", "wsd")  # a stage's learning-rate shape after warm-up (`distill.trainer.learning_rate`)
CHOICES = {"norm.method": ("standard", "phi-s"), "train.precision": ("auto", "bf16", "fp32")}
POSITIVE = ("train.log_every", "train.checkpoint_every", "train.grad_clip", "norm.warmup_batches",
            "data.num_images", "proxy.adaptor_hidden", "student.adaptor_hidden")  # fmt: skip
NON_NEGATIVE = ("loss.alpha", "loss.beta", "loss.smooth_l1_beta", "data.seed", "data.workers", "train.seed",
                "train.snapshot_every")  # fmt: skip
STAGE_POSITIVE = ("steps", "batch_size", "lr")
STAGE_NON_NEGATIVE = ("warmup_steps", "weight_decay")
TEACHER_WEIGHTS = ("pretrained", "random", "file")
MIN_SIDE = 16  # the smallest input side a stage or teacher may take


def _build(cls: Any, value: Any, where: str) -> Any:
    """Coerce a YAML value to the annotated type `cls`, naming `where` in errors."""
    origin = typing.get_origin(cls)
    if dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(
                f"unknown config key '{_join(where, unknown[0])}' (known: {', '.join(sorted(names))})"
            )
        kwargs = {k: _build(hints[k], v, _join(where, k)) for k, v in value.items()}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and _required(f)]
        if missing:
            raise ConfigError(f"missing config key '{_join(where, missing[0])}'")
        return cls(**kwargs)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(cls)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{where}' must be a list, got {value!r}")
        (item,) = typing.get_args(cls)
        return [_build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
        _, item = typing.get_args(cls)
        return {k: _build(item, v, _join(where, k)) for k, v in value.items()}
    if cls is Any:
        return value
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if cls is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{where}' must be a finite number, got {value}")
    if cls is int and isinstance(value, float) and value.is_integer():  # steps: 1e4
        return int(value)
    if not isinstance(value, cls) or (cls is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{where}' must be {cls.__name__}, got {value!r}")
    return value


def _value(config: RunConfig, key: str) -> Any:
    """The value at a dotted `section.name` key."""
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_sign(key: str, value: float, positive: bool) -> None:
    """A one-line `ConfigError` unless `value` is > 0 (`positive`) or >= 0 (finiteness is checked on
    reading)."""
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"config key '{key}' must be {'positive' if positive else '>= 0'}, got {value}")


def _validate(config: RunConfig) -> RunConfig:
    """Value checks that types cannot express."""
    for key, allowed in CHOICES.items():
        value = _value(config, key)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, got '{value}'")
    for keys, positive in ((POSITIVE, True), (NON_NEGATIVE, False)):
        for key in keys:
            _check_sign(key, _value(config, key), positive)
    for i, teacher in enumerate(config.teachers):
        _check_sign(f"teachers[{i}].patch_weight", teacher.patch_weight, positive=False)
        key = f"config key 'teachers[{i}]"
        if teacher.weights not in TEACHER_WEIGHTS:
            allowed = ", ".join(TEACHER_WEIGHTS)
            raise ConfigError(f"{key}.weights' must be one of {allowed}, got '{teacher.weights}'")
        if (teacher.weights == "file") != (teacher.checkpoint is not None):
            raise ConfigError(f"{key}.checkpoint' goes with teachers[{i}].weights: file, and only then")
        if teacher.resolution is not None and teacher.resolution < MIN_SIDE:
            raise ConfigError(f"{key}.resolution' must be >= {MIN_SIDE}, got {teacher.resolution}")
    for name, stage in config.stages.items():
        if name not in STAGE_NAMES:
            raise ConfigError(f"unknown stage 'stages.{name}' (known: {', '.join(STAGE_NAMES)})")
        for keys, positive in ((STAGE_POSITIVE, True), (STAGE_NON_NEGATIVE, False)):
            for key in keys:
                _check_sign(f"stages.{name}.{key}", getattr(stage, key), positive)
        if not config.data.stream and stage.batch_size > config.data.num_images:
            raise ConfigError(f"config key 'stages.{name}.batch_size' ({stage.batch_size}) exceeds the "
                              f"{config.data.num_images} fixed views of data.num_images")  # fmt: skip
        if stage.schedule not in SCHEDULES:
            allowed, got = ", ".join(SCHEDULES), stage.schedule
            raise ConfigError(f"config key 'stages.{name}.schedule' must be one of {allowed}, got '{got}'")
        if not 0 < stage.decay_fraction <= 1:
            fraction = stage.decay_fraction
            raise ConfigError(f"config key 'stages.{name}.decay_fraction' must be in (0, 1], got {fraction}")
        for key in ("resolutions", "teacher_resolutions"):
            sides = getattr(stage, key)
            if sides is not None and (not sides or min(sides) < MIN_SIDE):
                raise ConfigError(f"config key 'stages.{name}.{key}' needs sides >= {MIN_SIDE}, got {sides}")
    augment = config.augment
    for key in ("flip", "crop"):
        if not 0 <= getattr(augment, key) <= 1:
            raise ConfigError(f"config key 'augment.{key}' must be in [0, 1], got {getattr(augment, key)}")
    if augment.min_crop_cells < 1:
        raise ConfigError(f"config key 'augment.min_crop_cells' must be >= 1, got {augment.min_crop_cells}")
    if not config.teachers:
        raise ConfigError("config key 'teachers' must list at least one teacher")
    data = config.data
    if data.stream and not data.source.startswith(("folder:", "shards:")):
        raise ConfigError(f"config key 'data.stream' needs a folder: or shards: source, got '{data.source}'")
    if data.store is not None and not data.stream:
        raise ConfigError("config key 'data.store' needs data.stream: true (a store holds a streamed corpus)")
    scale = augment.scale
    if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        raise ConfigError(
            f"config key 'augment.scale' must be [low, high] with 0 < low <= high <= 1, got {scale}"
        )
    return config


def check_stage_sides(config: RunConfig, stage: str, stride: int) -> None:
    """The stage's input sides are multiples of its model's `stride`."""
    off_grid = [side for side in config.stages[stage].resolutions if side % stride]
    if off_grid:
        arch = getattr(config, stage_named(stage).model).arch
        raise ConfigError(f"stages.{stage}.resolutions {off_grid} are not multiples of {arch}'s "
                          f"stride {stride}")  # fmt: skip


def check_stages(config: RunConfig, stages: list[str]) -> None:
    """Every stage named is configured: the one check of a run's stages, for every entry point."""
    missing = [s for s in stages if s not in config.stages]
    if missing:
        raise ValueError(f"stage '{missing[0]}' is not configured (configured: {', '.join(config.stages)})")


def shards_model(config: RunConfig, stage: str, world_size: int) -> bool:
    """Whether the stage's model is sharded with FSDP2 (the proxy, under `train.fsdp`, on several
    processes) rather than replicated."""
    return config.train.fsdp and world_size > 1 and stage_named(stage).model == "proxy"


def check_batch_split(config: RunConfig, stage: str, world_size: int) -> None:
    """The stage's global batch splits evenly over `world_size` processes."""
    batch = config.stages[stage].batch_size
    if batch % world_size:
        raise ConfigError(f"stages.{stage}.batch_size {batch} does not split over {world_size} processes")


def check_crop_cells(config: RunConfig, stride: int, view_side: int) -> None:
    """`augment.min_crop_cells` fits the patch grid of views of `view_side` (views the trainer crops)."""
    cells, augment = view_side // stride, config.augment
    if augment.crop > 0 and not 1 <= augment.min_crop_cells < cells:
        raise ConfigError(f"augment.min_crop_cells must lie in [1, {cells - 1}] for views of {cells} "
                          f"patch cells, got {augment.min_crop_cells}")  # fmt: skip


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], YAML-parsed value); a one-line error if there is no '='."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    try:
        return key.split("."), parse_yaml(raw)
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"override '{text}': not a valid YAML value ({reason})") from None
    except ConfigError as error:  # aliases past `MAX_NODES`, or recursive
        raise ConfigError(f"override '{text}': {error}") from None


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """Set `value` at a dotted path in a raw config mapping, creating mappings along the way."""
    node = tree
    for key in path[:-1]:
        if isinstance(node, list):
            raise ConfigError(f"override '{'.'.join(path)}' cannot index into a list")
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{'.'.join(path)}': '{key}' is not a mapping")
    node[path[-1]] = value


def config_path(name: str | Path) -> Path:
    """The file `name` if it exists; else, for `toy`, `toy.yaml` or `configs/toy.yaml`, the packaged config,
    so the shipped configs resolve from any folder.

    Raises:
        FileNotFoundError: neither exists.
    """
    path = Path(name)
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")):
        packaged = CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
        if packaged.is_file():
            return packaged
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"config file not found: {path} (packaged configs: {names})")
    raise FileNotFoundError(f"config file not found: {path}")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config (see `config_path`), apply `key.sub=value` overrides, and validate it.

    Raises:
        ConfigError: unknown key, wrong type or bad value, with the key in the message.
        FileNotFoundError: no such config file.
    """
    path = config_path(path)
    try:
        tree = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    for text in overrides:
        apply_override(tree, *parse_override(text))
    return _validate(_build(RunConfig, tree, ""))


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A plain mapping of the config (for saving with a run)."""
    return dataclasses.asdict(config)
