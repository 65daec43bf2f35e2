"""Attention: nn.scaled_dot_product_attention, with causal and additive (or boolean) masks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..registry import register_op
from ..types import TensorType


def _attention_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    """Q @ K^T and P @ V: two products of L x S x E per batch and head."""
    q, k, v = (t.concrete_shape() for t in inputs[:3])  # count_macs has bound every symbol
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


@register_op(
    "nn.scaled_dot_product_attention", inputs=(3, 4), attrs={"is_causal": False, "scale": None}, macs=_attention_macs
)
def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None, *, is_causal: bool, scale: float | None
) -> Tensor:
    """nn.scaled_dot_product_attention: softmax(Q K^T * scale + mask) V; an optional 4th input is the mask."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal, scale=scale)
