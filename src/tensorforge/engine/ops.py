"""The engine's fused layers, declared as IR ops in the one op registry.

`engine.conv` and `engine.dense` are what `fuse_bias_activation` turns a convolution or dense layer and its
epilogue into: inputs (data, weight, [bias], [residual]) and the epilogue as attributes. Their reference
implementations compute exactly what the unfused source computed, in the source's order:

    y = conv(data, weight) + bias
    pre_activation  (ResNet:    conv -> bn -> add(residual) -> relu):  y = activation(y + residual)
    post_activation (post-norm: conv -> relu -> add(residual)):        y = activation(y) + residual

The activation runs through its own IR op's reference (`activation` names it, `activation_attrs` holds its
attributes as (name, value) pairs), so fused and unfused graphs share one definition of every activation.
GPU tactics (cuDNN fused convolutions, cuBLASLt epilogues, Triton) implement these ops; the references are
what those tactics are checked against. A convolution whose weights are wider than its data (float32 weights
of a depthwise layer in an FP16 build, see `passes/assign_precision.py`) computes in the wider type and rounds
its output to the data's type once, after the epilogue.

`engine.strided_view` is the one view among them: a whole chain of shape ops as a single `as_strided`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ir import REQUIRED, get_op, register_op

# activation ops an epilogue may hold: the IR op name -> nothing else needed, their attributes travel along
FUSABLE_ACTIVATIONS = frozenset({"nn.relu", "clip", "nn.gelu", "nn.silu", "sigmoid", "tanh", "nn.hardswish",
                                 "nn.leaky_relu"})
RESIDUAL_POSITIONS = ("pre_activation", "post_activation")

_EPILOGUE_ATTRS = {"has_bias": False, "activation": None, "activation_attrs": (), "has_residual": False,
                   "residual_position": "pre_activation"}
_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _split_extra(op: str, extra, has_bias: bool, has_residual: bool):
    if len(extra) != int(has_bias) + int(has_residual):
        raise ValueError(f"{op}: has_bias={has_bias} and has_residual={has_residual} need "
                         f"{2 + int(has_bias) + int(has_residual)} inputs, got {2 + len(extra)}")
    bias = extra[0] if has_bias else None
    residual = extra[-1] if has_residual else None
    return bias, residual


def _epilogue(op: str, y, residual, activation, activation_attrs, residual_position):
    if residual_position not in RESIDUAL_POSITIONS:
        raise ValueError(f"{op}: residual_position must be one of {RESIDUAL_POSITIONS}, got {residual_position!r}")
    if residual is not None and tuple(residual.shape) != tuple(y.shape):
        raise ValueError(f"{op}: the residual has shape {tuple(residual.shape)}, the layer's output {tuple(y.shape)}")
    if residual is not None and residual_position == "pre_activation":
        y = y + residual
    if activation is not None:
        if activation not in FUSABLE_ACTIVATIONS:
            raise ValueError(f"{op}: activation {activation!r} cannot be fused; fusable: {sorted(FUSABLE_ACTIVATIONS)}")
        (y,) = get_op(activation).run([y], dict(activation_attrs), {})
    if residual is not None and residual_position == "post_activation":
        y = y + residual
    return y


def _conv_macs(inputs, outputs, attrs) -> int:
    return math.prod(outputs[0].shape) * math.prod(inputs[1].shape[1:])


def _dense_macs(inputs, outputs, attrs) -> int:
    return math.prod(outputs[0].shape) * int(inputs[0].shape[-1])


@register_op("engine.conv", inputs=(2, 4), macs=_conv_macs,
             attrs={"ndim": REQUIRED, "strides": REQUIRED, "padding": REQUIRED, "dilation": REQUIRED, "groups": 1,
                    **_EPILOGUE_ATTRS})
def conv(data, weight, *extra, ndim, strides, padding, dilation, groups, has_bias, activation, activation_attrs,
         has_residual, residual_position):
    """engine.conv: fused convolution (1-3 d) + bias, then residual add and activation in the source's order."""
    if ndim not in _CONVOLUTIONS:
        raise ValueError(f"engine.conv: ndim must be 1, 2 or 3, got {ndim!r}")
    bias, residual = _split_extra("engine.conv", extra, has_bias, has_residual)
    if weight.dtype != data.dtype:  # float32 weights on float16 data (assign_precision keeps depthwise ones so):
        wide = torch.promote_types(weight.dtype, data.dtype)  # computed wide, rounded to the data's type once
        y = _CONVOLUTIONS[ndim](data.to(wide), weight, None if bias is None else bias.to(wide), strides, padding,
                                dilation, groups)
        residual = None if residual is None else residual.to(wide)
        return _epilogue("engine.conv", y, residual, activation, activation_attrs, residual_position).to(data.dtype)
    y = _CONVOLUTIONS[ndim](data, weight, bias, strides, padding, dilation, groups)
    return _epilogue("engine.conv", y, residual, activation, activation_attrs, residual_position)


@register_op("engine.dense", inputs=(2, 4), macs=_dense_macs, attrs=dict(_EPILOGUE_ATTRS))
def dense(data, weight, *extra, has_bias, activation, activation_attrs, has_residual, residual_position):
    """engine.dense: fused data @ weight.T + bias, then residual add and activation in the source's order."""
    bias, residual = _split_extra("engine.dense", extra, has_bias, has_residual)
    y = F.linear(data, weight, bias)
    return _epilogue("engine.dense", y, residual, activation, activation_attrs, residual_position)


def is_depthwise(node) -> bool:
    """Whether `node` is an engine.conv with one filter per channel (groups = input = output channels)."""
    if node.op != "engine.conv" or node.attrs["groups"] == 1:
        return False
    weight_shape = node.inputs[1].type.shape
    return node.attrs["groups"] == node.inputs[0].type.shape[1] == weight_shape[0] and weight_shape[1] == 1


def _affine(pair, batch: int) -> int:
    constant, per_batch = pair
    return constant + per_batch * batch


@register_op("engine.strided_view", attrs={"shape": REQUIRED, "strides": REQUIRED, "offset": (0, 0),
                                           "batch_from": None})
def strided_view(data, *, shape, strides, offset, batch_from):
    """engine.strided_view: `data` (read as the contiguous tensor it is in the IR) re-described through sizes,
    strides and a storage offset, as `Tensor.as_strided` does — what a chain of reshapes, transposes and slices
    amounts to (`fold_view_chains`). Each size, stride and the offset is an affine function of the batch,
    given as (constant, per-batch) pairs; the batch is read from `data` (`batch_from` = (axis, scale)), or
    None when nothing depends on it."""
    batch = data.shape[batch_from[0]] // batch_from[1] if batch_from is not None else 0
    base = data.contiguous()  # a view it already is keeps its own storage offset, which as_strided must add
    return base.as_strided([_affine(p, batch) for p in shape], [_affine(p, batch) for p in strides],
                           base.storage_offset() + _affine(offset, batch))
