"""The one FLOP counter: `torch.utils.flop_counter.FlopCounterMode`, taught PyTorch's fused CPU attention.

On the CPU, `scaled_dot_product_attention` runs `_scaled_dot_product_flash_attention_for_cpu` (and its
backward), which `FlopCounterMode` does not know: without the mapping below a ViT's attention counts 0
FLOPs there. A multiply-add counts as 2 FLOPs; matrix products, convolutions and attention are counted
(elementwise ops, norms and activations are not). Works on meta tensors too (the dry-run plan).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused CPU attention kernel (as `sdpa_flop_count` counts the other kernels)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(
    grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """FLOPs of the fused CPU attention kernel's backward."""
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def count_flops(step: Callable[[], object]) -> float:
    """FLOPs of everything `step()` runs (a forward, or a forward and backward), gradients as the caller
    set them."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        step()
    return float(counter.get_total_flops())


def forward_flops(fn: Callable[[Tensor], object], images: Tensor) -> float:
    """FLOPs per image of one forward `fn(images)` of images [B, 3, H, W], under `torch.no_grad()`."""
    with torch.no_grad():
        return count_flops(lambda: fn(images)) / images.shape[0]
