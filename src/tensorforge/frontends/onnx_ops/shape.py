"""Shape and layout ONNX ops: Reshape, Flatten, Transpose, (Un)Squeeze, Concat, Split, Slice, Expand, Tile,
Pad, DepthToSpace and SpaceToDepth.

Their shape arguments (Reshape's `shape`, Slice's `starts`/`ends`, ...) are tensors in ONNX and
attributes in the IR: `ctx.ints` reads them from known operands (constants, or shape computations
evaluated at import, where the batch size shows up as `Sym("batch", k)`). A shape computed from data
at run time cannot become an attribute: the converter raises and the node runs through onnxruntime.
"""

from __future__ import annotations

import itertools

from ...ir import SymExpr
from .context import Operand, normalize_axis, product
from .registry import Unsupported, onnx_converter

# opset versions from 13 on that changed only the accepted dtypes
_TYPES_ONLY = (21, 23, 24, 25)


def _axes_arg(ctx, axes, what: str = "axes"):
    """Axes given as an attribute (older opsets: a tuple) or as an input tensor (newer: an Operand)."""
    if axes is None:
        return None
    if isinstance(axes, Operand):
        return ctx.ints(axes, what)
    return tuple(axes)


@onnx_converter("Reshape", since=(5, 13, 14, 19) + _TYPES_ONLY, note="the target shape known at import")
def reshape(ctx, *, data, shape, allowzero=0):
    target = list(ctx.ints(shape, "the target shape"))
    if not allowzero:
        # ONNX: 0 copies the input's size at that position; the IR's reshape (PyTorch) means size 0
        for i, d in enumerate(target):
            if isinstance(d, int) and d == 0:
                if i >= data.rank:
                    raise Unsupported(f"shape entry {i} is 0 (copy) but the input has rank {data.rank}")
                target[i] = data.shape[i]
    if tuple(target) == tuple(data.shape):
        return data
    return ctx.emit("reshape", data, newshape=tuple(target))


@onnx_converter("Flatten", since=(11, 13) + _TYPES_ONLY)
def flatten(ctx, *, input, axis):
    rank = input.rank
    if not -rank <= axis <= rank:
        raise Unsupported(f"axis {axis} out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    outer, inner = product(input.shape[:axis]), product(input.shape[axis:])
    if axis == 1 and isinstance(inner, int):
        return ctx.emit("nn.batch_flatten", input)
    return ctx.emit("reshape", input, newshape=(outer, inner))


@onnx_converter("Transpose", since=(1, 13) + _TYPES_ONLY)
def transpose(ctx, *, data, perm):
    perm = tuple(perm) if perm is not None else tuple(reversed(range(data.rank)))
    if perm == tuple(range(data.rank)):
        return data
    return ctx.emit("transpose", data, axes=perm)


@onnx_converter("Squeeze", since=(11, 13) + _TYPES_ONLY, note="axes known at import")
def squeeze(ctx, *, data, axes=None):
    axes = _axes_arg(ctx, axes)
    if axes is None:  # every size-1 axis (a batch symbol is never taken for 1)
        axes = tuple(i for i, d in enumerate(data.shape) if d == 1)
    axes = tuple(sorted({normalize_axis(a, data.rank) for a in axes}))
    return ctx.emit("squeeze", data, axis=axes) if axes else data


@onnx_converter("Unsqueeze", since=(11, 13) + _TYPES_ONLY, note="axes known at import")
def unsqueeze(ctx, *, data, axes):
    axes = _axes_arg(ctx, axes)
    out_rank = data.rank + len(axes)
    out = data
    for axis in sorted(normalize_axis(a, out_rank) for a in axes):  # ascending: each lands where ONNX puts it
        out = ctx.emit("expand_dims", out, axis=axis)
    return out


@onnx_converter("Concat", since=(11, 13))
def concat(ctx, *, inputs, axis):
    if len(inputs) == 1:
        return inputs[0]
    return ctx.emit("concatenate", *inputs, axis=normalize_axis(axis, inputs[0].rank))


def _split(ctx, data, axis: int, sizes, num_outputs):
    axis = normalize_axis(axis, data.rank)
    dim = data.shape[axis]
    count = num_outputs or len(ctx.outputs_used)
    if sizes is None:
        if isinstance(dim, SymExpr):
            raise Unsupported("splitting the batch axis")
        if num_outputs:  # opset 18: chunks of ceil(dim / n), the last one smaller
            chunk = -(-dim // count)
            sizes = [chunk] * (count - 1) + [dim - chunk * (count - 1)]
        else:
            if dim % count:
                raise Unsupported(f"size {dim} does not split into {count} equal parts")
            sizes = [dim // count] * count
    sizes = list(sizes)
    if any(isinstance(s, SymExpr) for s in sizes) or any(s < 0 for s in sizes):
        raise Unsupported(f"split sizes {sizes} must be non-negative integers")
    if len(sizes) == 1:
        return (data,)
    indices = tuple(itertools.accumulate(sizes))[:-1]
    outs = ctx.emit("split", data, indices_or_sections=indices, axis=axis)
    return outs if isinstance(outs, tuple) else (outs,)


@onnx_converter("Split", since=11, note="not along the batch axis")
def split_11(ctx, *, input, axis, split):
    return _split(ctx, input, axis, split, None)


@onnx_converter("Split", since=(13, 18), note="split sizes known at import; not along the batch axis")
def split_13(ctx, *, input, split=None, axis, num_outputs=None):
    sizes = ctx.ints(split, "split sizes") if split is not None else None
    return _split(ctx, input, axis, sizes, num_outputs)


@onnx_converter("Slice", since=(11, 13), note="starts, ends, axes and steps known at import")
def slice_(ctx, *, data, starts, ends, axes=None, steps=None):
    starts = ctx.ints(starts, "slice starts")
    ends = ctx.ints(ends, "slice ends")
    axes = ctx.ints(axes, "slice axes") if axes is not None else tuple(range(len(starts)))
    steps = ctx.ints(steps, "slice steps") if steps is not None else (1,) * len(starts)
    axes = tuple(normalize_axis(a, data.rank) for a in axes)
    if any(isinstance(s, SymExpr) for s in steps):
        raise Unsupported("batch-dependent slice steps")

    def whole(axis, begin, end, step):
        size = data.shape[axis]
        return (
            step == 1
            and begin == 0
            and (end == size or (isinstance(end, int) and isinstance(size, int) and end >= size))
        )

    if all(whole(*args) for args in zip(axes, starts, ends, steps)):
        return data  # exporters slice [0:INT64_MAX] to say "everything"
    return ctx.emit("strided_slice", data, begin=starts, end=ends, strides=steps, axes=axes)


def _broadcast_shape(a: tuple, b: tuple) -> tuple:
    """Numpy broadcasting of two shapes (ints and Syms)."""
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        else:
            raise Unsupported(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


@onnx_converter("Expand", since=(8, 13), note="the target shape known at import")
def expand(ctx, *, input, shape):
    target = _broadcast_shape(input.shape, ctx.ints(shape, "the target shape"))
    if target == tuple(input.shape):
        return input
    return ctx.emit("broadcast_to", input, shape=target)


@onnx_converter("Tile", since=(6, 13), note="repeats known at import")
def tile(ctx, *, input, repeats):
    reps = ctx.ints(repeats, "tile repeats")
    if any(isinstance(r, SymExpr) for r in reps):
        raise Unsupported("batch-dependent tile repeats")
    if all(r == 1 for r in reps):
        return input
    return ctx.emit("tile", input, reps=reps)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "circular"}


def _pad_check(*, mode, constant_value=None, **_):
    """Modes constant, reflect, edge and wrap."""
    if mode not in _PAD_MODES:
        return f"pad mode {mode!r}"
    return None


@onnx_converter(
    "Pad", since=(11, 13, 18, 19) + _TYPES_ONLY, check=_pad_check, note="pads, axes and constant_value known at import"
)
def pad(ctx, *, data, pads, constant_value=None, axes=None, mode):
    reason = _pad_check(mode=mode)
    if reason:
        raise Unsupported(reason)
    pads = ctx.ints(pads, "pads")
    axes = ctx.ints(axes, "pad axes") if axes is not None else tuple(range(data.rank))
    axes = [normalize_axis(a, data.rank) for a in axes]
    if len(pads) != 2 * len(axes) or any(isinstance(p, SymExpr) for p in pads):
        raise Unsupported(f"pads {pads} for axes {axes}")
    width = [(0, 0)] * data.rank
    for i, axis in enumerate(axes):
        width[axis] = (pads[i], pads[i + len(axes)])
    if all(w == (0, 0) for w in width):
        return data
    value = 0
    if constant_value is not None and mode == "constant":
        if constant_value.const is None:
            raise Unsupported("a pad value computed at run time")
        value = constant_value.const.item()
    return ctx.emit("nn.pad", data, pad_width=tuple(width), pad_value=value, pad_mode=_PAD_MODES[mode])


def _space_dims(x, what: str):
    if x.rank != 4 or not all(isinstance(d, int) for d in x.shape[1:]):
        raise Unsupported(f"{what} needs 4-d data with static C, H, W")
    return x.shape


@onnx_converter("DepthToSpace", since=(11, 13, 28), note="4-d data with static C, H, W")
def depth_to_space(ctx, *, input, blocksize, mode):
    n, c, h, w = _space_dims(input, "DepthToSpace")
    b = blocksize
    if mode == "DCR":
        x = ctx.emit("reshape", input, newshape=(n, b, b, c // (b * b), h, w))
        x = ctx.emit("transpose", x, axes=(0, 3, 4, 1, 5, 2))
    else:  # CRD
        x = ctx.emit("reshape", input, newshape=(n, c // (b * b), b, b, h, w))
        x = ctx.emit("transpose", x, axes=(0, 1, 4, 2, 5, 3))
    return ctx.emit("reshape", x, newshape=(n, c // (b * b), h * b, w * b))


@onnx_converter("SpaceToDepth", since=(1, 13, 28), note="4-d data with static C, H, W")
def space_to_depth(ctx, *, input, blocksize, mode="DCR"):
    n, c, h, w = _space_dims(input, "SpaceToDepth")
    b = blocksize
    x = ctx.emit("reshape", input, newshape=(n, c, h // b, b, w // b, b))
    # DCR: blocks outermost in the new depth (the only order before opset 28); CRD: channels outermost
    x = ctx.emit("transpose", x, axes=(0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4))
    return ctx.emit("reshape", x, newshape=(n, c * b * b, h // b, w // b))
