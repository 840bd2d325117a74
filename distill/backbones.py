"""timm backbones, for teachers and for the distilled proxy and students alike: building one headless for
any input size, and reading a summary vector and a patch grid out of its features."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import Tensor, nn

from distill.features import Features
from distill.hub import local_pretrained

# Short names for the published EUPE teachers and the released EUPE students.
TIMM_ALIASES = {
    "pe-core-g": "vit_pe_core_gigantic_patch14_448.fb",
    "pe-lang-g": "vit_pe_lang_gigantic_patch14_448.fb",
    "dinov3-h+": "vit_huge_plus_patch16_dinov3.lvd1689m",
    "eupe-vit-t": "vit_tiny_patch16_dinov3_qkvb.eupe_lvd1689m",
    "eupe-vit-s": "vit_small_patch16_dinov3_qkvb.eupe_lvd1689m",
    "eupe-vit-b": "vit_base_patch16_dinov3_qkvb.eupe_lvd1689m",
    "eupe-convnext-t": "convnext_tiny.eupe_lvd1689m",
    "eupe-convnext-s": "convnext_small.eupe_lvd1689m",
    "eupe-convnext-b": "convnext_base.eupe_lvd1689m",
}


def create_timm_backbone(
    model_name: str, weights: str = "random", checkpoint: str | Path | None = None, **kwargs: object
) -> nn.Module:
    """A headless timm model (num_classes=0), ViTs built for any input size.

    Args:
        model_name: a timm name, optionally with a pretrained tag (`convnext_tiny.eupe_lvd1689m`),
            or a short name from `TIMM_ALIASES`.
        weights: "random", "pretrained" (the hub, or its local cache; unreachable and not cached: a
            one-line `distill.hub.HubUnreachable` within seconds), or "file" (`checkpoint`).
        checkpoint: local weight file (.safetensors, .pth, .bin) for weights="file".
        **kwargs: passed to `timm.create_model` (e.g. img_size, drop_path_rate).

    Returns:
        The model in eval mode.
    """
    name = TIMM_ALIASES.get(model_name, model_name)
    if weights not in ("random", "pretrained", "file"):
        raise ValueError(f"weights must be 'random', 'pretrained' or 'file', got '{weights}'")
    if (weights == "file") != (checkpoint is not None):
        raise ValueError("a checkpoint file is given exactly when weights='file'")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint file not found: {checkpoint}")
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"unknown timm model '{model_name}'")
    if weights == "pretrained":  # offline: the cached file, or a one-line error within seconds
        checkpoint = local_pretrained(name)
    options: dict[str, object] = {"num_classes": 0, **kwargs}
    if checkpoint is not None:  # timm's own pretrained loader, pointed at a local file
        options["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    try:
        model = timm.create_model(name, pretrained=weights != "random", dynamic_img_size=True, **options)
    except TypeError:  # families without dynamic_img_size (CNNs) take any size natively
        model = timm.create_model(name, pretrained=weights != "random", **options)
    return model.eval()


def prefix_tokens(model: nn.Module) -> int:
    """How many CLS/register tokens precede the patch tokens (0 for CNNs)."""
    return int(getattr(model, "num_prefix_tokens", 0))


def input_granularity(model: nn.Module) -> int:
    """The side-length multiple the model needs: its patch size, or its total stride."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and hasattr(patch_embed, "patch_size"):
        return int(patch_embed.patch_size[0])
    return int(model.feature_info[-1]["reduction"])


def uses_cls_token(model: nn.Module) -> bool:
    """Whether a timm model's summary is its CLS token: ViTs that have one, except where the model pools with
    attention (PE's `map` head), whose pooled vector is its embedding."""
    return getattr(model, "cls_token", None) is not None and getattr(model, "global_pool", "") != "map"


def split_features(model: nn.Module, features: Tensor, grid: tuple[int, int]) -> Features:
    """Summary and patch grid from `forward_features` output of a timm model.

    The summary is the final-normed CLS token for ViTs that have one (as DINOv3 and EUPE use it),
    except where the model pools with attention (PE's `map` head), whose pooled vector is its
    embedding; for CNNs and token-less ViTs it is timm's pooled pre-logits vector. Patches are the
    tokens after the prefix (CLS and registers) laid out on `grid`, or the final map for CNNs.
    """
    summary = features[:, 0] if uses_cls_token(model) else model.forward_head(features, pre_logits=True)
    if features.ndim == 4:
        return Features(summary=summary, patches=features)
    tokens = features[:, prefix_tokens(model) :]
    patches = tokens.transpose(1, 2).reshape(features.shape[0], features.shape[-1], *grid)
    return Features(summary=summary, patches=patches)
