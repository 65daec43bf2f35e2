"""Explicit quantization: QuantizeLinear and DequantizeLinear as the IR's `quantize` / `dequantize`.

Models quantized by onnxruntime's `quantize_static` (QDQ format) or ModelOpt carry their scales (and zero points)
as initializers: they become the ops' constant inputs. A per-tensor scale is a scalar or a one-element vector
(both are per-tensor in ONNX); a 1-d scale of more elements is per-channel along `axis`. A quantized weight
(an int8 or float8 initializer read by a DequantizeLinear) stays 8-bit behind its dequantize, as the weights of
`tensorforge.quantize` do: the engine multiplies it in 8 bits where the layer's data is quantized too, and
dequantizes it exactly (int8 * scale in float32, as onnxruntime computes it) where the layer stays in floating
point; other constants a DequantizeLinear reads (uint8, int32 biases) fold at import. Activations keep their
quantize / dequantize pair, and the layers between compute on the values the quantized model has.
"""

from __future__ import annotations

from ...ir import get_op
from ...ir.ops.quantize import DEQUANTIZE_INPUT_DTYPES, DEQUANTIZED_DTYPES, QUANTIZED_DTYPES, SYMMETRIC_DTYPES
from ..onnx_dtypes import IR_DTYPES
from .context import OnnxContext, Operand
from .registry import Unsupported, onnx_converter

_FLOAT = 1  # TensorProto.FLOAT: the only `precision` (opset 23) the IR's FP32 reference computes in


def _params(
    ctx: OnnxContext, op: str, x: Operand, scale: Operand, zero_point: Operand | None, axis: int, block_size: int
) -> tuple[list[Operand], int | None]:
    """The scale and zero point as the IR takes them (shape [] per tensor or [C] per channel) and the IR's axis;
    Unsupported (a sentence) for what the IR ops cannot say. A scale computed at run time imports too; the engine
    takes only constant scales (calibrated models store them), so such a node runs through PyTorch."""
    if block_size:
        raise Unsupported(f"{op} with block_size={block_size} (blocked quantization) is not supported")
    params = [scale] if zero_point is None else [scale, zero_point]
    if scale.rank == 0 or (scale.rank == 1 and scale.shape[0] == 1):
        return [ctx.emit("reshape", p, newshape=()) if p.rank else p for p in params], None
    if scale.rank != 1:
        raise Unsupported(f"{op} with a {scale.rank}-d scale (blocked quantization) is not supported")
    if not -x.rank <= axis < x.rank:
        raise Unsupported(f"{op}: axis {axis} is out of range for an input of rank {x.rank}")
    return params, axis


def _quantize_check(*, y_scale=None, y_zero_point=None, block_size=0, saturate=1, **_):
    """No blocked quantization; a quantized type the IR has; float8 saturates."""
    if block_size:
        return f"block_size={block_size} (blocked quantization)"
    if y_zero_point is not None and y_zero_point.type is not None and y_zero_point.dtype not in QUANTIZED_DTYPES:
        return f"quantizing to {y_zero_point.dtype}; the IR quantizes to {', '.join(QUANTIZED_DTYPES)}"
    if not saturate and y_zero_point is not None and y_zero_point.type is not None and "float8" in y_zero_point.dtype:
        return "float8 without saturation (saturate=0): out-of-range values become NaN"
    return None


@onnx_converter("QuantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28), check=_quantize_check)
def quantize_linear(
    ctx: OnnxContext,
    *,
    x: Operand,
    y_scale: Operand,
    y_zero_point: Operand | None = None,
    axis: int = 1,
    saturate: int = 1,
    block_size: int = 0,
    output_dtype: int = 0,
    precision: int = 0,
) -> Operand:
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    elif output_dtype:
        if output_dtype not in IR_DTYPES:
            raise Unsupported(f"quantizing to ONNX element type {output_dtype}, which the IR has no dtype for")
        dtype = IR_DTYPES[output_dtype]
    else:
        dtype = "uint8"  # ONNX's default output type
    if dtype not in QUANTIZED_DTYPES:
        raise Unsupported(f"quantizing to {dtype}; the IR quantizes to {', '.join(QUANTIZED_DTYPES)}")
    if dtype == "float8_e4m3fn" and not saturate:
        raise Unsupported("float8 without saturation (saturate=0): out-of-range values become NaN")
    if precision not in (0, _FLOAT):
        raise Unsupported(f"precision={precision}: the IR computes x / scale in float32")
    params, ir_axis = _params(ctx, "QuantizeLinear", x, y_scale, y_zero_point, axis, block_size)
    return ctx.emit("quantize", x, *params, axis=ir_axis, dtype=dtype)


def _dequantize_check(*, x=None, x_scale=None, x_zero_point=None, block_size=0, **_):
    """No blocked quantization; int8, uint8, int32 or float8_e4m3fn data."""
    if block_size:
        return f"block_size={block_size} (blocked quantization)"
    if x is not None and x.type is not None and x.dtype not in DEQUANTIZE_INPUT_DTYPES:
        return f"dequantizing {x.dtype}; the IR dequantizes {', '.join(DEQUANTIZE_INPUT_DTYPES)}"
    return None


@onnx_converter("DequantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28), check=_dequantize_check)
def dequantize_linear(
    ctx: OnnxContext,
    *,
    x: Operand,
    x_scale: Operand,
    x_zero_point: Operand | None = None,
    axis: int = 1,
    block_size: int = 0,
    output_dtype: int = 0,
) -> Operand:
    if x.dtype not in DEQUANTIZE_INPUT_DTYPES:
        raise Unsupported(f"dequantizing {x.dtype}; the IR dequantizes {', '.join(DEQUANTIZE_INPUT_DTYPES)}")
    dtype = IR_DTYPES.get(output_dtype, "") if output_dtype else x_scale.dtype
    if dtype not in DEQUANTIZED_DTYPES:
        raise Unsupported(f"dequantizing to {dtype or output_dtype}; the IR dequantizes to {DEQUANTIZED_DTYPES}")
    params, ir_axis = _params(ctx, "DequantizeLinear", x, x_scale, x_zero_point, axis, block_size)
    if x.is_known and x.dtype in SYMMETRIC_DTYPES and all(p.is_known for p in params):
        # a quantized weight stays 8-bit, as tensorforge.quantize's do after constant folding: the engine multiplies
        # it in 8 bits (engine/passes/fuse_quantized_layers.py) and dequantizes it itself where it cannot
        attrs = get_op("dequantize").normalize_attrs({"axis": ir_axis, "dtype": dtype})
        values = [ctx.materialize(operand) for operand in (x, *params)]
        (out,) = ctx.graph.add_node("dequantize", values, attrs, name=ctx.node_name).outputs
        return Operand(out.name, out.type, value=out)
    return ctx.emit("dequantize", x, *params, axis=ir_axis, dtype=dtype)
