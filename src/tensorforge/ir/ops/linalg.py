"""Matrix products: nn.dense (a linear layer without bias), matmul (numpy semantics), nn.batch_matmul."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..registry import ShapeInferenceError, register_op
from ..symbolic import SymExpr
from ..types import Dim, TensorType
from .elementwise import broadcast_dims

# -- symbolic shape arithmetic (issue 14): M, N and batch sizes move to the output, K must match ----------------


def same_size(a: Dim, b: Dim, what: str) -> bool:
    """Whether two sizes a product pairs up are the same expression; constants that differ are the reference's
    to refuse (False), a symbolic size against another size holds only where they are equal (refused here)."""
    if a == b:
        return True
    if isinstance(a, SymExpr) or isinstance(b, SymExpr):
        first, other = (a, b) if isinstance(a, SymExpr) else (b, a)
        raise ShapeInferenceError(
            f"{what}: {first} against {other} holds only at {first} = {other}; the sizes a product pairs up must "
            f"be the same expression"
        )
    return False


def _matmul_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """numpy matmul: a 1-d operand is a row (a) or a column (b) that the output does not keep."""
    a, b = inputs[0].shape, inputs[1].shape
    if not a or not b or not same_size(a[-1], b[-2] if len(b) > 1 else b[0], "the contracted size"):
        return None
    batch = broadcast_dims([a[:-2], b[:-2]])
    if batch is None:
        return None
    return [(*batch, *a[-2:-1], *(b[-1:] if len(b) > 1 else ()))]


def _dense_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    data, weight = inputs[0].shape, inputs[1].shape
    if not data or len(weight) != 2 or not same_size(data[-1], weight[1], "the contracted size"):
        return None
    return [(*data[:-1], weight[0])]


def _batch_matmul_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    a, b = inputs[0].shape, inputs[1].shape
    if len(a) != 3 or len(b) != 3 or not same_size(a[0], b[0], "the batch size"):
        return None
    (m, k_a) = (a[2], a[1]) if attrs["transpose_a"] else (a[1], a[2])
    (k_b, n) = (b[2], b[1]) if attrs["transpose_b"] else (b[1], b[2])
    if not same_size(k_a, k_b, "the contracted size"):
        return None
    return [(a[0], m, n)]


def _matmul_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    """Every output element is a dot product over the contracted dimension."""
    a = inputs[0].concrete_shape()  # count_macs has bound every symbol
    k = a[-2] if attrs.get("transpose_a") else a[-1]
    return math.prod(outputs[0].concrete_shape()) * k


@register_op("nn.dense", inputs=2, macs=_matmul_macs, infer_shape=_dense_shape)
def dense(data: Tensor, weight: Tensor) -> Tensor:
    """nn.dense: data @ weight.T, weight shaped (units, in_features)."""
    return torch.nn.functional.linear(data, weight)


@register_op("matmul", inputs=2, macs=_matmul_macs, infer_shape=_matmul_shape)
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """matmul: matrix product with numpy broadcasting of the batch dimensions."""
    return torch.matmul(a, b)


@register_op(
    "nn.batch_matmul",
    inputs=2,
    attrs={"transpose_a": False, "transpose_b": True},
    macs=_matmul_macs,
    infer_shape=_batch_matmul_shape,
)
def batch_matmul(a: Tensor, b: Tensor, transpose_a: bool, transpose_b: bool) -> Tensor:
    """nn.batch_matmul: 3-d batched product; by default b is transposed (b is (batch, N, K))."""
    if transpose_a:
        a = a.transpose(-1, -2)
    if transpose_b:
        b = b.transpose(-1, -2)
    return torch.bmm(a, b)
