"""Tensors made from attributes alone: arange, full, full_like (the constant-producing ops)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..registry import REQUIRED, register_op
from ..symbolic import SymExpr
from ..types import Dim, TensorType, as_dim, torch_dtype


def _arange_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """ceil((stop - start) / step) values for integer bounds and step (either bound may be a size expression);
    float bounds are the probes' to judge."""
    start, stop, step = attrs["start"], attrs["stop"], attrs["step"]
    if not all(isinstance(v, (int, SymExpr)) and not isinstance(v, bool) for v in (start, stop)):
        return None
    if type(step) is not int or step == 0:
        return None
    span = SymExpr.lift(stop) - start if step > 0 else SymExpr.lift(start) - stop
    return [(as_dim((span + (abs(step) - 1)) // abs(step)),)]


@register_op(
    "arange", inputs=0, attrs={"start": 0, "stop": REQUIRED, "step": 1, "dtype": "int64"}, infer_shape=_arange_shape
)
def arange(start: float, stop: float, step: float, dtype: str, *, device: torch.device | str | None = None) -> Tensor:
    """arange: start, start + step, ... up to (not including) stop."""
    return torch.arange(start, stop, step, dtype=torch_dtype(dtype), device=device)


@register_op("full", inputs=0, attrs={"shape": REQUIRED, "fill_value": 0.0, "dtype": "float32"})
def full(shape: tuple[int, ...], fill_value: float, dtype: str, *, device: torch.device | str | None = None) -> Tensor:
    """full: a tensor of `shape` filled with one value."""
    return torch.full(tuple(shape), fill_value, dtype=torch_dtype(dtype), device=device)


@register_op("full_like", attrs={"fill_value": 0.0, "dtype": None})
def full_like(data: Tensor, fill_value: float, dtype: str | None) -> Tensor:
    """full_like: a tensor shaped like `data` filled with one value (dtype of data unless given)."""
    return torch.full_like(data, fill_value, dtype=torch_dtype(dtype) if dtype else None)
