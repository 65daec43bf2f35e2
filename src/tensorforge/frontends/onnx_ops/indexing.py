"""Indexing: Gather (numpy take), GatherElements (torch.gather), OneHot and ScatterND, negative indices included.

ScatterND has no IR op of its own. It is written with the IR's ops in the cheapest of three ways that applies:

- indices that enumerate a box, every combination of one arithmetic progression per indexed axis (what a slice
  assignment `x[:, :, 1:, ::2] = y` exports, its indices built by Range, Expand and Concat): a `strided_slice` and a
  `slice_scatter` per axis the box does not cover whole, and nothing but the updates (or the reduction of data with
  them) where it covers the data whole. The indices are read from the constants and the IR ops that compute them
  (`_affine_of`), so a box stays a box when its indices are too large to compute at import;
- other indices known at import: which update each row of the data takes is computed now, and the rows are `take`n
  from the data and the updates concatenated (once per round of duplicate indices, with a reduction);
- indices computed at run time: each update's flat row is compared with every row of the data, a one-hot matrix of
  updates by rows (limited to `ONE_HOT_LIMIT` elements), reduced to the update each row takes, or with a reduction
  to the reduction of the updates each row takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ...ir import Value
from ...ir.types import FLOAT_DTYPES, Dim, bind_dim
from .context import Operand, normalize_axis, product, same_dtype
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


@onnx_converter("OneHot", since=(11, 28), note="depth known at import")
def one_hot(ctx, *, indices, depth, values, axis=-1):
    """Each index (negative ones wrapped, floats truncated) compared with the classes 0..depth-1 along a new axis,
    the comparison selecting on_value or off_value; an index out of range matches no class."""
    size = ctx.scalar(depth, "OneHot's depth")
    if isinstance(size, float) and size == int(size):  # the spec casts a float depth to int64
        size = int(size)
    if not isinstance(size, int) or size < 0:
        raise Unsupported(f"depth {size}: the number of classes must be a non-negative integer known at import")
    if values.rank != 1 or values.shape[0] != 2:
        raise Unsupported(f"values of shape {list(values.shape)}: [off_value, on_value] has two elements")
    axis = normalize_axis(axis, indices.rank + 1)
    if indices.dtype != "int64":  # floats are truncated, as the spec says; narrower integers widened to wrap safely
        indices = ctx.emit("cast", indices, dtype="int64")
    negative = ctx.emit("less", indices, ctx.const(0))
    wrapped = ctx.emit("where", negative, ctx.emit("add", indices, ctx.const(size)), indices)
    classes = ctx.const(torch.arange(size).reshape((size,) + (1,) * (indices.rank - axis)))
    hot = ctx.emit("equal", ctx.emit("expand_dims", wrapped, axis=axis), classes)
    off, on = (ctx.emit("take", values, ctx.const(i), axis=0) for i in (0, 1))
    return ctx.emit("where", hot, on, off)


# -- ScatterND -------------------------------------------------------------------------------------

# reduction -> (the elementwise op that combines data with an update, the reduction op over several updates)
_REDUCTIONS: dict[str, tuple[str, str] | None] = {
    "none": None,
    "add": ("add", "sum"),
    "mul": ("multiply", "prod"),
    "max": ("maximum", "max"),
    "min": ("minimum", "min"),
}
# the most elements the one-hot matrix of run-time indices may hold (updates x rows, times the row size with a
# reduction), at the first probe's sizes: beyond it the node runs through onnxruntime
ONE_HOT_LIMIT = 1 << 24


def _scatter_nd_check(*, reduction="none", indices=None, data=None, **_):
    """Reduction none, add, mul, max or min; the length of the index tuples known at import."""
    if reduction not in _REDUCTIONS:
        return f"reduction {reduction!r}"
    if indices is not None and indices.type is not None:
        if indices.type.rank == 0 or not isinstance(indices.type.shape[-1], int):
            return f"indices of shape {list(indices.type.shape)}: the last axis must have a size known at import"
        if indices.type.shape[-1] == 0:
            return "index tuples of length 0 (each update replaces the whole data)"
    if data is not None and data.type is not None and reduction != "none" and data.type.dtype == "bool":
        return f"reduction {reduction!r} of a bool tensor"
    return None


@onnx_converter(
    "ScatterND",
    since=(11, 13, 16, 18),
    check=_scatter_nd_check,
    note="indices that are no box of slices: the data axes they index of sizes known at import",
)
def scatter_nd(ctx, *, data, indices, updates, reduction="none"):
    reason = _scatter_nd_check(reduction=reduction, indices=indices, data=data)
    if reason:
        raise Unsupported(reason)
    ops = _REDUCTIONS[reduction]
    box = _index_box(indices, data)
    if box is not None:
        return _write_box(ctx, data, _box_updates(ctx, updates, indices.shape[:-1], box), box, ops)
    k = indices.shape[-1]
    rows = data.shape[:k]
    if not all(isinstance(d, int) for d in rows):
        raise Unsupported(
            f"indices that are no box of slices, into data axes of sizes [{', '.join(map(str, rows))}]: those sizes "
            "must be known at import"
        )
    flat_data = _reshape(ctx, data, (math.prod(rows),) + tuple(data.shape[k:]))
    flat_updates = _reshape(ctx, updates, (product(indices.shape[:-1]),) + tuple(data.shape[k:]))
    if indices.const is not None:
        out = _scatter_known(ctx, flat_data, flat_updates, _flat_rows(indices.const, rows), ops)
    else:
        out = _scatter_one_hot(ctx, flat_data, flat_updates, _flat_rows_at_run_time(ctx, indices, rows), ops)
    return _reshape(ctx, out, data.shape)


def _reshape(ctx, x: Operand, shape: Sequence[Dim]) -> Operand:
    return x if tuple(shape) == tuple(x.shape) else ctx.emit("reshape", x, newshape=tuple(shape))


# -- a box of slices -------------------------------------------------------------------------------


class Affine(NamedTuple):
    """An integer tensor whose element at (i_0, i_1, ...) is offset + sum(coefs[a] * i_a); axes of size 1 have
    coefficient 0."""

    offset: int
    coefs: tuple[int, ...]


def _fit(t: torch.Tensor) -> Affine | None:
    """The affine form of a tensor of integers, or None when it has none."""
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.numel() == 0:
        return None
    t = t.long()
    offset = int(t.reshape(-1)[0])
    coefs = tuple(int(t.select(a, 1).reshape(-1)[0]) - offset if n > 1 else 0 for a, n in enumerate(t.shape))
    grid = torch.full(t.shape, offset, dtype=torch.long)
    for a, (n, c) in enumerate(zip(t.shape, coefs)):
        grid = grid + (c * torch.arange(n)).reshape([n if i == a else 1 for i in range(t.dim())])
    return Affine(offset, coefs) if torch.equal(grid, t) else None


def _fit_all(tensors: Sequence[torch.Tensor]) -> Affine | None:
    """The affine form all of `tensors` (the probes of a known operand) share."""
    fits = {_fit(t) for t in tensors}
    return fits.pop() if len(fits) == 1 else None


def _aligned(fit: Affine, shape: Sequence[Dim], out_shape: Sequence[Dim]) -> Affine:
    """fit, of a tensor of `shape`, broadcast to `out_shape` (numpy's alignment from the right)."""
    lead = len(out_shape) - len(shape)
    return Affine(fit.offset, (0,) * lead + tuple(c if d != 1 else 0 for c, d in zip(fit.coefs, shape)))


def _same_elements(node) -> Affine | None:
    """reshape, expand_dims, squeeze and copy that only add or drop axes of size 1: the same coefficients on the
    other axes, in order."""
    (x,) = node.inputs
    fit = _affine_of(x)
    src, dst = x.type.shape, node.output.type.shape
    if fit is None or [d for d in src if d != 1] != [d for d in dst if d != 1]:
        return None
    moving = iter(c for c, d in zip(fit.coefs, src) if d != 1)
    return Affine(fit.offset, tuple(next(moving) if d != 1 else 0 for d in dst))


def _broadcast_to(node) -> Affine | None:
    fit = _affine_of(node.inputs[0])
    return None if fit is None else _aligned(fit, node.inputs[0].type.shape, node.output.type.shape)


def _arange(node) -> Affine | None:
    start, step = node.attrs["start"], node.attrs["step"]
    if not (isinstance(start, int) and isinstance(step, int)) or node.output.type.dtype not in _INTEGER:
        return None
    return Affine(start, (step if node.output.type.shape[0] != 1 else 0,))


def _cast(node) -> Affine | None:
    integer = node.inputs[0].type.dtype in _INTEGER and node.output.type.dtype in _INTEGER
    return _affine_of(node.inputs[0]) if integer else None


def _operands(node) -> tuple[Affine, Affine] | None:
    """A binary node's two inputs as affine functions of the output's indices (broadcast to its shape), or None."""
    a, b = node.inputs
    fa, fb = _affine_of(a), _affine_of(b)
    if fa is None or fb is None:
        return None
    shape = node.output.type.shape
    return _aligned(fa, a.type.shape, shape), _aligned(fb, b.type.shape, shape)


def _add(sign: int) -> Callable:
    def rule(node) -> Affine | None:
        operands = _operands(node)
        if operands is None:
            return None
        fa, fb = operands
        return Affine(fa.offset + sign * fb.offset, tuple(x + sign * y for x, y in zip(fa.coefs, fb.coefs)))

    return rule


def _multiply(node) -> Affine | None:
    """A product where one factor is a constant number (all coefficients 0)."""
    operands = _operands(node)
    if operands is None:
        return None
    fa, fb = operands
    if any(fb.coefs):
        fa, fb = fb, fa
    if any(fb.coefs):
        return None
    return Affine(fa.offset * fb.offset, tuple(c * fb.offset for c in fa.coefs))


_INTEGER = ("int64", "int32", "int16", "int8", "uint8")
# how each IR op carries the affine form of its inputs to its output (where it keeps one)
_AFFINE_RULES: dict[str, Callable] = {
    "arange": _arange,
    "reshape": _same_elements,
    "expand_dims": _same_elements,
    "squeeze": _same_elements,
    "copy": _same_elements,
    "broadcast_to": _broadcast_to,
    "cast": _cast,
    "add": _add(1),
    "subtract": _add(-1),
    "multiply": _multiply,
}


def _affine_of(value: Value) -> Affine | None:
    """The affine form of an IR value: a constant's, or what the rules make of the op that computes it."""
    if value.data is not None:
        return _fit(value.data)
    if value.producer is None or value.producer.op not in _AFFINE_RULES:
        return None
    return _AFFINE_RULES[value.producer.op](value.producer)


def _columns(indices: Operand) -> list[Affine] | None:
    """indices[..., j] for each j, each the affine form over the leading axes, or None."""
    fits: list[Affine | None] | None
    if indices.is_known:
        fits = [_fit_all([p[..., j] for p in indices.known_probes]) for j in range(indices.shape[-1])]
    else:
        assert indices.value is not None
        fits = _value_columns(indices.value)
    if fits is None or any(fit is None for fit in fits):
        return None
    return [fit for fit in fits if fit is not None]


def _value_columns(value: Value) -> list[Affine | None] | None:
    rank = value.type.rank
    if value.data is not None:
        return [_fit(value.data[..., j]) for j in range(value.data.shape[-1])]
    node = value.producer
    if node is not None and node.op == "concatenate" and node.attrs["axis"] % rank == rank - 1:
        parts = [_value_columns(part) for part in node.inputs]
        return None if any(p is None for p in parts) else [c for p in parts if p is not None for c in p]
    if value.type.shape[-1] == 1:
        fit = _affine_of(value)
        return [None if fit is None else Affine(fit.offset, fit.coefs[:-1])]
    return None


class BoxAxis(NamedTuple):
    """One indexed axis of data in a box: the slice begin:end:stride, the box's extent along it, the leading axis of
    the indices that runs along it (None: the box is one element thick there), and whether it covers the axis."""

    begin: int
    end: Dim
    stride: int
    extent: Dim
    source: int | None
    whole: bool


def _index_box(indices: Operand, data: Operand) -> list[BoxAxis] | None:
    """Per indexed axis of data, the slice the indices run through, when they enumerate a box of slices without
    repeats; else None."""
    columns = _columns(indices)
    if columns is None:
        return None
    lead = indices.shape[:-1]
    sources: list[int | None] = []
    for column in columns:
        moving = [a for a, c in enumerate(column.coefs) if c != 0 and lead[a] != 1]
        if len(moving) > 1:
            return None
        sources.append(moving[0] if moving else None)
    used = [a for a in sources if a is not None]
    if len(set(used)) != len(used) or any(d != 1 for a, d in enumerate(lead) if a not in used):
        return None  # an index tuple repeats
    box = []
    for column, source, size in zip(columns, sources, data.shape):
        stride = column.coefs[source] if source is not None else 1
        extent = lead[source] if source is not None else 1
        begin = column.offset
        if stride < 1:
            return None
        if begin < 0:  # negative indices count from the end: all of them, or the box is no slice
            if not isinstance(size, int) or not isinstance(extent, int) or begin + stride * (extent - 1) >= 0:
                return None
            begin += size
        if begin == 0 and stride == 1 and extent == size:
            box.append(BoxAxis(0, size, 1, extent, source, whole=True))
            continue
        if not isinstance(extent, int) or (isinstance(size, int) and begin + stride * (extent - 1) >= size):
            return None
        box.append(BoxAxis(begin, begin + stride * (extent - 1) + 1, stride, extent, source, whole=False))
    return box


def _box_updates(ctx, updates: Operand, lead: Sequence[Dim], box: list[BoxAxis]) -> Operand:
    """The updates shaped as the box they fill: its axes in data's order (the leading axes of the indices may run
    along them in another), then the data's axes below the indexed ones."""
    trailing = tuple(updates.shape[len(lead) :])
    moving = [axis.source for axis in box if axis.source is not None]
    if moving != sorted(moving):
        ordered = sorted(moving)
        updates = _reshape(ctx, updates, tuple(lead[a] for a in ordered) + trailing)
        perm = [ordered.index(a) for a in moving] + list(range(len(moving), len(moving) + len(trailing)))
        updates = ctx.emit("transpose", updates, axes=tuple(perm))
    return _reshape(ctx, updates, tuple(axis.extent for axis in box) + trailing)


def _write_box(ctx, data, updates, box: list[BoxAxis], ops: tuple[str, str] | None):
    """data with its box replaced by updates (or combined with them by ops' elementwise op): a strided_slice and a
    slice_scatter per axis the box does not cover whole."""
    j = next((j for j, axis in enumerate(box) if not axis.whole), None)
    if j is None:
        return updates if ops is None else ctx.emit(ops[0], data, updates)
    begin, end, stride = box[j].begin, box[j].end, box[j].stride
    inner_box = box[:j] + [box[j]._replace(whole=True)] + box[j + 1 :]
    inner = updates
    if ops is not None or not all(axis.whole for axis in inner_box):
        part = ctx.emit("strided_slice", data, begin=(begin,), end=(end,), strides=(stride,), axes=(j,))
        inner = _write_box(ctx, part, updates, inner_box, ops)
    return ctx.emit("slice_scatter", data, inner, axis=j, begin=begin, end=end, stride=stride)


# -- indices that are no box -----------------------------------------------------------------------


def _row_strides(rows: Sequence[int]) -> list[int]:
    return [math.prod(rows[i + 1 :]) for i in range(len(rows))]


def _flat_rows(indices: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """The flat row of data each index tuple names (negative indices wrapped), as a 1-d tensor."""
    flat = indices.reshape(-1, len(rows)).long()
    bounds = torch.tensor(list(rows))
    flat = torch.where(flat < 0, flat + bounds, flat)
    if bool(((flat < 0) | (flat >= bounds)).any()):
        raise Unsupported(f"an index is out of range for the data axes of sizes {list(rows)}")
    return (flat * torch.tensor(_row_strides(rows))).sum(-1)


def _scatter_known(ctx, flat_data, flat_updates, targets: torch.Tensor, ops: tuple[str, str] | None):
    """Updates at flat rows known now: each row of the result `take`n from data and the updates concatenated; with
    a reduction, once per round of repeated rows (round r combines each row with its r-th update)."""
    m, n = flat_data.shape[0], targets.numel()
    if ops is None:  # the last update of a row wins
        last = torch.full((m,), -1, dtype=torch.long).scatter_reduce(0, targets, torch.arange(n), "amax")
        source = torch.where(last >= 0, last + m, torch.arange(m))
        rows = ctx.emit("concatenate", flat_data, flat_updates, axis=0)
        return ctx.emit("take", rows, ctx.const(source), axis=0)
    identity = ctx.emit(
        "full", shape=(1,) + tuple(flat_data.shape[1:]), fill_value=_identity(ops, flat_data), dtype=flat_data.dtype
    )
    rows = ctx.emit("concatenate", identity, flat_updates, axis=0)
    order = torch.argsort(targets, stable=True)
    _, counts = torch.unique_consecutive(targets[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    repeat = torch.empty_like(targets)
    repeat[order] = torch.arange(n) - starts  # how many earlier updates name the same row
    out = flat_data
    for r in range(int(repeat.max()) + 1 if n else 0):
        chosen = torch.nonzero(repeat == r).reshape(-1)
        source = torch.zeros(m, dtype=torch.long)
        source[targets[chosen]] = chosen + 1
        out = ctx.emit(ops[0], out, ctx.emit("take", rows, ctx.const(source), axis=0))
    return out


def _flat_rows_at_run_time(ctx, indices, rows: Sequence[int]):
    """_flat_rows in IR ops: a 1-d tensor of the flat row each index tuple names."""
    bounds = ctx.const(list(rows), dtype=indices.dtype)
    negative = ctx.emit("less", indices, ctx.const(0, dtype=indices.dtype))
    wrapped = ctx.emit("where", negative, ctx.emit("add", indices, bounds), indices)
    if len(rows) > 1:
        strides = ctx.const(_row_strides(rows), dtype=indices.dtype)
        flat = ctx.emit("sum", ctx.emit("multiply", wrapped, strides), axis=(-1,), keepdims=False)
        wrapped = same_dtype(ctx, flat, indices)
    return _reshape(ctx, wrapped, (product(indices.shape[:-1]),))


def _scatter_one_hot(ctx, flat_data, flat_updates, targets, ops: tuple[str, str] | None):
    """Updates at flat rows computed at run time, through the one-hot matrix `targets == row` of updates by rows."""
    m, n = flat_data.shape[0], targets.shape[0]
    row_size = product(flat_data.shape[1:]) if ops is not None else 1
    elements = bind_dim(n, ctx.probe_env(0)) * m * bind_dim(row_size, ctx.probe_env(0))
    if elements > ONE_HOT_LIMIT:
        raise Unsupported(
            f"run-time indices of {n} updates into {m} rows: its one-hot matrix would hold {elements} elements, "
            f"more than {ONE_HOT_LIMIT}"
        )
    column = _reshape(ctx, targets, (n, 1))
    hit = ctx.emit("equal", column, ctx.const(torch.arange(m), dtype=targets.dtype))
    if ops is None:  # the last update of a row wins
        numbers = _reshape(ctx, ctx.emit("arange", stop=n, dtype="int64"), (n, 1))
        last = ctx.emit("max", ctx.emit("where", hit, numbers, ctx.const(-1)), axis=(0,), keepdims=False)
        taken = ctx.emit("greater_equal", last, ctx.const(0))
        source = ctx.emit("where", taken, ctx.emit("add", last, ctx.const(m)), ctx.const(torch.arange(m)))
        rows = ctx.emit("concatenate", flat_data, flat_updates, axis=0)
        return ctx.emit("take", rows, source, axis=0)
    trailing = flat_data.rank - 1
    mask = _reshape(ctx, hit, (n, m) + (1,) * trailing)
    spread = ctx.emit(
        "where",
        mask,
        ctx.emit("expand_dims", flat_updates, axis=1),
        ctx.const(_identity(ops, flat_data), dtype=flat_data.dtype),
    )
    reduced = same_dtype(ctx, ctx.emit(ops[1], spread, axis=(0,), keepdims=False), flat_data)
    return ctx.emit(ops[0], flat_data, reduced)


def _identity(ops: tuple[str, str], like) -> float | int:
    """The value a reduction leaves unchanged, in like's dtype."""
    if ops[1] in ("sum", "prod"):
        return 0 if ops[1] == "sum" else 1
    if like.dtype in FLOAT_DTYPES:
        return float("-inf") if ops[1] == "max" else float("inf")
    info = torch.iinfo(like.known_type.torch_dtype)
    return info.min if ops[1] == "max" else info.max
