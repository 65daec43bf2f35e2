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

from ..ir import REQUIRED, Node, TensorType, get_op, register_op
from ..ir.types import Dim
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


def is_depthwise(node: Node) -> bool:
    """Whether `node` is an engine.conv with one filter per channel (groups = input = output channels)."""
    if node.op != "engine.conv" or node.attrs["groups"] == 1:
        return False
    groups: int = node.attrs["groups"]
    weight_shape = node.inputs[1].type.shape
    return groups == node.inputs[0].type.shape[1] == weight_shape[0] and weight_shape[1] == 1


AffineInBatch = tuple[int, int]  # (constant, per-batch): constant + per_batch * batch


def _affine(pair: AffineInBatch, batch: int) -> int:
    constant, per_batch = pair
    return constant + per_batch * batch


@register_op(
    "engine.strided_view", attrs={"shape": REQUIRED, "strides": REQUIRED, "offset": (0, 0), "batch_from": None}
)
def strided_view(
    data: Tensor,
    *,
    shape: Sequence[AffineInBatch],
    strides: Sequence[AffineInBatch],
    offset: AffineInBatch,
    batch_from: tuple[int, int] | None,
) -> Tensor:
    """engine.strided_view: `data` (read as the contiguous tensor it is in the IR) re-described through sizes,
    strides and a storage offset, as `Tensor.as_strided` does — what a chain of reshapes, transposes and slices
    amounts to (`fold_view_chains`). Each size, stride and the offset is an affine function of the batch,
    given as (constant, per-batch) pairs; the batch is read from `data` (`batch_from` = (axis, scale)), or
    None when nothing depends on it."""
    batch = data.shape[batch_from[0]] // batch_from[1] if batch_from is not None else 0
    base = data.contiguous()  # a view it already is keeps its own storage offset, which as_strided must add
    return base.as_strided(
        [_affine(p, batch) for p in shape],
        [_affine(p, batch) for p in strides],
        base.storage_offset() + _affine(offset, batch),
    )
