"""Indexing: Gather (numpy take) and GatherElements (torch.gather), negative indices included."""

from __future__ import annotations

import torch

from .context import normalize_axis
from .registry import Unsupported, onnx_converter


@onnx_converter("Gather", since=(11, 13))
def gather(ctx, *, data, indices, axis):
    # the IR's take wraps negative indices itself
    return ctx.emit("take", data, indices, axis=normalize_axis(axis, data.rank))


@onnx_converter("GatherElements", since=(11, 13), note="run-time indices not along the batch axis")
def gather_elements(ctx, *, data, indices, axis):
    axis = normalize_axis(axis, data.rank)
    size = data.shape[axis]
    if indices.const is not None:  # wrap negative indices now (torch.gather rejects them)
        if isinstance(size, int):
            indices = ctx.const(torch.where(indices.const < 0, indices.const + size, indices.const))
    elif isinstance(size, int):
        negative = ctx.emit("less", indices, ctx.const(0, dtype=indices.dtype))
        wrapped = ctx.emit("add", indices, ctx.const(size, dtype=indices.dtype))
        indices = ctx.emit("where", negative, wrapped, indices)
    else:
        raise Unsupported("run-time indices along the batch axis")
    return ctx.emit("gather", data, indices, axis=axis)
