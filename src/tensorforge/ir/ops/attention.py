"""Attention: nn.scaled_dot_product_attention, with causal and additive (or boolean) masks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..registry import register_op
from ..types import Dim, TensorType
from .linalg import same_size


def _attention_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    """Q @ K^T and P @ V: two products of L x S x E per batch and head."""
    q, k, v = (t.concrete_shape() for t in inputs[:3])  # count_macs has bound every symbol
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _attention_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """q's shape with v's last size: (..., L, E) x (..., S, E) x (..., S, Ev) -> (..., L, Ev). The scores
    (..., L, S) are never an output, so `seq x seq` lives only inside the op."""
    q, k, v = (t.shape for t in inputs[:3])
    if min(len(q), len(k), len(v)) < 2:
        return None
    if not same_size(q[-1], k[-1], "the contracted size"):
        return None
    if not same_size(k[-2], v[-2], "the length of keys and values"):
        return None
    return [(*q[:-1], v[-1])]


@register_op(
    "nn.scaled_dot_product_attention",
    inputs=(3, 4),
    attrs={"is_causal": False, "scale": None},
    macs=_attention_macs,
    infer_shape=_attention_shape,
)
def scaled_dot_product_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None, *, is_causal: bool, scale: float | None
) -> Tensor:
    """nn.scaled_dot_product_attention: softmax(Q K^T * scale + mask) V; an optional 4th input is the mask."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal, scale=scale)
