"""The expert heads of an exported encoder: every adaptor head and frozen standardisation statistic on the
way to the experts' feature spaces, in one safetensors file whose header holds their structure and the
distilled model's config; `load_expert_heads` reads it back (it needs this project, the backbone does not)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from distill.adaptors import TeacherAdaptor
from distill.backbones import split_features
from distill.checkpoint import contiguous_state
from distill.config import ModelConfig
from distill.features import Features
from distill.models import adaptor_key
from distill.run_dir import MODEL_FILE
from distill.standardize import TeacherStandardizer
from workbench.eval.expert_map import ExpertMap

TIMM_CONFIG_FILE = "config.json"  # timm's (and the Hugging Face hub's) model config
HEADS_FILE = "heads.safetensors"


def is_timm_folder(path: str | Path) -> bool:
    """Whether `path` is a folder written by `export_timm` (or any timm local-dir model folder)."""
    return (Path(path) / TIMM_CONFIG_FILE).is_file() and (Path(path) / MODEL_FILE).is_file()


@dataclass
class HeadLevel:
    """One stage of adaptors on the way to the experts: a distilled model's heads and its statistics.

    Attributes:
        teachers: teacher name -> (summary_dim, patch_dim) of its targets.
        in_dim: width of the features the heads read.
        hidden: the heads' hidden width.
        methods: teacher name -> standardisation method.
        via: the teacher whose space the next level reads (a student's proxy), or None at the experts.
    """

    teachers: dict[str, tuple[int, int]]
    in_dim: int
    hidden: int
    methods: dict[str, str]
    via: str | None


def head_levels(expert_map: ExpertMap) -> list[HeadLevel]:
    """The structure of an expert map, outermost (the exported model's own heads) first."""
    levels, level = [], expert_map
    while level is not None:
        dims, methods = {}, {}
        for name in level.teacher_names:
            adaptor = level.adaptors[adaptor_key(name)]
            dims[name] = (adaptor.summary[-1].out_features, adaptor.patches[-1].out_features)
            methods[name] = level.standardizers[adaptor_key(name)].summary.method
        first = level.adaptors[adaptor_key(level.teacher_names[0])].summary[0]
        hidden = first.out_features
        levels.append(HeadLevel(dims, first.in_features, hidden, methods, level.via_name))
        level = level.via
    return levels


def expert_map_from_levels(levels: list[HeadLevel]) -> ExpertMap:
    """An untrained expert map of the given structure (weights and statistics to be loaded)."""
    expert_map = None
    for level in reversed(levels):
        dims = level.teachers.items()
        adaptors = nn.ModuleDict(
            {adaptor_key(n): TeacherAdaptor(level.in_dim, level.hidden, s, p) for n, (s, p) in dims}
        )
        standardizers = {n: TeacherStandardizer(s, p, level.methods[n]) for n, (s, p) in dims}
        via = None if level.via is None else (level.via, expert_map)
        expert_map = ExpertMap(adaptors, list(level.teachers), standardizers, via)
    return expert_map


class ExpertHeads(nn.Module):
    """The exported heads: each expert's estimate from a timm backbone's output.

    Args:
        expert_map: the chain of adaptor heads and statistics (see `load_expert_heads`).
        model_config: the distilled model's architecture, as the project trained it.
    """

    def __init__(self, expert_map: ExpertMap, model_config: ModelConfig) -> None:
        super().__init__()
        self.expert_map = expert_map
        self.model_config = model_config

    def experts(self) -> list[str]:
        return self.expert_map.experts()

    @torch.no_grad()
    def forward(self, backbone: nn.Module, tokens: Tensor, grid: tuple[int, int]) -> dict[str, Features]:
        """Each expert's estimate, in that expert's own feature space.

        Args:
            backbone: the timm model (it says which tokens are the summary and which the patches).
            tokens: its `forward_features` output for normalised images.
            grid: the patch grid (image height and width divided by the patch size).
        """
        return self.expert_map(split_features(backbone, tokens, grid))


def load_expert_heads(folder: str | Path) -> ExpertHeads:
    """The adaptor heads and statistics an exported folder holds, ready to map backbone outputs to experts.

    Example:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        heads = load_expert_heads(folder)
        x = (images - mean) / std  # mean, std: timm.data.resolve_data_config(model=model)
        estimates = heads(model, model.forward_features(x), (x.shape[-2] // 16, x.shape[-1] // 16))

    Raises:
        ValueError: the folder holds no heads file, or a damaged one (one line, naming it).
    """
    path = Path(folder) / HEADS_FILE
    if not path.is_file():
        raise ValueError(f"{folder} holds no {HEADS_FILE} (only distilled encoders export heads)")
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata()
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        levels = [HeadLevel(**level) for level in json.loads(header["levels"])]
        model_config = ModelConfig(**json.loads(header["model_config"]))
        expert_map = expert_map_from_levels(levels)
        expert_map.load_state_dict(state)
    except (OSError, KeyError, RuntimeError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable heads file: {error}") from error
    return ExpertHeads(expert_map.eval(), model_config).eval()


def write_heads(path: Path, expert_map: ExpertMap, model_config: ModelConfig) -> None:
    """The expert map's weights and statistics, with its structure and the model's config in the header."""
    header = {
        "levels": json.dumps([asdict(level) for level in head_levels(expert_map)]),
        "model_config": json.dumps(asdict(model_config)),
    }
    save_file(contiguous_state(expert_map.state_dict()), str(path), metadata=header)
