"""Explicit quantization: `quantize` (float -> int8 / uint8 / float8_e4m3fn) and `dequantize` (back to a float).

The semantics are onnxruntime's QuantizeLinear / DequantizeLinear, so an imported Q/DQ model computes what
onnxruntime computes, and they are what a calibrator inserts (TensorRT's explicit quantization):

- quantize, integer types: clamp(round_half_to_even(x / scale) + zero_point, lo, hi), in float32 whatever the
  input's float type (x / scale in float16 may round a value across a .5 boundary: the reference is FP32 math);
- quantize, float8_e4m3fn: x / scale (+ zero_point) saturated to +-448 then rounded to the nearest float8 (ONNX
  `saturate=1`; NaN stays NaN);
- dequantize: (data - zero_point) * scale in float32, then the `dtype` attribute's float type.

`axis=None` is per-tensor (scale and zero point have shape []); an int is per-channel along that axis (negative
counts from the end): scale and zero point have shape [C], C the data's size on that axis. Dequantize also takes
int32 data: the bias of a quantized layer, as onnxruntime's quantizer stores it (scale = input scale * weight
scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..registry import ShapeInferenceError, register_op
from ..symbolic import SymExpr
from ..types import FLOAT_DTYPES, GPU_FLOAT_DTYPES, TensorType, torch_dtype

QUANTIZED_DTYPES = ("int8", "uint8", "float8_e4m3fn")
# the symmetric 8-bit types (no zero point needed): those a quantized layer multiplies in (engine.quantized_ops), and
# those whose quantized weights an importer keeps 8-bit
SYMMETRIC_DTYPES = ("int8", "float8_e4m3fn")
# what dequantize reads: the quantized types, and int32 (a quantized layer's bias)
DEQUANTIZE_INPUT_DTYPES = (*QUANTIZED_DTYPES, "int32")
DEQUANTIZED_DTYPES = tuple(sorted(GPU_FLOAT_DTYPES))
FLOAT8_MAX = 448.0  # the largest finite float8_e4m3fn


def _channel_axis(axis: int | None, rank: int, op: str) -> int | None:
    """`axis` in 0..rank-1 (negative counts from the end), None for per-tensor; ShapeInferenceError if out of range."""
    if axis is None:
        return None
    if not -rank <= axis < rank:
        raise ShapeInferenceError(f"{op}: axis {axis} is out of range for data of rank {rank}")
    return axis % rank


def _check_params(op: str, inputs: Sequence[TensorType], axis: int | None, quantized: str) -> None:
    """The scale (and zero point) suit the data: float scale, shape [] per-tensor or [C] along `axis`."""
    data, scale = inputs[0], inputs[1]
    if scale.dtype not in FLOAT_DTYPES:
        raise ShapeInferenceError(f"{op}: the scale must be a float tensor, got {scale.dtype}")
    channel = _channel_axis(axis, data.rank, op)
    if channel is None:
        want: tuple[Any, ...] = ()
        if scale.shape != want:
            raise ShapeInferenceError(
                f"{op}: a per-tensor scale (axis=None) has shape [], got {list(scale.shape)}; give `axis` for "
                f"per-channel scales"
            )
    else:
        size = data.shape[channel]
        if isinstance(size, SymExpr):
            raise ShapeInferenceError(f"{op}: per-channel scales along axis {axis}, whose size {size} is symbolic")
        want = (size,)
        if scale.shape != want:
            raise ShapeInferenceError(
                f"{op}: per-channel scales along axis {axis} (size {size}) need shape [{size}], got {list(scale.shape)}"
            )
    if len(inputs) > 2:
        zero_point = inputs[2]
        if zero_point.shape != want:
            raise ShapeInferenceError(
                f"{op}: the zero point must have the scale's shape {list(want)}, got {list(zero_point.shape)}"
            )
        if zero_point.dtype != quantized:
            raise ShapeInferenceError(
                f"{op}: the zero point must have the quantized type {quantized}, got {zero_point.dtype}"
            )


def _infer_quantize(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    dtype = attrs["dtype"]
    if dtype not in QUANTIZED_DTYPES:
        raise ShapeInferenceError(f"quantize: dtype {dtype!r} is not a quantized type; use one of {QUANTIZED_DTYPES}")
    if inputs[0].dtype not in FLOAT_DTYPES:
        raise ShapeInferenceError(f"quantize: the data must be a float tensor, got {inputs[0].dtype}")
    _check_params("quantize", inputs, attrs["axis"], dtype)
    return [TensorType(dtype, inputs[0].shape)]


def _infer_dequantize(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    dtype = attrs["dtype"]
    if dtype not in DEQUANTIZED_DTYPES:
        raise ShapeInferenceError(
            f"dequantize: dtype {dtype!r} is not an output float type; use one of {DEQUANTIZED_DTYPES}"
        )
    data = inputs[0].dtype
    if data not in DEQUANTIZE_INPUT_DTYPES:
        raise ShapeInferenceError(f"dequantize: the data must be one of {DEQUANTIZE_INPUT_DTYPES}, got {data}")
    _check_params("dequantize", inputs, attrs["axis"], data)
    return [TensorType(dtype, inputs[0].shape)]


def _along(param: Tensor, data: Tensor, axis: int | None) -> Tensor:
    """A scale or zero point shaped to broadcast against `data`: [C] along `axis`, or the scalar as it is."""
    if axis is None:
        return param
    shape = [1] * data.dim()
    shape[axis % data.dim()] = -1
    return param.reshape(shape)


@register_op("quantize", attrs={"axis": None, "dtype": "int8"}, inputs=(2, 3), infer=_infer_quantize)
def quantize(data: Tensor, scale: Tensor, zero_point: Tensor | None = None, *, axis: int | None, dtype: str) -> Tensor:
    """quantize: round(x / scale) + zero_point saturated to the quantized type (onnxruntime's QuantizeLinear)."""
    scaled = data.float() / _along(scale, data, axis).float()
    target = torch_dtype(dtype)
    if dtype == "float8_e4m3fn":
        if zero_point is not None:
            scaled = scaled + _along(zero_point, data, axis).float()
        return scaled.clamp(-FLOAT8_MAX, FLOAT8_MAX).to(target)
    rounded = torch.round(scaled)  # halves to even, as nearbyint in onnxruntime
    if zero_point is not None:
        rounded = rounded + _along(zero_point, data, axis).float()
    info = torch.iinfo(target)
    return rounded.clamp(info.min, info.max).to(target)


@register_op("dequantize", attrs={"axis": None, "dtype": "float32"}, inputs=(2, 3), infer=_infer_dequantize)
def dequantize(
    data: Tensor, scale: Tensor, zero_point: Tensor | None = None, *, axis: int | None, dtype: str
) -> Tensor:
    """dequantize: (data - zero_point) * scale (onnxruntime's DequantizeLinear)."""
    if zero_point is None:
        values = data.float()
    elif data.is_floating_point():  # float8
        values = data.float() - _along(zero_point, data, axis).float()
    else:  # the difference in integers first, as onnxruntime (an int32 bias may not fit float32's 24 bits)
        values = (data.to(torch.int64) - _along(zero_point, data, axis).to(torch.int64)).float()
    return (values * _along(scale, data, axis).float()).to(torch_dtype(dtype))
