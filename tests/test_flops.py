"""The one FLOP counter (`distill.flops`): fused CPU attention counted forward and backward, on meta too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.flops import count_flops, forward_flops

SHAPE = (2, 3, 16, 8)  # batch, heads, tokens, head width


def attention(q: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, q, q)


def test_cpu_attention_forward_and_backward_are_counted() -> None:
    q = torch.rand(SHAPE, requires_grad=True)
    batch, heads, tokens, width = SHAPE
    product = 2 * batch * heads * tokens * tokens * width  # one [tokens x width] @ [width x tokens]
    forward = 2 * product  # q @ k^T, then the weights @ v
    assert count_flops(lambda: attention(q)) == forward
    backward = 5 * product  # q @ k^T again (the fused kernel recomputes it), the grads of v, weights, q, k
    assert count_flops(lambda: attention(q).sum().backward()) == forward + backward


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_forward_flops_are_per_image_and_alike_on_cpu_and_meta(device: str) -> None:
    layer = torch.nn.Linear(8, 4, device=device)
    images = torch.rand(3, 5, 8, device=device)  # any leading batch: 5 rows of 8 per image
    assert forward_flops(layer, images) == 2 * 5 * 8 * 4
