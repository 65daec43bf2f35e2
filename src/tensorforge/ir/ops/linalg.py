"""Matrix products: nn.dense (a linear layer without bias), matmul (numpy semantics), nn.batch_matmul."""

from __future__ import annotations

import math

import torch

from ..registry import register_op


def _matmul_macs(inputs, outputs, attrs) -> int:
    """Every output element is a dot product over the contracted dimension."""
    a = inputs[0].shape
    k = a[-2] if attrs.get("transpose_a") else a[-1]
    return math.prod(outputs[0].shape) * int(k)


@register_op("nn.dense", inputs=2, macs=_matmul_macs)
def dense(data, weight):
    """nn.dense: data @ weight.T, weight shaped (units, in_features)."""
    return torch.nn.functional.linear(data, weight)


@register_op("matmul", inputs=2, macs=_matmul_macs)
def matmul(a, b):
    """matmul: matrix product with numpy broadcasting of the batch dimensions."""
    return torch.matmul(a, b)


@register_op("nn.batch_matmul", inputs=2, attrs={"transpose_a": False, "transpose_b": True}, macs=_matmul_macs)
def batch_matmul(a, b, transpose_a, transpose_b):
    """nn.batch_matmul: 3-d batched product; by default b is transposed (b is (batch, N, K))."""
    if transpose_a:
        a = a.transpose(-1, -2)
    if transpose_b:
        b = b.transpose(-1, -2)
    return torch.bmm(a, b)
