"""Matrix products: nn.dense (a linear layer without bias), matmul (numpy semantics), nn.batch_matmul."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..registry import register_op
from ..types import TensorType


def _matmul_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    """Every output element is a dot product over the contracted dimension."""
    a = inputs[0].concrete_shape()  # count_macs has bound every symbol
    k = a[-2] if attrs.get("transpose_a") else a[-1]
    return math.prod(outputs[0].concrete_shape()) * k


@register_op("nn.dense", inputs=2, macs=_matmul_macs)
def dense(data: Tensor, weight: Tensor) -> Tensor:
    """nn.dense: data @ weight.T, weight shaped (units, in_features)."""
    return torch.nn.functional.linear(data, weight)


@register_op("matmul", inputs=2, macs=_matmul_macs)
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """matmul: matrix product with numpy broadcasting of the batch dimensions."""
    return torch.matmul(a, b)


@register_op("nn.batch_matmul", inputs=2, attrs={"transpose_a": False, "transpose_b": True}, macs=_matmul_macs)
def batch_matmul(a: Tensor, b: Tensor, transpose_a: bool, transpose_b: bool) -> Tensor:
    """nn.batch_matmul: 3-d batched product; by default b is transposed (b is (batch, N, K))."""
    if transpose_a:
        a = a.transpose(-1, -2)
    if transpose_b:
        b = b.transpose(-1, -2)
    return torch.bmm(a, b)
