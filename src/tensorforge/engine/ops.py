"""The engine's fused layers, declared as IR ops in the one op registry.

`engine.conv` and `engine.dense` are what `fuse_bias_activation` turns a convolution or dense layer and its
epilogue into: inputs (data, weight, [bias], [residual]) and the epilogue as attributes, read through one record,
`epilogue.Epilogue` (where the bias and the residual are, the activation, the residual before or after it). Their
reference implementations compute exactly what the unfused source computed, in the source's order: the product
with its bias (one library call), then `Epilogue.apply`. GPU tactics (cuDNN fused convolutions, cuBLASLt
epilogues, Triton) implement these ops; the references are what those tactics are checked against. A convolution
whose weights are wider than its data (float32 weights of a depthwise layer in an FP16 build, see
`passes/assign_precision.py`) computes in the wider type and rounds its output to the data's type once, after the
epilogue.

`engine.strided_view` is the one view among them: a whole chain of shape ops as a single `as_strided`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..ir import REQUIRED, Node, ShapeInferenceError, SymExpr, TensorType, get_op, register_op
from ..ir.types import Dim, as_dim
from .epilogue import EPILOGUE_ATTRS, Epilogue

_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


Tensor = torch.Tensor


def _epilogue(
    op: str, attrs: Mapping[str, Any], inputs: Sequence[Tensor]
) -> tuple[Epilogue, Tensor | None, Tensor | None]:
    """(the epilogue, bias, residual) of a fused layer's reference call; a ValueError names the op."""
    try:
        epilogue = Epilogue.from_attrs(attrs)
        return (epilogue, *epilogue.split(inputs))
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _tail(op: str, epilogue: Epilogue, y: Tensor, residual: Tensor | None) -> Tensor:
    """`epilogue.apply`; a ValueError names the op."""
    try:
        return epilogue.apply(y, residual)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _conv_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    return outputs[0].numel() * math.prod(inputs[1].concrete_shape()[1:])


def _conv_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """The output size arithmetic of the unfused convolution (a strided side is `(h + 2p - k) // s + 1`, which the
    probe fit alone cannot express): the data and weight decide it, the epilogue's inputs only match it."""
    ndim = attrs.get("ndim")
    arithmetic = get_op(f"nn.conv{ndim}d").infer_shape if ndim in _CONVOLUTIONS else None
    return arithmetic(inputs[:2], attrs) if arithmetic is not None else None


def _dense_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    return outputs[0].numel() * inputs[0].concrete_shape()[-1]


@register_op(
    "engine.conv",
    inputs=(2, 4),
    macs=_conv_macs,
    infer_shape=_conv_shape,
    attrs={
        "ndim": REQUIRED,
        "strides": REQUIRED,
        "padding": REQUIRED,
        "dilation": REQUIRED,
        "groups": 1,
        **EPILOGUE_ATTRS,
    },
)
def conv(
    data: Tensor,
    weight: Tensor,
    *extra: Tensor,
    ndim: int,
    strides: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    **epilogue_attrs: Any,
) -> Tensor:
    """engine.conv: fused convolution (1-3 d) + bias, then residual add and activation in the source's order."""
    if ndim not in _CONVOLUTIONS:
        raise ValueError(f"engine.conv: ndim must be 1, 2 or 3, got {ndim!r}")
    epilogue, bias, residual = _epilogue("engine.conv", epilogue_attrs, (data, weight, *extra))
    if weight.dtype != data.dtype:  # float32 weights on float16 data (assign_precision keeps depthwise ones so):
        wide = torch.promote_types(weight.dtype, data.dtype)  # computed wide, rounded to the data's type once
        y = _CONVOLUTIONS[ndim](
            data.to(wide), weight, None if bias is None else bias.to(wide), strides, padding, dilation, groups
        )
        residual = None if residual is None else residual.to(wide)
        return _tail("engine.conv", epilogue, y, residual).to(data.dtype)
    y = _CONVOLUTIONS[ndim](data, weight, bias, strides, padding, dilation, groups)
    return _tail("engine.conv", epilogue, y, residual)


@register_op("engine.dense", inputs=(2, 4), macs=_dense_macs, attrs=dict(EPILOGUE_ATTRS))
def dense(data: Tensor, weight: Tensor, *extra: Tensor, **epilogue_attrs: Any) -> Tensor:
    """engine.dense: fused data @ weight.T + bias, then residual add and activation in the source's order."""
    epilogue, bias, residual = _epilogue("engine.dense", epilogue_attrs, (data, weight, *extra))
    y = F.linear(data, weight, bias)
    return _tail("engine.dense", epilogue, y, residual)


CONV_LAYERS = ("engine.conv", "engine.qconv")  # the float and the 8-bit convolution (quantized_ops.py)


def is_depthwise(node: Node) -> bool:
    """Whether `node` is an engine.conv / engine.qconv with one filter per channel (groups = input = output
    channels)."""
    if node.op not in CONV_LAYERS or node.attrs["groups"] == 1:
        return False
    groups: int = node.attrs["groups"]
    weight_shape = node.inputs[1].type.shape
    return groups == node.inputs[0].type.shape[1] == weight_shape[0] and weight_shape[1] == 1


def pointwise_conv_reason(node: Node) -> str | None:
    """None when `node` (an engine.conv / engine.qconv) is a 1x1, 2-d, stride-1, unpadded, ungrouped convolution,
    which over channels-last rows is a plain GEMM ([N*H*W, C_in] x [C_in, C_out]); else why not."""
    a = node.attrs
    if a.get("ndim") != 2 or tuple(node.inputs[1].type.shape[2:]) != (1, 1):
        return "the GEMM covers 1x1 2-d convolutions"
    if tuple(a["strides"]) != (1, 1) or tuple(a["dilation"]) != (1, 1) or any(a["padding"]) or a["groups"] != 1:
        return "the GEMM covers stride-1, unpadded, ungrouped 1x1 convolutions"
    return None


# One size, stride or the offset of an engine.strided_view: (constant, per-batch), meaning constant + per-batch * batch.
# Each part is an int or a SymExpr over the profile's other symbols (`seq`, `h`), bound at every run by its sizes.
AffineInBatch = tuple[Dim, Dim]


def _affine(pair: tuple[int, int], batch: int) -> int:
    constant, per_batch = pair
    return constant + per_batch * batch


def _check_affine(pair: object, what: str) -> tuple[Dim, Dim]:
    """`pair` as (constant, per-batch); a ShapeInferenceError names what is malformed (a plan file is data)."""
    if (
        not isinstance(pair, tuple)
        or len(pair) != 2
        or not all(isinstance(p, SymExpr) or (isinstance(p, int) and not isinstance(p, bool)) for p in pair)
    ):
        raise ShapeInferenceError(
            f"engine.strided_view: {what} must be a (constant, per-batch) pair of ints or symbolic sizes, got {pair!r}"
        )
    return pair[0], pair[1]


def _strided_view_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]]:
    """The view's sizes in the symbols of its input: each (constant, per-batch) pair with the batch read where the
    reference reads it (`batch_from`). Checks the attributes' layout, so a malformed plan is refused at load."""
    data = inputs[0]
    shape, strides, batch_from = attrs["shape"], attrs["strides"], attrs["batch_from"]
    if not isinstance(shape, tuple) or not isinstance(strides, tuple) or len(shape) != len(strides):
        raise ShapeInferenceError(
            f"engine.strided_view: shape and strides must be tuples of one pair per axis, got {shape!r} and {strides!r}"
        )
    for i, pair in enumerate(strides):
        _check_affine(pair, f"stride {i}")
    _check_affine(attrs["offset"], "the offset")
    batch = SymExpr.const(0)
    if batch_from is not None:
        if (
            not isinstance(batch_from, tuple)
            or len(batch_from) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in batch_from)
            or not 0 <= batch_from[0] < data.rank
            or batch_from[1] < 1
        ):
            raise ShapeInferenceError(
                f"engine.strided_view: batch_from must be None or (axis of the input, scale >= 1), got {batch_from!r}"
            )
        batch = SymExpr.from_dim(data.shape[batch_from[0]]) // batch_from[1]
    sizes = (_check_affine(pair, f"size {i}") for i, pair in enumerate(shape))
    return [tuple(as_dim(SymExpr.from_dim(c) + SymExpr.from_dim(k) * batch) for c, k in sizes)]


@register_op(
    "engine.strided_view",
    attrs={"shape": REQUIRED, "strides": REQUIRED, "offset": (0, 0), "batch_from": None},
    infer_shape=_strided_view_shape,
)
def strided_view(
    data: Tensor,
    *,
    shape: Sequence[tuple[int, int]],
    strides: Sequence[tuple[int, int]],
    offset: tuple[int, int],
    batch_from: tuple[int, int] | None,
) -> Tensor:
    """engine.strided_view: `data` (read as the contiguous tensor it is in the IR) re-described through sizes,
    strides and a storage offset, as `Tensor.as_strided` does — what a chain of reshapes, transposes and slices
    amounts to (`fold_view_chains`). Each size, stride and the offset is a (constant, per-batch) pair: constant +
    per-batch * batch, the batch read from `data` (`batch_from` = (axis, scale), or None when nothing depends on
    it); a part that is a symbolic size (`768*seq`) arrives here bound to the run's sizes. The view must lie
    inside `data`: attributes that reach outside it (a damaged plan) are an error, not a read of other memory."""
    batch = data.shape[batch_from[0]] // batch_from[1] if batch_from is not None else 0
    sizes = [_affine(p, batch) for p in shape]
    steps = [_affine(p, batch) for p in strides]
    start = _affine(offset, batch)
    base = data.contiguous()  # a view it already is keeps its own storage offset, which as_strided must add
    last = start + sum((n - 1) * s for n, s in zip(sizes, steps))
    if min([start, *sizes, *steps]) < 0 or (0 not in sizes and last >= base.numel()):
        raise ValueError(
            f"engine.strided_view: sizes {sizes}, strides {steps} and offset {start} do not lie inside its input "
            f"of {base.numel()} elements ({list(data.shape)}); the plan's view does not fit the sizes it runs"
        )
    return base.as_strided(sizes, steps, base.storage_offset() + start)
