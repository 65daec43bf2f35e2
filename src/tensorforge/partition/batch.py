"""Implicit batch mode: keep ops that change, reduce or mix the batch dimension outside the engine.

In implicit batch mode (TensorRT's original mode, the default as in TVM) the engine sees every activation
without its leading dimension: the batch is implicit, and every sample is computed alike. An op may then
not look across samples, drop the batch axis, or move it. The checks are generic rather than one per op:

- every activation input and output has a leading dimension, the same for all of them (this alone
  catches reshapes that fold the batch, concatenation and padding along it, broadcasting across it...);
- an `axis` / `axes` attribute naming axis 0 of an activation means the op works across samples
  (reductions over axis 0 or over everything, softmax on axis 0, split and concatenate on axis 0...);
- a handful of ops say where the batch goes in their own terms (a permutation, a slice, a repetition,
  a contraction) and get a small function each in `_SPECIAL`.

Static values (constants and what is computed from them alone) have no batch dimension and are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..ir.symbolic import SymExpr

if TYPE_CHECKING:
    from ..ir.graph import Node
    from .rules import SupportContext

_HINT = "(implicit batch mode; use_implicit_batch=False lifts this)"

# ops whose `axis` counts in the output, which has one more axis than the input
_AXIS_OF_OUTPUT = frozenset({"expand_dims", "stack"})


def _across_batch(what: str) -> str:
    return f"{what} axis 0, the batch dimension {_HINT}"


def _normalize(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _generic_axes(node: Node) -> str | None:
    """`axis` names axes of input 0 (None: all of them); axis 0 is the batch."""
    if "axis" not in node.attrs:
        return None
    axis = node.attrs["axis"]
    data = node.inputs[0].type
    rank = data.rank + (1 if node.op in _AXIS_OF_OUTPUT else 0)
    if axis is None:
        if node.op == "squeeze":  # squeezes every size-1 axis: the batch too when it is 1 (or may be)
            first = data.shape[0]
            return (
                _across_batch("squeezes every size-1 axis, which may include")
                if isinstance(first, SymExpr) or first == 1
                else None
            )
        return _across_batch(f"{node.op} over all axes (axis=None) includes")
    axes = axis if isinstance(axis, tuple) else (axis,)
    if any(_normalize(a, rank) == 0 for a in axes):
        return _across_batch(f"{node.op} acts on")
    return None


def _transpose(node: Node) -> str | None:
    axes = node.attrs["axes"]
    rank = node.inputs[0].type.rank
    first = (rank - 1) if axes is None else _normalize(axes[0], rank)
    return None if first == 0 else _across_batch("transpose moves")


def _layout_transform(node: Node) -> str | None:
    src, dst = node.attrs["src_layout"], node.attrs["dst_layout"]
    return None if src[0] == dst[0] else _across_batch("layout_transform moves")


def _strided_slice(node: Node) -> str | None:
    begin, strides = node.attrs["begin"], node.attrs["strides"]
    axes = node.attrs["axes"] if node.attrs["axes"] is not None else tuple(range(len(begin)))
    rank = node.inputs[0].type.rank
    for i, a in enumerate(axes):
        stride = 1 if strides is None else strides[i]
        if _normalize(a, rank) == 0 and (begin[i] != 0 or stride != 1):
            return _across_batch("slices")
    return None  # an end short of the batch size shows up as a changed leading dimension


def _tile(node: Node) -> str | None:
    reps = node.attrs["reps"]
    rank = node.inputs[0].type.rank
    if len(reps) > rank or (len(reps) == rank and reps[0] != 1):
        return _across_batch("tiles along")
    return None


def _rank_kept(node: Node) -> str | None:
    """broadcast_to may prepend axes; the batch would no longer lead."""
    if node.outputs[0].type.rank != node.inputs[0].type.rank:
        return _across_batch(f"{node.op} adds axes in front of")
    return None


def _contraction(node: Node, ctx: SupportContext) -> str | None:
    """A rank-1 operand, or the right operand of a 2-d product, is contracted along its axis 0."""
    for i, v in enumerate(node.inputs):
        if ctx.is_static(v):
            continue
        if v.type.rank == 1 or (i == 1 and node.op == "matmul" and v.type.rank == 2):
            return _across_batch(f"{node.op} contracts an activation along its")
    return None


def _indexed_axes(node: Node) -> str | None:
    """adv_index picks entries along each axis of `axes`."""
    rank = node.inputs[0].type.rank
    return _across_batch("indexes along") if any(_normalize(a, rank) == 0 for a in node.attrs["axes"]) else None


def _scale_axis(node: Node) -> str | None:
    """quantize/dequantize: `axis` is the axis of per-channel scales (None: one scale, an elementwise op)."""
    axis = node.attrs["axis"]
    if axis is not None and _normalize(axis, node.inputs[0].type.rank) == 0:
        return _across_batch(f"{node.op} has a scale per entry along")
    return None


_SPECIAL: dict[str, Callable[..., str | None]] = {
    "quantize": _scale_axis,
    "dequantize": _scale_axis,
    "adv_index": _indexed_axes,
    "transpose": _transpose,
    "layout_transform": _layout_transform,
    "strided_slice": _strided_slice,
    "tile": _tile,
    "broadcast_to": _rank_kept,
}
_CONTRACTIONS = frozenset({"matmul", "nn.dense", "nn.batch_matmul"})


def batch_reason(node: Node, ctx: SupportContext) -> str | None:
    """None when `node` computes every sample alike without moving the batch axis, else why not."""
    activations = [v for v in node.inputs if ctx.is_activation(v)]
    if not activations:
        return None  # computed from constants only: no batch dimension involved
    for v in activations:
        if v.type.rank == 0:
            return f"a scalar activation has no batch dimension {_HINT}"
    # what the op says about its axes comes first: it gives the most precise reason
    if node.op in _CONTRACTIONS:
        reason = _contraction(node, ctx)
    elif ctx.is_static(node.inputs[0]):
        reason = None  # the axes name a constant's axes (take from an embedding table)
    else:
        reason = _SPECIAL.get(node.op, _generic_axes)(node)
    if reason:
        return reason
    touched = activations + list(node.outputs)
    for v in node.outputs:
        if v.type.rank == 0:
            return f"the result is a scalar, without the batch dimension {_HINT}"
    if node.opdef.family == "elementwise" and len(node.inputs) > 1:
        rank = max(v.type.rank for v in node.outputs)
        for v in activations:
            if v.type.rank < rank:
                return f"broadcasts a lower-rank activation across the batch dimension {_HINT}"
    first = touched[0]
    for v in touched[1:]:
        if v.type.shape[0] != first.type.shape[0]:
            return f"its activations differ in the leading (batch) dimension {_HINT}"
    return None
