"""Inside a timm backbone: the patch features of any layer, and the CLS token's attention over the patches.

Layers are what timm's `forward_intermediates` counts (`feature_info`): the blocks of a ViT, the stages of a
ConvNeXt or other CNN. A layer's output passes through the model's final norm, as its last layer does in
`forward_features`, so the last layer's patches are the encoder's own.

Attention is read where a ViT with a CLS token has timm's attention modules (a `fused_attn` switch and an
`attn_drop` after the softmax): for one pass the chosen block takes its unfused path and the softmax
weights it computes are kept. They are the block's own, with whatever it applies on the way: q/k norms,
RoPE on the patch tokens (DINOv3-style Eva blocks), registers among the keys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class Inside:
    """One layer of an encoder on an image batch.

    Attributes:
        patches: [B, C, h, w] the layer's patch features.
        attention: [B, heads, h, w] the CLS token's attention to each patch in that layer (its row of the
            softmax, so with the prefix tokens' share it sums to 1); None where the model gives none.
    """

    patches: Tensor
    attention: Tensor | None = None


def layer_count(model: nn.Module) -> int:
    """How many layers of a timm model can be read (1, its output, without `forward_intermediates`)."""
    return len(model.feature_info) if hasattr(model, "forward_intermediates") else 1


def layer_index(count: int, layer: int | None) -> int:
    """The index of `layer` among `count` (None: the last; negative: from the end), or a one-line error."""
    if layer is None:
        return count - 1
    if not -count <= layer < count:
        known = f"layers 0 to {count - 1}" if count > 1 else "only its output layer"
        raise ValueError(f"layer {layer} is out of range: this encoder shows {known}")
    return layer % count


def attention_module(model: nn.Module, index: int) -> nn.Module | None:
    """The attention module of ViT block `index` if its CLS attention can be read, else None."""
    blocks = getattr(model, "blocks", None)
    if getattr(model, "cls_token", None) is None or blocks is None:
        return None
    attn = getattr(blocks[index], "attn", None)
    readable = hasattr(attn, "fused_attn") and isinstance(getattr(attn, "attn_drop", None), nn.Dropout)
    return attn if readable else None


@contextmanager
def kept_attention(attn: nn.Module | None) -> Iterator[list[Tensor]]:
    """Within the block, `attn` (if any) takes its unfused path and each softmax it computes in this thread,
    [B, heads, N, N], is appended to the yielded list; its fused setting is restored after."""
    kept: list[Tensor] = []
    if attn is None:
        yield kept
        return
    thread, fused = threading.get_ident(), attn.fused_attn

    def keep(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if threading.get_ident() == thread:  # not another request's pass through the same model
            kept.append(args[0])

    attn.fused_attn = False
    handle = attn.attn_drop.register_forward_hook(keep)
    try:
        yield kept
    finally:
        handle.remove()
        attn.fused_attn = fused


def look_inside(model: nn.Module, x: Tensor, layer: int | None = None) -> Inside:
    """Patches of `layer` (None: the last) of a timm model with `forward_intermediates` on its prepared input
    `x` [B, 3, H, W], and the CLS token's attention in that layer where it can be read (see the module
    docstring)."""
    index = layer_index(layer_count(model), layer)
    with kept_attention(attention_module(model, index)) as kept:
        (patches,) = model.forward_intermediates(
            x, indices=[index], norm=True, stop_early=True, intermediates_only=True
        )
    if not kept:
        return Inside(patches)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    batch, heads = kept[-1].shape[:2]
    attention = kept[-1][:, :, 0, prefix:].reshape(batch, heads, *patches.shape[-2:])
    return Inside(patches, attention)
