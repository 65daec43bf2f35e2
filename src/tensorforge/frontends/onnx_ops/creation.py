"""Tensors ONNX makes from attributes and shapes: Constant, ConstantOfShape, Range, Shape, Size, EyeLike.

`Shape` and `Size` of a run-time tensor are known at import (its type says them, with the batch as a
symbol), which is what lets the shape computations of exported models fold away.
"""

from __future__ import annotations

import numpy as np
import torch

from ...ir.types import dtype_name
from ..onnx_dtypes import IR_DTYPES
from .context import product
from .registry import Unsupported, onnx_converter

_TYPES_ONLY = (21, 23, 24, 25)


def _constant_check(*, value_string=None, value_strings=None, sparse_value=None, **_):
    """Dense numeric values only (no strings, no sparse tensors)."""
    if value_string is not None or value_strings is not None:
        return "string constants"
    if sparse_value is not None:
        return "sparse constants"
    return None


@onnx_converter("Constant", since=(11, 12, 13, 19) + _TYPES_ONLY, check=_constant_check)
def constant(
    ctx,
    *,
    value=None,
    sparse_value=None,
    value_float=None,
    value_floats=None,
    value_int=None,
    value_ints=None,
    value_string=None,
    value_strings=None,
):
    reason = _constant_check(value_string=value_string, value_strings=value_strings, sparse_value=sparse_value)
    if reason:
        raise Unsupported(reason)
    if value is not None:
        try:
            dtype_name(value.dtype)
        except ValueError as exc:
            raise Unsupported(str(exc)) from exc
        return ctx.const(value)
    if value_float is not None:
        return ctx.const(float(value_float), dtype=torch.float32)
    if value_floats is not None:
        return ctx.const(list(value_floats), dtype=torch.float32)
    if value_int is not None:
        return ctx.const(int(value_int), dtype=torch.int64)
    if value_ints is not None:
        return ctx.const(list(value_ints), dtype=torch.int64)
    raise Unsupported("a Constant without a value")


@onnx_converter("ConstantOfShape", since=(9, 20) + _TYPES_ONLY, note="the shape known at import")
def constant_of_shape(ctx, *, input, value=None):
    shape = ctx.ints(input, "the shape")
    fill = value.reshape(()) if value is not None else torch.tensor(0.0)
    return ctx.emit("full", shape=shape, fill_value=fill.item(), dtype=dtype_name(fill.dtype))


@onnx_converter("Range", since=(11, 27), note="start, limit and delta known at import")
def range_(ctx, *, start, limit, delta, stash_type=1):
    bounds = [ctx.scalar(x, f"Range's {name}") for x, name in ((start, "start"), (limit, "limit"), (delta, "delta"))]
    return ctx.emit("arange", start=bounds[0], stop=bounds[1], step=bounds[2], dtype=start.dtype)


@onnx_converter("Shape", since=(1, 13, 15, 19) + _TYPES_ONLY)
def shape(ctx, *, data, start=0, end=None):
    return ctx.from_dims(data.shape[slice(start, end)])


@onnx_converter("Size", since=(1, 13, 19) + _TYPES_ONLY)
def size(ctx, *, data):
    return ctx.from_dims([product(data.shape)], scalar=True)


@onnx_converter("EyeLike", since=(9, 22))
def eye_like(ctx, *, input, dtype=None, k=0):
    rows, cols = input.shape
    if not isinstance(rows, int) or not isinstance(cols, int):
        raise Unsupported("EyeLike of a batch-sized tensor")
    out_dtype = IR_DTYPES.get(dtype) if dtype is not None else input.dtype
    if out_dtype is None:
        raise Unsupported(f"ONNX element type {dtype} has no IR dtype")
    return ctx.const(torch.from_numpy(np.eye(rows, cols, k=k)), dtype=out_dtype)
