"""Shape and layout ops: reshape, transpose, slicing, splitting, concatenation, broadcasting.

Shape attributes may hold symbolic dimensions (`Sym`), bound to real sizes at run time, so a graph
with a dynamic batch can say "reshape to (batch, 768)".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..registry import REQUIRED, register_op


@register_op("reshape", attrs={"newshape": REQUIRED})
def reshape(data: Tensor, newshape: Sequence[int]) -> Tensor:
    """reshape: to `newshape`; one entry may be -1 (inferred)."""
    return data.reshape(tuple(newshape))


@register_op("transpose", attrs={"axes": None})
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


@register_op("expand_dims", attrs={"axis": REQUIRED, "num_newaxis": 1})
def expand_dims(data: Tensor, axis: int, num_newaxis: int) -> Tensor:
    """expand_dims: insert `num_newaxis` size-1 axes at `axis`."""
    axis = axis if axis >= 0 else axis + data.dim() + 1
    for _ in range(num_newaxis):
        data = data.unsqueeze(axis)
    return data


@register_op("squeeze", attrs={"axis": None})
def squeeze(data: Tensor, axis: Sequence[int] | None) -> Tensor:
    """squeeze: drop the given size-1 axes (None drops all of them)."""
    if axis is None:
        return data.squeeze()
    for a in sorted((a % data.dim() for a in axis), reverse=True):
        if data.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} has size {data.shape[a]}, not 1")
        data = data.squeeze(a)
    return data


@register_op("concatenate", inputs=(1, None), attrs={"axis": 0})
def concatenate(*data: Tensor, axis: int) -> Tensor:
    """concatenate: join the inputs along `axis`."""
    return torch.cat(data, dim=axis)


@register_op("stack", inputs=(1, None), attrs={"axis": 0})
def stack(*data: Tensor, axis: int) -> Tensor:
    """stack: join the inputs along a new axis."""
    return torch.stack(data, dim=axis)


@register_op("split", attrs={"indices_or_sections": REQUIRED, "axis": 0})
def split(data: Tensor, indices_or_sections: int | Sequence[int], axis: int) -> tuple[Tensor, ...]:
    """split: into equal sections (an int) or at the given indices (a tuple); one output per piece."""
    if isinstance(indices_or_sections, int):
        return tuple(torch.tensor_split(data, indices_or_sections, dim=axis))
    return tuple(torch.tensor_split(data, list(indices_or_sections), dim=axis))


@register_op("strided_slice", attrs={"begin": REQUIRED, "end": REQUIRED, "strides": None, "axes": None})
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


@register_op("broadcast_to", attrs={"shape": REQUIRED})
def broadcast_to(data: Tensor, shape: Sequence[int]) -> Tensor:
    """broadcast_to: expand size-1 axes to `shape` (-1 keeps a size)."""
    return data.expand(tuple(shape))


@register_op("tile", attrs={"reps": REQUIRED})
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
