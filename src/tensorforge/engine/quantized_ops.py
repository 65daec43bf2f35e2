"""The engine's quantized layers, declared as IR ops: `engine.qconv` and `engine.qdense`.

They are what `passes/fuse_quantized_layers.py` makes of a quantized graph's dequantize -> conv/dense (+ bias,
residual, activation) -> quantize, TensorRT's Q/DQ fusion: the layer reads 8-bit activations and 8-bit weights,
multiplies them in 8 bits (an exact int32 sum for int8, float32 for fp8), and its epilogue dequantizes the sum,
adds the bias and the residual, applies the activation and, where the next layer takes 8 bits too, quantizes
its result before the one store. Tensors then flow between such layers in 8 bits.

Inputs, in order (`epilogue.Epilogue` reads the bias and residual positions, one input later than engine.conv's):

- `data`: the quantized input, int8 or float8_e4m3fn, zero point 0 (symmetric: tensorforge's quantizer and
  TensorRT's explicit quantization make them so; a layer with a zero point is not fused);
- `weight`: a constant of the same type, laid out as the float layer's ([O, I/groups, k...] for a conv,
  [N, K] for a dense layer): a quarter of its float32 size in the plan;
- `scale`: float32 [O], one per output channel: the input's scale times that channel's weight scale, so that
  `accumulator * scale` is the float product the Q/DQ graph computed;
- `bias` (float, [O]) and `residual` (the output's shape) where the epilogue has them. A residual is a float
  tensor, or a quantized one when `residual_scale` is set (its dequantize fused: `residual * residual_scale`).

`out_dtype` is the output's type: a float type (the layer's dequantized result), or int8 / float8_e4m3fn with
`out_scale`, the quantize that followed the layer (`ir/ops/quantize.py`'s rounding: half to even, saturated).

The references compute in float32 what the unfused Q/DQ graph computes in float32: dequantized operands, the
float layer, its epilogue, then the quantize. Every tactic is checked against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..ir import REQUIRED, ShapeInferenceError, TensorType, get_op, register_op
from ..ir.ops.quantize import QUANTIZED_DTYPES, SYMMETRIC_DTYPES
from ..ir.types import GPU_FLOAT_DTYPES, torch_dtype
from .epilogue import EPILOGUE_ATTRS, FIRST_EXTRA_INPUT, Epilogue
from .ops import _conv_macs, _conv_shape, _dense_macs

Tensor = torch.Tensor

# the 8-bit types a quantized layer multiplies in: int8 everywhere from compute capability 7.5, fp8 from 8.9
LAYER_DTYPES = SYMMETRIC_DTYPES
QUANT_ATTRS: dict[str, Any] = {"out_dtype": REQUIRED, "out_scale": None, "residual_scale": None}
_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
FIRST_EXTRA = FIRST_EXTRA_INPUT + 1  # after data, weight and scale


def is_quantized_output(attrs: Mapping[str, Any]) -> bool:
    """Whether a quantized layer writes 8 bits (its following quantize fused), else a float type."""
    return attrs["out_dtype"] in QUANTIZED_DTYPES


def _check(op: str, inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> None:
    """The type rules of the module docstring; a ShapeInferenceError names the op and what is wrong."""
    data, weight, scale = inputs[:3]
    if data.dtype not in LAYER_DTYPES:
        raise ShapeInferenceError(f"{op}: the data must be one of {LAYER_DTYPES}, got {data.dtype}")
    if weight.dtype != data.dtype:
        raise ShapeInferenceError(f"{op}: the weight must have the data's type {data.dtype}, got {weight.dtype}")
    if scale.dtype != "float32" or scale.rank != 1:
        raise ShapeInferenceError(f"{op}: the scale must be float32 [output channels], got {scale}")
    out = attrs["out_dtype"]
    if out not in (*LAYER_DTYPES, *sorted(GPU_FLOAT_DTYPES)):
        raise ShapeInferenceError(f"{op}: out_dtype must be a float type, int8 or float8_e4m3fn; got {out!r}")
    if out in QUANTIZED_DTYPES and not isinstance(attrs["out_scale"], float):
        raise ShapeInferenceError(f"{op}: a quantized output needs out_scale (a float), got {attrs['out_scale']!r}")
    epilogue = Epilogue.from_attrs(attrs, FIRST_EXTRA)
    epilogue.check_inputs(len(inputs))
    residual = inputs[epilogue.residual_index] if epilogue.residual_index is not None else None
    if attrs["residual_scale"] is not None and (residual is None or residual.dtype not in LAYER_DTYPES):
        raise ShapeInferenceError(f"{op}: residual_scale is set, but there is no quantized residual input")


def _infer(op: str, shape_of: Any) -> Any:
    def infer(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        _check(op, inputs, attrs)
        return [TensorType(attrs["out_dtype"], shape_of(inputs, attrs))]

    return infer


def _conv_out_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> tuple[Any, ...]:
    shapes = _conv_shape(inputs[:2], attrs)
    if shapes is None:
        raise ShapeInferenceError(f"engine.qconv: ndim must be 1, 2 or 3, got {attrs.get('ndim')!r}")
    return shapes[0]


def _dense_out_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> tuple[Any, ...]:
    return (*inputs[0].shape[:-1], inputs[1].shape[0])


def finish(y: Tensor, extra: Sequence[Tensor], attrs: Mapping[str, Any], channel_axis: int) -> Tensor:
    """The quantized layer's epilogue on the float32 product `y` (accumulator x scale): bias, residual (dequantized
    where it is quantized) and activation in the source's order, then the output type (the fused quantize)."""
    epilogue = Epilogue.from_attrs(attrs, 0)
    bias, residual = epilogue.split(extra)
    if bias is not None:
        shape = [1] * y.dim()
        shape[channel_axis] = -1
        y = y + bias.float().reshape(shape)
    if residual is not None:
        scale = attrs["residual_scale"]
        residual = residual.float() * scale if scale is not None else residual.float()
    y = epilogue.apply(y, residual)
    out = attrs["out_dtype"]
    if out in QUANTIZED_DTYPES:
        scale = torch.tensor(attrs["out_scale"], device=y.device)
        (q,) = get_op("quantize").run([y, scale], {"axis": None, "dtype": out}, {})
        return q
    return y.to(torch_dtype(out))


@register_op(
    "engine.qconv",
    inputs=(3, 5),
    macs=_conv_macs,
    infer=_infer("engine.qconv", _conv_out_shape),
    attrs={
        "ndim": REQUIRED,
        "strides": REQUIRED,
        "padding": REQUIRED,
        "dilation": REQUIRED,
        "groups": 1,
        **EPILOGUE_ATTRS,
        **QUANT_ATTRS,
    },
)
def qconv(
    data: Tensor,
    weight: Tensor,
    scale: Tensor,
    *extra: Tensor,
    ndim: int,
    strides: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    **attrs: Any,
) -> Tensor:
    """engine.qconv: a convolution of 8-bit data and weights, dequantized by `scale` per output channel, then the
    epilogue and the output type (the module docstring)."""
    if ndim not in _CONVOLUTIONS:
        raise ValueError(f"engine.qconv: ndim must be 1, 2 or 3, got {ndim!r}")
    y = _CONVOLUTIONS[ndim](data.float(), weight.float(), None, strides, padding, dilation, groups)
    y = y * scale.float().reshape(1, -1, *[1] * ndim)
    return finish(y, extra, attrs, channel_axis=1)


@register_op(
    "engine.qdense",
    inputs=(3, 5),
    macs=_dense_macs,
    infer=_infer("engine.qdense", _dense_out_shape),
    attrs={**EPILOGUE_ATTRS, **QUANT_ATTRS},
)
def qdense(data: Tensor, weight: Tensor, scale: Tensor, *extra: Tensor, **attrs: Any) -> Tensor:
    """engine.qdense: data @ weight.T in 8 bits, dequantized by `scale` per output column, then the epilogue and
    the output type (the module docstring)."""
    y = F.linear(data.float(), weight.float()) * scale.float()
    return finish(y, extra, attrs, channel_axis=-1)
