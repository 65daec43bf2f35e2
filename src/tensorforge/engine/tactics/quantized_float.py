"""Quantized layers on the float libraries: cuDNN and cuBLAS in float16 on the 8-bit values, converted.

The 8-bit kernels (`qgemm_triton.py`, `qgemm_library.py`, `qconv_triton.py`) are timed against these, as TensorRT
times its INT8 kernels against FP16 ones for each layer and keeps FP16 where it is faster (a first layer of three
channels, a GEMM too small to fill the GPU). They compute what an FP16 build of the Q/DQ graph computes:

- the 8-bit values convert to float16 exactly (int8 fits its 11-bit mantissa; e4m3's 3 mantissa bits do too);
- the per-channel scale (input scale x weight scale) is folded into the weight once, at bind time, split with the
  data as sqrt(max scale) each way so that both operands are of unit size in float16 (the scale itself can be
  ~1e-6, below float16's normal range);
- the library multiplies in float16 with float32 accumulation; the epilogue (bias, residual, activation, the
  fused quantize) runs in float32 after it, as the op's reference defines it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..epilogue import Epilogue
from ..quantized_ops import finish
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig


def _supports(node: Node, config: BuilderConfig) -> str | None:
    bias = Epilogue.of(node).bias_index
    if any(node.inputs[i].data is None for i in (1, 2, bias) if i is not None):
        return "the weight, the scale and the bias must be constants"
    if node.op == "engine.qconv" and node.attrs["ndim"] != 2:
        return "cuDNN's tactic here covers 2-d convolutions"
    return None


def _float16_operands(node: Node, ctx: BindContext) -> tuple[torch.Tensor, float]:
    """(the weight dequantized to float16 with its share of the scale, the data's share: a multiplier)."""
    weight = constant_on(node.inputs[1], ctx.device).float()
    scale = constant_on(node.inputs[2], ctx.device).float()
    split = math.sqrt(float(scale.abs().max())) or 1.0
    per_channel = (scale / split).reshape(-1, *[1] * (weight.dim() - 1))
    return (weight * per_channel).half(), split


def _epilogue_inputs(node: Node, ctx: BindContext) -> Callable[[Inputs], list[torch.Tensor]]:
    """The layer's (bias, residual) as `finish` takes them, for a call's inputs: the bias bound on the device now
    (a packing tactic's constants stay on the host), the residual read from the call."""
    epilogue = Epilogue.of(node)
    bias = [constant_on(node.inputs[epilogue.bias_index], ctx.device)] if epilogue.bias_index is not None else []
    residual_index = epilogue.residual_index
    return lambda inputs: bias + ([inputs[residual_index]] if residual_index is not None else [])


@tactic(
    "engine.qconv",
    name="cudnn_float16",
    devices=("cuda",),
    priority=0,
    writes_arena=False,
    packs_weights=True,
    input_memory_format=torch.channels_last,
)
class QuantizedConvFloat16:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return _supports(node, config)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight, split = _float16_operands(node, ctx)
        weight = weight.contiguous(memory_format=torch.channels_last)
        extra = _epilogue_inputs(node, ctx)
        a = node.attrs
        stride, padding, dilation, groups = a["strides"], a["padding"], a["dilation"], a["groups"]

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=torch.channels_last).half() * split
            y = F.conv2d(x, weight, None, stride, padding, dilation, groups).float()
            return (finish(y, extra(inputs), a, channel_axis=1),)

        return run


@tactic("engine.qdense", name="cublas_float16", devices=("cuda",), priority=0, writes_arena=False, packs_weights=True)
class QuantizedDenseFloat16:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return _supports(node, config)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight, split = _float16_operands(node, ctx)
        extra = _epilogue_inputs(node, ctx)
        attrs = node.attrs

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            y = F.linear(inputs[0].half() * split, weight).float()
            return (finish(y, extra(inputs), attrs, channel_axis=-1),)

        return run
