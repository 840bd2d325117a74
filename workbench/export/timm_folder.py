"""A distilled encoder (or any timm encoder) as a timm model folder, usable without this project.

The folder holds what `timm.create_model("local-dir:FOLDER", pretrained=True)` reads (timm's Hugging Face
layout: `config.json` with the architecture, its arguments and the input mean/std, and the backbone's
weights in timm's own key layout in `model.safetensors`); for a distilled encoder also `heads.safetensors`
(every adaptor head and the frozen standardisation statistics on the way to the experts' feature spaces,
with their structure in its header, read by `load_expert_heads`) and a generated model card (`README.md`,
see `workbench.export.model_card`).
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import timm
import torch
from torch import Tensor

from distill.atomic import atomic_path
from distill.backbones import split_features, uses_cls_token
from distill.models import DistilledModel
from workbench.eval.encoders import Encoder, timm_model_of
from workbench.export.heads import HEADS_FILE, TIMM_CONFIG_FILE, write_heads
from workbench.export.model_card import model_card


def export_timm(
    spec: str, encoder: Encoder, out: str | Path, resolution: int, scoreboard: Path | None = None
) -> Path:
    """Write `encoder` (what `spec` names) as a timm model folder at `out`, atomically: config.json,
    model.safetensors, for a distilled encoder its heads, and the model card (GFLOPs at `resolution`, the
    row of `scoreboard`, by default the run's own)."""
    out = Path(out)
    if out.is_file():
        raise ValueError(f"--out {out} is a file; a timm export is a folder")
    model, model_args = timm_model_of(encoder)
    distilled = getattr(encoder.backbone, "model", None)
    heads = isinstance(distilled, DistilledModel) and encoder.expert_map is not None
    packed = copy.deepcopy(model)  # safetensors refuses strided tensors (e.g. weights loaded from a file)
    for tensor in itertools.chain(packed.parameters(), packed.buffers()):
        tensor.data = tensor.data.contiguous()
    if uses_cls_token(packed):  # `model(x)` is then the summary the workbench reads and scores, not a mean
        packed.reset_classifier(0, global_pool="token")
    with atomic_path(out) as tmp:
        timm.models.save_for_hf(packed, str(tmp), model_args=model_args, safe_serialization=True)
        if isinstance(distilled, DistilledModel):
            describe_distilled(tmp / TIMM_CONFIG_FILE, resolution)
        if heads:
            write_heads(tmp / HEADS_FILE, encoder.expert_map, distilled.model_config)
        (tmp / "README.md").write_text(model_card(spec, encoder, resolution, scoreboard, heads))
    return out


def describe_distilled(config_file: Path, resolution: int) -> None:
    """A distilled model's config.json: no pretrained tag or licence of the architecture's own weights
    (the card gives the teachers' licences), and its input size."""
    config = json.loads(config_file.read_text())
    pretrained = config["pretrained_cfg"]
    pretrained.pop("tag", None)
    pretrained |= {"license": "other", "input_size": [3, resolution, resolution], "crop_pct": 1.0}
    config_file.write_text(json.dumps(config, indent=2))


def check_timm_folder(folder: Path, encoder: Encoder, images: Tensor) -> float:
    """Max |difference| between plain timm loading the folder and the encoder's own features on `images`
    (in [0, 1], at the encoder's side): the summary as `model(x)` and as read from `forward_features`, and
    the patches."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config(model=model)
    mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    grid = (images.shape[-2] // encoder.patch_stride, images.shape[-1] // encoder.patch_stride)
    with torch.no_grad():
        tokens = model.forward_features((images - mean) / std)
        exported, pooled = split_features(model, tokens, grid), model.forward_head(tokens)
        own = encoder(images)
    return max(
        (pooled - own.summary).abs().max().item(),
        (exported.summary - own.summary).abs().max().item(),
        (exported.patches - own.patches).abs().max().item(),
    )
