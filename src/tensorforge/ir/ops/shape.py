"""Shape and layout ops: reshape, transpose, slicing, splitting, concatenation, broadcasting.

Shape attributes may hold symbolic dimensions (`Sym`), bound to real sizes at run time, so a graph
with a dynamic batch can say "reshape to (batch, 768)".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..registry import REQUIRED, ShapeInferenceError, register_op
from ..symbolic import SymExpr
from ..types import Dim, TensorType, as_dim

# An end at or past this is "to the end" whatever the size: exporters write an open slice as 2**63 - 1, 2**31 - 1, or
# (jax2tf, as in magika's ONNX file) 10**9; no dimension of a tensor reaches a billion.
_OPEN_END = 10**9

# -- symbolic shape arithmetic (issue 14): each returns None where it does not cover the inputs -------------


def _prod(dims: Sequence[Dim]) -> SymExpr:
    total = SymExpr.const(1)
    for d in dims:
        total = total * SymExpr.from_dim(d)
    return total


def _exact_quotient(numerator: Sequence[Dim], denominator: Sequence[Dim]) -> Dim | None:
    """prod(numerator) / prod(denominator) when that is exact: equal factors cancel, then what is left of the
    denominator must be one term c*m (m a product of atoms) that divides every term of the numerator."""
    top = [SymExpr.from_dim(d) for d in numerator]
    rest: list[SymExpr] = []
    for d in (SymExpr.from_dim(d) for d in denominator):
        if d in top:
            top.remove(d)
        else:
            rest.append(d)
    num, den = _prod(top), _prod(rest)
    if len(den.terms) != 1:
        return None
    ((den_mono, den_coeff),) = den.terms
    if den_coeff <= 0:
        return None
    den_powers = dict(den_mono)
    quotient = SymExpr.const(0)
    for mono, coeff in num.terms:
        powers = dict(mono)
        if coeff % den_coeff or any(powers.get(a, 0) < p for a, p in den_powers.items()):
            return None
        term = SymExpr.const(coeff // den_coeff)
        for atom, power in mono:
            left = power - den_powers.get(atom, 0)
            factor = SymExpr.symbol(atom) if isinstance(atom, str) else atom.numerator // atom.divisor
            for _ in range(left):
                term = term * factor
        quotient = quotient + term
    return as_dim(quotient)


def _reshape_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    newshape = attrs["newshape"]
    known = [d for d in newshape if not (isinstance(d, int) and d == -1)]
    if len(known) == len(newshape):
        return [tuple(newshape)]
    if len(newshape) - len(known) != 1:
        return None
    missing = _exact_quotient(inputs[0].shape, known)
    if missing is None:
        return None
    return [tuple(missing if isinstance(d, int) and d == -1 else d for d in newshape)]


def _slice_size(size: Dim, begin: Dim, end: Dim | None, stride: int) -> Dim | None:
    if isinstance(size, int) and not isinstance(begin, SymExpr) and not isinstance(end, SymExpr):
        return len(range(*slice(begin, end, stride).indices(size)))
    if stride <= 0:
        return None

    def position(index: Dim | None, default: Dim) -> SymExpr:
        if index is None or (isinstance(index, int) and index >= _OPEN_END):
            return SymExpr.from_dim(default)
        if isinstance(index, int) and index < 0:
            return SymExpr.from_dim(size) + index
        return SymExpr.from_dim(index)

    # inside the dimension (what the probes confirm, and the run at size 1 checks for small sizes)
    span = position(end, size) - position(begin, 0)
    return as_dim((span + (stride - 1)) // stride)


def _strided_slice_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape = list(inputs[0].shape)
    begin, end = attrs["begin"], attrs["end"]
    axes = tuple(range(len(begin))) if attrs["axes"] is None else attrs["axes"]
    strides = (1,) * len(begin) if attrs["strides"] is None else attrs["strides"]
    for a, b, e, s in zip(axes, begin, end, strides):
        a %= len(shape)
        size = _slice_size(shape[a], b, e, s)
        if size is None:
            return None
        shape[a] = size
    return [tuple(shape)]


def _concatenate_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    rank = inputs[0].rank
    if any(t.rank != rank for t in inputs) or rank == 0:
        return None
    axis = attrs["axis"] % rank
    shape = list(inputs[0].shape)
    for a in range(rank):
        if a != axis and any(t.shape[a] != shape[a] for t in inputs):
            return None  # sizes that differ in form (or at all): the probes decide
    shape[axis] = as_dim(sum((SymExpr.from_dim(t.shape[axis]) for t in inputs), SymExpr.const(0)))
    return [tuple(shape)]


def _transpose_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape = inputs[0].shape
    axes = attrs["axes"] if attrs["axes"] is not None else tuple(reversed(range(len(shape))))
    if sorted(a % max(len(shape), 1) for a in axes) != list(range(len(shape))):
        return None
    return [tuple(shape[a % len(shape)] for a in axes)]


def _expand_dims_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape = list(inputs[0].shape)
    axis = attrs["axis"]
    axis = axis if axis >= 0 else axis + len(shape) + 1
    if not 0 <= axis <= len(shape):
        return None
    return [tuple(shape[:axis] + [1] * attrs["num_newaxis"] + shape[axis:])]


def _squeeze_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape = inputs[0].shape
    if attrs["axis"] is None or not shape:
        return None  # which axes go depends on the sizes: the probes (and the run at 1) decide
    drop = {a % len(shape) for a in attrs["axis"]}
    return [tuple(d for i, d in enumerate(shape) if i not in drop)]


def _split_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """n equal sections of a length L (torch.tensor_split): the first L % n are one longer, so section i is
    (L + n - 1 - i) // n. Split points cut pieces as slices do, each from one point to the next."""
    shape = list(inputs[0].shape)
    if not shape:
        return None
    axis = attrs["axis"] % len(shape)
    size, points = shape[axis], attrs["indices_or_sections"]
    if isinstance(points, int):
        if points <= 0:
            return None
        length = SymExpr.from_dim(size)
        pieces: list[Dim | None] = [as_dim((length + (points - 1 - i)) // points) for i in range(points)]
    else:
        ends: list[Dim | None] = [*points, None]
        pieces = [_slice_size(size, begin, end, 1) for begin, end in zip([0, *points], ends)]
    known = [p for p in pieces if p is not None]
    return [tuple(shape[:axis] + [p] + shape[axis + 1 :]) for p in known] if len(known) == len(pieces) else None


def _tile_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """Each size times its repeat count; the shorter of shape and reps is padded with leading 1s."""
    shape, reps = inputs[0].shape, tuple(attrs["reps"])
    rank = max(len(shape), len(reps))
    shape = (1,) * (rank - len(shape)) + shape
    reps = (1,) * (rank - len(reps)) + reps
    return [tuple(as_dim(SymExpr.from_dim(d) * r) for d, r in zip(shape, reps))]


def _broadcast_to_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """The target, where -1 keeps the input's size; each input size must be that size or 1 (a leading new axis
    takes any size). A symbolic size against a different target size holds only where they are equal: refused."""
    shape, target = inputs[0].shape, attrs["shape"]
    if len(target) < len(shape):
        return None
    lead = len(target) - len(shape)
    out = [shape[i - lead] if isinstance(t, int) and t == -1 and i >= lead else t for i, t in enumerate(target)]
    for axis, (size, want) in enumerate(zip(shape, out[lead:])):
        if (isinstance(size, int) and size == 1) or size == want:
            continue
        if not isinstance(size, SymExpr) and not isinstance(want, SymExpr):
            return None  # constants: the reference's message stands
        raise ShapeInferenceError(
            f"{size} broadcast to {want} holds only at {size} = {want} (axis {axis + lead}); an axis broadcasts "
            f"from size 1 or keeps its size (-1): make the target that size"
        )
    return [tuple(out)]


@register_op("reshape", attrs={"newshape": REQUIRED}, infer_shape=_reshape_shape)
def reshape(data: Tensor, newshape: Sequence[int]) -> Tensor:
    """reshape: to `newshape`; one entry may be -1 (inferred)."""
    return data.reshape(tuple(newshape))


@register_op("transpose", attrs={"axes": None}, infer_shape=_transpose_shape)
def transpose(data: Tensor, axes: Sequence[int] | None) -> Tensor:
    """transpose: permute the axes (None reverses them)."""
    return data.permute(tuple(axes) if axes is not None else tuple(reversed(range(data.dim()))))


@register_op("layout_transform", attrs={"src_layout": REQUIRED, "dst_layout": REQUIRED})
def layout_transform(data: Tensor, src_layout: str, dst_layout: str) -> Tensor:
    """layout_transform: permute between layouts named by letters, e.g. NCHW -> NHWC."""
    if sorted(src_layout) != sorted(dst_layout) or len(src_layout) != data.dim():
        raise ValueError(
            f"layout_transform: {src_layout} -> {dst_layout} is not a permutation of a {data.dim()}-d layout"
        )
    return data.permute(tuple(src_layout.index(c) for c in dst_layout))


@register_op("expand_dims", attrs={"axis": REQUIRED, "num_newaxis": 1}, infer_shape=_expand_dims_shape)
def expand_dims(data: Tensor, axis: int, num_newaxis: int) -> Tensor:
    """expand_dims: insert `num_newaxis` size-1 axes at `axis`."""
    axis = axis if axis >= 0 else axis + data.dim() + 1
    for _ in range(num_newaxis):
        data = data.unsqueeze(axis)
    return data


@register_op("squeeze", attrs={"axis": None}, infer_shape=_squeeze_shape)
def squeeze(data: Tensor, axis: Sequence[int] | None) -> Tensor:
    """squeeze: drop the given size-1 axes (None drops all of them)."""
    if axis is None:
        return data.squeeze()
    for a in sorted((a % data.dim() for a in axis), reverse=True):
        if data.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} has size {data.shape[a]}, not 1")
        data = data.squeeze(a)
    return data


@register_op("concatenate", inputs=(1, None), attrs={"axis": 0}, infer_shape=_concatenate_shape)
def concatenate(*data: Tensor, axis: int) -> Tensor:
    """concatenate: join the inputs along `axis`."""
    return torch.cat(data, dim=axis)


@register_op("stack", inputs=(1, None), attrs={"axis": 0})
def stack(*data: Tensor, axis: int) -> Tensor:
    """stack: join the inputs along a new axis."""
    return torch.stack(data, dim=axis)


@register_op("split", attrs={"indices_or_sections": REQUIRED, "axis": 0}, infer_shape=_split_shape)
def split(data: Tensor, indices_or_sections: int | Sequence[int], axis: int) -> tuple[Tensor, ...]:
    """split: into equal sections (an int) or at the given indices (a tuple); one output per piece."""
    if isinstance(indices_or_sections, int):
        return tuple(torch.tensor_split(data, indices_or_sections, dim=axis))
    return tuple(torch.tensor_split(data, list(indices_or_sections), dim=axis))


@register_op(
    "strided_slice",
    attrs={"begin": REQUIRED, "end": REQUIRED, "strides": None, "axes": None},
    infer_shape=_strided_slice_shape,
)
def strided_slice(
    data: Tensor, begin: Sequence[int], end: Sequence[int], strides: Sequence[int] | None, axes: Sequence[int] | None
) -> Tensor:
    """strided_slice: data[begin:end:stride] on `axes` (default the leading ones); negative indices count
    from the end and out-of-range ends are clamped, as in Python."""
    axes = tuple(range(len(begin))) if axes is None else axes
    strides = (1,) * len(begin) if strides is None else strides
    index = [slice(None)] * data.dim()
    backwards: list[tuple[int, slice]] = []
    for a, b, e, s in zip(axes, begin, end, strides):
        if s == 0:
            raise ValueError("strided_slice: a stride of 0 is not allowed")
        if s > 0:
            index[a % data.dim()] = slice(b, e, s)
        else:  # torch slicing has no negative steps: gather the indices Python's slice would visit
            backwards.append((a % data.dim(), slice(b, e, s)))
    out = data[tuple(index)]
    for a, sl in backwards:
        out = out.index_select(a, torch.arange(*sl.indices(out.shape[a]), device=out.device))
    return out


@register_op("slice_scatter", inputs=2, attrs={"axis": REQUIRED, "begin": 0, "end": REQUIRED, "stride": 1})
def slice_scatter(data: Tensor, src: Tensor, axis: int, begin: int, end: int, stride: int) -> Tensor:
    """slice_scatter: `data` with its slice data[begin:end:stride] along `axis` replaced by `src`.

    `src` has the slice's shape; negative indices count from the end and out-of-range ends are clamped, as in
    Python (what functionalization makes of `x[:, a:b] = y`)."""
    return torch.slice_scatter(data, src, axis, begin, end, stride)


@register_op("broadcast_to", attrs={"shape": REQUIRED}, infer_shape=_broadcast_to_shape)
def broadcast_to(data: Tensor, shape: Sequence[int]) -> Tensor:
    """broadcast_to: expand size-1 axes to `shape` (-1 keeps a size)."""
    return data.expand(tuple(shape))


@register_op("tile", attrs={"reps": REQUIRED}, infer_shape=_tile_shape)
def tile(data: Tensor, reps: Sequence[int]) -> Tensor:
    """tile: repeat the whole tensor `reps[i]` times along each axis."""
    return data.repeat(tuple(reps)) if len(reps) >= data.dim() else torch.tile(data, tuple(reps))


@register_op("reverse", attrs={"axis": REQUIRED})
def reverse(data: Tensor, axis: int) -> Tensor:
    """reverse: flip the order of elements along `axis`."""
    return torch.flip(data, (axis,))


@register_op("roll", attrs={"shift": REQUIRED, "axis": None})
def roll(data: Tensor, shift: int | Sequence[int], axis: int | Sequence[int] | None) -> Tensor:
    """roll: shift elements cyclically by `shift[i]` along `axis[i]` (None: over the flattened tensor, one shift)."""
    shift = (shift,) if isinstance(shift, int) else tuple(shift)
    if axis is None:
        return torch.roll(data, shift)
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    if len(shift) != len(axis):
        raise ValueError(f"roll: {len(shift)} shifts for {len(axis)} axes")
    return torch.roll(data, tuple(shift), tuple(axis))


@register_op("copy")
def copy(data: Tensor) -> Tensor:
    """copy: identity (a materialized copy)."""
    return data.clone()
