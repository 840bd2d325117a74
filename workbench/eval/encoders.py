"""One encoder API over experts, distilled checkpoints (proxy, students) and timm models.

An `Encoder` turns images in [0, 1] into a summary vector and a patch grid at its resolution; a
distilled encoder also maps its features into each expert's own feature space: through its adaptor
heads, un-standardised with the statistics its stage was trained with. A student, whose adaptor
targets the proxy, is chained through the proxy's expert adaptors. Images may keep their aspect ratio (an
H x W patch grid), and a timm backbone can be read at any layer, with its CLS attention (see `inside`).
"""

from __future__ import annotations

import functools
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from distill.checkpoint import read_meta
from distill.config import ModelConfig
from distill.data.images import native_view
from distill.distilled_teacher import DistilledTeacher
from distill.features import Features
from distill.integrity import file_digest
from distill.models import DistilledModel
from distill.run_dir import MODEL_FILE, checkpoint_folder, existing_checkpoint, stage_of_checkpoint
from distill.seeds import seeded
from distill.specs import FLOOR_PREFIX, floor_spec, is_floor, parse_spec  # the floor's names, for workbench
from distill.stages import STAGE_NAMES, stage_named
from distill.teachers import Teacher, build_teacher
from distill.teachers.base import check_images
from distill.teachers.timm_teacher import TimmTeacher
from workbench.eval.expert_map import ExpertMap, stage_expert_map
from workbench.eval.inside import Inside, layer_count, layer_index, look_inside
from workbench.export.heads import (
    HEADS_FILE,
    TIMM_CONFIG_FILE,
    head_levels,
    is_timm_folder,
    load_expert_heads,
)


@dataclass
class EncoderFeatures:
    """Features of one image batch.

    Attributes:
        summary: [B, D] summary vector.
        patches: [B, D, h, w] patch grid.
        experts: expert name -> the encoder's estimate of that expert's features (distilled
            encoders only; at the encoder's own patch grid).
    """

    summary: Tensor
    patches: Tensor
    experts: dict[str, Features] = field(default_factory=dict)


class Encoder(nn.Module):
    """A frozen encoder: summary vector, patch grid and (for distilled models) expert-space features.

    Args:
        name: display name.
        kind: "expert", "proxy", "student", "timm" or "random".
        backbone: a `Teacher` (owns resizing and normalisation).
        expert_map: maps backbone features into the experts' spaces, for distilled encoders; or a function
            that builds it (or None), called the first time it is needed, so that an encoder used only for
            its own features (a latency benchmark, a feature map) never reads its teacher stage's files.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        backbone: Teacher,
        expert_map: ExpertMap | Callable[[], ExpertMap | None] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self.backbone = backbone
        self.mapped = expert_map if isinstance(expert_map, ExpertMap) else None
        self.build_expert_map = None if isinstance(expert_map, ExpertMap) else expert_map
        self.requires_grad_(False)
        self.eval()

    @property
    def expert_map(self) -> ExpertMap | None:
        """The map into the experts' spaces (built on first use, on the backbone's device), or None."""
        if self.build_expert_map is not None:
            built, self.build_expert_map = self.build_expert_map(), None
            if built is not None:
                device = next(self.backbone.parameters(), torch.empty(0)).device
                self.mapped = built.to(device).requires_grad_(False).eval()
        return self.mapped

    @property
    def resolution(self) -> int | None:
        """The square side images are resized to (None: each image's own size, rounded)."""
        return self.backbone.resolution

    @resolution.setter
    def resolution(self, side: int | None) -> None:
        if side is not None and side < self.backbone.size_multiple:
            minimum = self.backbone.size_multiple
            raise ValueError(f"resolution {side} is below {self.name}'s minimum of {minimum} px")
        self.backbone.resolution = side

    @property
    def patch_stride(self) -> int:
        return self.backbone.patch_stride

    @property
    def summary_dim(self) -> int:
        return self.backbone.summary_dim

    @property
    def patch_dim(self) -> int:
        return self.backbone.patch_dim

    @property
    def timm_model(self) -> nn.Module | None:
        """The timm model inside (a distilled backbone or a timm teacher's); None for offline experts."""
        inner = getattr(self.backbone, "model", None)
        if isinstance(inner, DistilledModel):
            return inner.backbone
        return inner if isinstance(self.backbone, TimmTeacher) else None

    def experts(self) -> list[str]:
        """Experts whose feature space this encoder can reach (empty for non-distilled encoders)."""
        return self.expert_map.experts() if self.expert_map is not None else []

    def num_parameters(self, with_adaptors: bool = False) -> int:
        """Parameters of the backbone (plus the adaptor chain when asked)."""
        modules = self.backbone.encoder_modules()
        modules += [self.expert_map] if with_adaptors and self.expert_map else []
        return sum(p.numel() for m in modules for p in m.parameters())

    def prepare(self, images: Tensor, keep_aspect: bool = False) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] checked, resized and normalised as the backbone takes them: squashed
        to the square resolution, or with `keep_aspect` resized to their `native_view` at the resolution's
        area (sides multiples of the input granularity), so the patch grid is H x W."""
        if not keep_aspect or self.resolution is None:  # None: each image's own size already
            return self.backbone.prepare(images)
        patch_embed = getattr(self.timm_model, "patch_embed", None)
        if getattr(patch_embed, "strict_img_size", False):
            size = "x".join(map(str, patch_embed.img_size))
            raise ValueError(f"{self.name} takes only {size} px input: it cannot keep the aspect ratio")
        check_images(images)
        side, self.backbone.resolution = self.backbone.resolution, None
        try:
            return self.backbone.prepare(native_view(images, side, self.backbone.size_multiple))
        finally:
            self.backbone.resolution = side

    @torch.no_grad()
    def forward(
        self, images: Tensor, with_experts: bool = False, keep_aspect: bool = False
    ) -> EncoderFeatures:
        """Features of images [B, 3, H, W] in [0, 1]; `with_experts` adds the expert-space estimates;
        `keep_aspect` keeps the images' aspect ratio (see `prepare`)."""
        out = self.backbone.encode(self.prepare(images, keep_aspect))
        experts = self.expert_map(out) if with_experts and self.expert_map is not None else {}
        return EncoderFeatures(out.summary.float(), out.patches.float(), experts)

    def layers(self) -> int:
        """How many layers `inside` can read: a timm backbone's blocks (ViTs) or stages (CNNs), else 1."""
        model = self.timm_model
        return layer_count(model) if model is not None else 1

    @torch.no_grad()
    def inside(self, images: Tensor, layer: int | None = None, keep_aspect: bool = False) -> Inside:
        """Patch features of one layer (None: the last, the encoder's own patches) and, for ViTs with a CLS
        token, its attention to each patch in that layer; offline experts show their output layer only."""
        model = self.timm_model
        if model is None or not hasattr(model, "forward_intermediates"):
            layer_index(1, layer)
            return Inside(self(images, keep_aspect=keep_aspect).patches)
        x = self.prepare(images, keep_aspect)
        inner = self.backbone.model
        inside = look_inside(model, inner.normalise(x) if isinstance(inner, DistilledModel) else x, layer)
        return Inside(inside.patches.float(), None if inside.attention is None else inside.attention.float())


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a distilled checkpoint folder or a run stage folder holding one."""
    return checkpoint_folder(path) is not None


def distilled_encoder(path: str | Path, resolution: int | None = None, name: str | None = None) -> Encoder:
    """An encoder from a run stage folder (`runs/NAME/student`) or its checkpoint folder."""
    folder = existing_checkpoint(path)
    try:
        backbone = DistilledTeacher(folder, resolution)
    except (KeyError, RuntimeError, OSError, SafetensorError) as error:
        raise ValueError(f"{folder} is not a readable distilled checkpoint: {error}") from error
    run, stage = stage_of_checkpoint(folder)
    kind = stage_named(stage).model if stage in STAGE_NAMES else "student"  # a checkpoint outside a run
    expert_map = functools.partial(stage_expert_map, run, stage, backbone.model)
    return Encoder(name or distilled_name(folder), kind, backbone, expert_map)


def distilled_name(checkpoint: Path) -> str:
    """How a distilled checkpoint is named in tables and apps: `run/stage`."""
    run, stage = stage_of_checkpoint(checkpoint)
    return f"{run.name}/{stage}"


def encoder_identity(spec: str) -> dict:
    """What an encoder is, whatever path names it: its spec (an expert or timm name), or for a distilled
    checkpoint the content of every file it reads (weights, statistics, and those of its teacher stage)."""
    folder = checkpoint_folder(spec)
    if folder is None:
        return {"spec": spec}
    run, stage = stage_of_checkpoint(folder)
    identity = {"weights": file_digest(folder / MODEL_FILE)}
    if run.standardizers(stage).is_file():
        identity["standardizers"] = file_digest(run.standardizers(stage))
        teachers = read_meta(folder)["teachers"]
        identity |= {name: encoder_identity(str(run.stage(name))) for name in teachers if name in STAGE_NAMES}
    return identity


def random_encoder(like: str | Path, resolution: int | None = None, seed: int = 0) -> Encoder:
    """A randomly initialised backbone with the architecture of a checkpoint (a floor for the scoreboard)."""
    meta = read_meta(existing_checkpoint(like))
    with seeded(seed):  # seeded weights, without moving the caller's random stream
        model = DistilledModel(ModelConfig(**meta["model_config"]), {})
    backbone = DistilledTeacher(model, resolution)
    return Encoder(f"random {meta['model_config']['arch']}", "random", backbone)


def build_encoder(spec: str, resolution: int | None = None, **kwargs: object) -> Encoder:
    """An encoder by spec: an expert name, `timm:<model>` or a timm alias, a run stage/checkpoint folder, or a
    folder `eupe export --format timm` wrote.

    Args:
        spec: what to load.
        resolution: square input side (None: the encoder's default, e.g. 224 for `semantic`).
        kwargs: passed to the timm teacher (weights="pretrained"|"random"|"file", checkpoint=path).
    """
    parsed = parse_spec(spec)
    if parsed.kind == "folder":
        return (
            timm_folder_encoder(spec, resolution)
            if is_timm_folder(spec)
            else distilled_encoder(spec, resolution)
        )
    if parsed.kind == "expert":
        teacher = build_teacher(spec) if resolution is None else build_teacher(spec, resolution=resolution)
        return Encoder(spec, "expert", teacher)
    try:
        teacher = build_teacher(spec, resolution=resolution, **kwargs)
    except (RuntimeError, pickle.UnpicklingError) as error:  # torch's weights-only loader refused the file
        if kwargs.get("checkpoint") is None:
            raise
        reason = str(error).split(". ")[0].strip()  # not the advice to load it unsafely
        raise ValueError(f"{kwargs['checkpoint']} cannot be loaded as {spec} weights: {reason}") from error
    return Encoder(spec, "timm", teacher)


def timm_model_of(encoder: Encoder) -> tuple[nn.Module, dict]:
    """The timm model inside an encoder and the arguments that rebuild it; a one-line error if none."""
    model, inner = encoder.timm_model, getattr(encoder.backbone, "model", None)
    if model is not None:
        return model, dict(inner.model_config.kwargs) if isinstance(inner, DistilledModel) else {}
    raise ValueError(f"{encoder.name} is an offline expert, not a timm model: export takes distilled run "
                     "stages and timm models")  # fmt: skip


def timm_folder_encoder(folder: str | Path, resolution: int | None = None) -> Encoder:
    """An exported folder as an encoder again: a distilled model with its expert map when the folder holds
    heads, else the plain timm model."""
    folder = Path(folder)
    if not (folder / HEADS_FILE).is_file():
        architecture = json.loads((folder / TIMM_CONFIG_FILE).read_text())["architecture"]
        backbone = TimmTeacher(architecture, "file", folder / MODEL_FILE, resolution)
        return Encoder(folder.name, "timm", backbone)
    heads = load_expert_heads(folder)
    level = head_levels(heads.expert_map)[0]
    model = DistilledModel(heads.model_config, level.teachers)
    backbone_state = {f"backbone.{k}": v for k, v in load_file(str(folder / MODEL_FILE)).items()}
    adaptor_state = {f"adaptors.{k}": v for k, v in heads.expert_map.adaptors.state_dict().items()}
    model.load_state_dict(backbone_state | adaptor_state)
    return Encoder(folder.name, "student", DistilledTeacher(model.eval(), resolution), heads.expert_map)


__all__ = [
    "FLOOR_PREFIX",
    "floor_spec",
    "is_floor",
]  # the floor spec's names, from `distill.specs`, re-exported
