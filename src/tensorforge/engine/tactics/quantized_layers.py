"""What every tactic of a quantized layer (engine.qconv / engine.qdense, engine/quantized_ops.py) shares on the
Python side: which layers a kernel can take, the constants it binds, and the launch arguments of the common
epilogue (`quantized_epilogue_kernel.py`): the output code, the residual's and the output's scales."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir.ops.quantize import QUANTIZED_DTYPES
from ...ir.types import torch_dtype
from ..epilogue import Epilogue
from .gemm_triton import LaunchFlags, epilogue_flags, fusable_activation
from .registry import BindContext, constant_on

if TYPE_CHECKING:
    from ...ir import Node

# the store of a quantized layer's kernel (to_output's OUT): the float result, or int8 / fp8 by out_scale
OUT_CODES = {"int8": 1, "float8_e4m3fn": 2}  # any float type: 0
FP8_CAPABILITY = (8, 9)  # Ada and Hopper have fp8 tensor cores; int8 ones exist from Turing (7.5)
INT8_CAPABILITY = (7, 5)


def constants_reason(node: Node) -> str | None:
    """None when the weight, the scale and the bias (where present) are constants, else which is not, and the
    activation is one the Triton epilogue has."""
    for what, index in (("weight", 1), ("scale", 2), ("bias", Epilogue.of(node).bias_index)):
        if index is not None and node.inputs[index].data is None:
            return f"the {what} must be a constant"
    fused = fusable_activation(Epilogue.of(node))
    return fused if isinstance(fused, str) else None


def output_code(node: Node) -> int:
    """`to_output`'s OUT for the layer: 0 for a float output, else OUT_CODES[out_dtype]."""
    return OUT_CODES.get(node.attrs["out_dtype"], 0)


def output_dtype(node: Node) -> torch.dtype:
    return torch_dtype(node.attrs["out_dtype"])


def epilogue_launch(node: Node) -> tuple[LaunchFlags, tuple[float, float, float, float, float]]:
    """The compile-time flags of `quantized_epilogue` + `to_output` (HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT,
    OUT) and the run-time scalars (residual scale, clip low, clip high, leaky slope, out scale)."""
    flags, (lo, hi, slope) = epilogue_flags(Epilogue.of(node))
    flags["OUT"] = output_code(node)
    r_scale = node.attrs["residual_scale"]
    out_scale = node.attrs["out_scale"] if node.attrs["out_dtype"] in QUANTIZED_DTYPES else 1.0
    return flags, (1.0 if r_scale is None else float(r_scale), lo, hi, slope, float(out_scale))


def bound_scale_bias(node: Node, ctx: BindContext) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the per-channel scale as float32, the bias as float32 or None) on the bind device."""
    scale = constant_on(node.inputs[2], ctx.device).float().contiguous()
    index = Epilogue.of(node).bias_index
    bias = constant_on(node.inputs[index], ctx.device).float().contiguous() if index is not None else None
    return scale, bias
