"""Reductions over axes: sum, prod, max, min, mean, argmax, argmin, variance; and the running sum, cumsum.

`axis` is a tuple of axes (None reduces everything); `keepdims` keeps reduced axes as size 1. cumsum keeps every
partial sum along one axis, so its output has its input's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..registry import REQUIRED, register_op
from ..types import torch_dtype

_AXES = {"axis": None, "keepdims": False}


def _axes(x: Tensor, axis: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(range(x.dim())) if axis is None else tuple(axis)


@register_op("sum", attrs=_AXES)
def reduce_sum(x: Tensor, axis: Sequence[int] | None, keepdims: bool) -> Tensor:
    """sum: add over `axis`."""
    return torch.sum(x, dim=_axes(x, axis), keepdim=keepdims)


@register_op("prod", attrs=_AXES)
def reduce_prod(x: Tensor, axis: Sequence[int] | None, keepdims: bool) -> Tensor:
    """prod: multiply over `axis`."""
    for a in sorted((a % x.dim() for a in _axes(x, axis)), reverse=True):
        x = torch.prod(x, dim=a, keepdim=keepdims)
    return x


@register_op("max", attrs=_AXES)
def reduce_max(x: Tensor, axis: Sequence[int] | None, keepdims: bool) -> Tensor:
    """max: maximum over `axis`."""
    return torch.amax(x, dim=_axes(x, axis), keepdim=keepdims)


@register_op("min", attrs=_AXES)
def reduce_min(x: Tensor, axis: Sequence[int] | None, keepdims: bool) -> Tensor:
    """min: minimum over `axis`."""
    return torch.amin(x, dim=_axes(x, axis), keepdim=keepdims)


@register_op("mean", attrs=_AXES)
def reduce_mean(x: Tensor, axis: Sequence[int] | None, keepdims: bool) -> Tensor:
    """mean: average over `axis`."""
    return torch.mean(x, dim=_axes(x, axis), keepdim=keepdims)


@register_op("variance", attrs={**_AXES, "unbiased": False})
def variance(x: Tensor, axis: Sequence[int] | None, keepdims: bool, unbiased: bool) -> Tensor:
    """variance: mean squared deviation over `axis` (unbiased divides by n - 1)."""
    return torch.var(x, dim=_axes(x, axis), keepdim=keepdims, correction=1 if unbiased else 0)


@register_op("argmax", attrs={"axis": None, "keepdims": False})
def argmax(x: Tensor, axis: int | None, keepdims: bool) -> Tensor:
    """argmax: index of the maximum along one axis (or of the flattened tensor when axis is None)."""
    return torch.argmax(x, dim=axis, keepdim=keepdims)


@register_op("argmin", attrs={"axis": None, "keepdims": False})
def argmin(x: Tensor, axis: int | None, keepdims: bool) -> Tensor:
    """argmin: index of the minimum along one axis (or of the flattened tensor when axis is None)."""
    return torch.argmin(x, dim=axis, keepdim=keepdims)


@register_op("cumsum", attrs={"axis": REQUIRED, "dtype": None})
def cumsum(x: Tensor, axis: int, dtype: str | None) -> Tensor:
    """cumsum: running sum along `axis`, accumulated in `dtype` (None: as PyTorch, integers and bool in int64).

    The dtype is what the sums are computed in, not a cast of the result: PyTorch's `cumsum(x, dim, dtype=)` and
    ONNX's CumSum (`dtype` = the input's, so int32 sums wrap in int32) are both one node."""
    if dtype == "bool":  # torch refuses it on the CPU, but not on meta tensors: say so before shape inference
        raise ValueError("cumsum: a running sum cannot be bool; give an integer or float dtype")
    return torch.cumsum(x, axis, dtype=torch_dtype(dtype) if dtype is not None else None)
