"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, ArgMax/ArgMin.

Axes are an attribute before opset 18 (ReduceSum: 13) and an input after. Empty or missing axes reduce
everything unless `noop_with_empty_axes`, where ONNX returns the input; in the IR `axis=None` reduces
everything (and `axis=()` would too, as in PyTorch), so the no-op is decided here.
"""

from __future__ import annotations

import torch

from .context import Operand, normalize_axis, same_dtype
from .registry import Unsupported, onnx_converter


def _axes(ctx, data, axes):
    if isinstance(axes, Operand):
        axes = ctx.ints(axes, "reduction axes")
    if axes is None or len(axes) == 0:
        return None
    return tuple(sorted({normalize_axis(a, data.rank) for a in axes}))


def _declare(op_type: str, versions: tuple[int, ...], reduce_fn) -> None:
    """reduce_fn(ctx, data, axis, keepdims) -> Operand; axis None means every axis."""

    def convert(ctx, *, data, axes=None, keepdims=1, noop_with_empty_axes=0):
        axis = _axes(ctx, data, axes)
        if axis is None and noop_with_empty_axes:
            return _noop(ctx, op_type, data)
        reduced = range(data.rank) if axis is None else axis
        if any(data.shape[a] == 0 for a in reduced):
            return _empty(ctx, op_type, data, reduced, bool(keepdims))
        return same_dtype(ctx, reduce_fn(ctx, data, axis, bool(keepdims)), data)

    convert.__name__ = f"convert_{op_type.lower()}"
    onnx_converter(op_type, since=versions, note="axes known at import")(convert)


def _noop(ctx, op_type: str, data):
    """With no axes and noop_with_empty_axes the reference applies the elementwise part only."""
    if op_type == "ReduceSumSquare":
        return ctx.emit("multiply", data, data)
    if op_type == "ReduceL1":
        return ctx.emit("abs", data)
    if op_type in ("ReduceL2", "ReduceLogSum", "ReduceLogSumExp"):
        raise Unsupported(f"{op_type} with noop_with_empty_axes")
    return data


def _empty(ctx, op_type: str, data, reduced, keepdims: bool):
    """A reduction over zero elements is its identity (-inf for max, 0 for sum, ...); PyTorch raises for some."""
    floating = data.dtype.startswith(("float", "bfloat"))
    low: float  # or an int, or a bool: the identity in the data's own kind
    high: float
    if data.dtype == "bool":
        low, high = False, True
    elif floating:
        low, high = float("-inf"), float("inf")
    else:
        info = torch.iinfo(data.type.torch_dtype)
        low, high = info.min, info.max
    fill = {
        "ReduceMax": low,
        "ReduceMin": high,
        "ReduceProd": 1,
        "ReduceMean": float("nan"),
        "ReduceLogSum": float("-inf"),
        "ReduceLogSumExp": float("-inf"),
    }.get(op_type, 0)
    shape = tuple(1 if a in reduced else d for a, d in enumerate(data.shape) if keepdims or a not in reduced)
    return ctx.emit("full", shape=shape, fill_value=fill, dtype=data.dtype)


def _simple(ir_op: str):
    return lambda ctx, x, axis, keepdims: ctx.emit(ir_op, x, axis=axis, keepdims=keepdims)


def _sum_square(ctx, x, axis, keepdims):
    return ctx.emit("sum", ctx.emit("multiply", x, x), axis=axis, keepdims=keepdims)


def _l1(ctx, x, axis, keepdims):
    return ctx.emit("sum", ctx.emit("abs", x), axis=axis, keepdims=keepdims)


def _l2(ctx, x, axis, keepdims):
    return ctx.emit("sqrt", _sum_square(ctx, x, axis, keepdims))


def _log_sum(ctx, x, axis, keepdims):
    return ctx.emit("log", ctx.emit("sum", x, axis=axis, keepdims=keepdims))


def _log_sum_exp(ctx, x, axis, keepdims):
    # shift by the maximum so exp never overflows: log(sum(exp(x - m))) + m
    peak = ctx.emit("max", x, axis=axis, keepdims=True)
    total = ctx.emit("sum", ctx.emit("exp", ctx.emit("subtract", x, peak)), axis=axis, keepdims=keepdims)
    shift = peak if keepdims else ctx.emit("max", x, axis=axis, keepdims=False)
    return ctx.emit("add", ctx.emit("log", total), shift)


_ATTR_AXES = (11, 13)  # axes an attribute
_declare("ReduceSum", (11, 13), _simple("sum"))
_declare("ReduceMean", _ATTR_AXES + (18,), _simple("mean"))
_declare("ReduceMax", (11, 12, 13, 18, 20), _simple("max"))
_declare("ReduceMin", (11, 12, 13, 18, 20), _simple("min"))
_declare("ReduceProd", _ATTR_AXES + (18,), _simple("prod"))
_declare("ReduceSumSquare", _ATTR_AXES + (18,), _sum_square)
_declare("ReduceL1", _ATTR_AXES + (18,), _l1)
_declare("ReduceL2", _ATTR_AXES + (18,), _l2)
_declare("ReduceLogSum", _ATTR_AXES + (18, 28), _log_sum)
_declare("ReduceLogSumExp", _ATTR_AXES + (18, 28), _log_sum_exp)


def _declare_arg(op_type: str, ir_op: str) -> None:
    def convert(ctx, *, data, axis, keepdims, select_last_index=0):
        axis = normalize_axis(axis, data.rank)
        if not select_last_index:
            return ctx.emit(ir_op, data, axis=axis, keepdims=bool(keepdims))
        # the last of equal extremes: search the reversed axis, then count back from the end
        size = data.shape[axis]
        if not isinstance(size, int):
            raise Unsupported("select_last_index along the batch axis")
        found = ctx.emit(ir_op, ctx.emit("reverse", data, axis=axis), axis=axis, keepdims=bool(keepdims))
        return ctx.emit("subtract", ctx.const(size - 1), found)

    convert.__name__ = f"convert_{op_type.lower()}"
    onnx_converter(op_type, since=(11, 12, 13), note="select_last_index needs a static axis")(convert)


_declare_arg("ArgMax", "argmax")
_declare_arg("ArgMin", "argmin")


@onnx_converter("CumSum", since=(11, 14), note="axis known at import; exclusive not along the batch axis")
def cumsum(ctx, *, x, axis, exclusive=0, reverse=0):
    """The sums accumulate in x's own dtype (int32 wraps in int32), as ONNX specifies. `reverse` sums from the end
    (a flip on each side); `exclusive` leaves each element out of its own sum: x shifted by one along the axis,
    a zero in front and its last element dropped, which is exact where subtracting x afterwards would round."""
    a = normalize_axis(ctx.scalar(axis, "the CumSum axis"), x.rank)
    data = ctx.emit("reverse", x, axis=a) if reverse else x
    if exclusive:
        if not isinstance(x.shape[a], int):
            raise Unsupported("an exclusive CumSum along the batch axis (its shifted input would be batch + 1 long)")
        pad_width = tuple((1, 0) if i == a else (0, 0) for i in range(x.rank))
        padded = ctx.emit("nn.pad", data, pad_width=pad_width, pad_value=0)
        data = ctx.emit("strided_slice", padded, begin=(0,), end=(x.shape[a],), axes=(a,))
    out = ctx.emit("cumsum", data, axis=a, dtype=x.dtype)
    return ctx.emit("reverse", out, axis=a) if reverse else out
