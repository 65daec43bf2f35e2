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

Two epilogues. `cudnn_float16` / `cublas_float16` run it as PyTorch operations (`quantized_ops.finish`): no Triton
needed, but a pass over the tensor for each step (a conversion, the bias, the residual, the activation, each step
of the quantize). `cudnn_float16_epilogue` / `cublas_float16_epilogue` run it as one Triton kernel, the same
`qepilogue` the cuBLASLt tactics end with (qgemm_library.py), so the layer is three kernels: the data converted to
float16, the library's product, the epilogue. There the weight is not scaled by the layer's scale but by a power
of two, `2**-shift`, which keeps every product sum within float16's range and every weight value exact (the
epilogue multiplies the scale back by `2**shift` in float32); the product is rounded to float16 once, as an FP16
layer's output is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..epilogue import Epilogue
from ..quantized_ops import finish
from .conv_cudnn import cudnn_flags
from .gemm_triton import _nhwc_rows
from .qgemm_library import LibraryEpilogue
from .qgemm_triton import dense_kernel
from .quantized_layers import constants_reason, output_dtype
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig


def _float_reason(node: Node) -> str | None:
    """None when the float16 library tactics take the layer, else why not."""
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


def _conv_geometry(node: Node) -> tuple[Any, Any, Any, int]:
    """F.conv2d's (stride, padding, dilation, groups) of the engine.qconv `node`."""
    a = node.attrs
    return a["strides"], a["padding"], a["dilation"], a["groups"]


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
        return _float_reason(node)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight, split = _float16_operands(node, ctx)
        weight = weight.contiguous(memory_format=torch.channels_last)
        extra = _epilogue_inputs(node, ctx)
        a, config = node.attrs, ctx.config
        geometry = _conv_geometry(node)

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=torch.channels_last).half() * split
            with cudnn_flags(config):
                y = F.conv2d(x, weight, None, *geometry).float()
            return (finish(y, extra(inputs), a, channel_axis=1),)

        return run


@tactic("engine.qdense", name="cublas_float16", devices=("cuda",), priority=0, writes_arena=False, packs_weights=True)
class QuantizedDenseFloat16:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return _float_reason(node)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight, split = _float16_operands(node, ctx)
        extra = _epilogue_inputs(node, ctx)
        attrs = node.attrs

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            y = F.linear(inputs[0].half() * split, weight).float()
            return (finish(y, extra(inputs), attrs, channel_axis=-1),)

        return run


# -- the float16 library product and one Triton epilogue ---------------------------------------------------------

SUMS_LIMIT = 2.0**15  # the largest |product sum| the scaled weight allows: half of float16's largest, 65504
LARGEST_DATA = {"int8": 128.0, "float8_e4m3fn": 448.0}  # the largest |value| of the layer's 8-bit data
EPILOGUE_PRIORITY = 1  # above the multi-pass float16 tactics, below every 8-bit kernel


def float16_weight(weight: torch.Tensor, data_dtype: str) -> tuple[torch.Tensor, int] | str:
    """(the 8-bit `weight` in float16 times 2**-shift, shift), the smallest shift >= 0 for which no output channel's
    sum of products can pass SUMS_LIMIT on any data of `data_dtype`; or why the weight cannot be scaled so in
    float16 exactly (its values too small once shifted: below float16's subnormals)."""
    w = weight.float()
    worst = LARGEST_DATA[data_dtype] * float(w.abs().reshape(w.shape[0], -1).sum(dim=1).max())
    shift = max(0, math.ceil(math.log2(worst / SUMS_LIMIT))) if worst > 0 else 0
    scaled = (w * 2.0**-shift).half()
    if not torch.equal(scaled.float() * 2.0**shift, w):
        return f"the weight scaled by 2**-{shift} into float16's range loses values below float16's subnormals"
    return scaled, shift


def _epilogue_reason(node: Node) -> str | None:
    """None when the float16 product + Triton epilogue tactics take the layer, else why not."""
    reason = constants_reason(node) or _float_reason(node)
    if reason:
        return reason
    weight = node.inputs[1].data
    assert weight is not None  # constants_reason
    scaled = float16_weight(weight, node.inputs[0].type.dtype)
    return scaled if isinstance(scaled, str) else None


class _Float16Gemm:
    """The float16 product of rows a [M, K] and the scaled weight, then the layer's epilogue: a `RowsGemm`."""

    def __init__(self, node: Node, ctx: BindContext) -> None:
        self.weight, shift = _scaled_weight(node, ctx)  # [N, K]
        self.epilogue = LibraryEpilogue(node, ctx, sums_scale=2.0**shift)

    def __call__(self, a: torch.Tensor, c: torch.Tensor, residual: torch.Tensor | None) -> None:
        if c.shape[0]:
            self.epilogue(F.linear(a.to(torch.float16), self.weight), c, residual)


def _scaled_weight(node: Node, ctx: BindContext) -> tuple[torch.Tensor, int]:
    scaled = float16_weight(constant_on(node.inputs[1], ctx.device), node.inputs[0].type.dtype)
    assert not isinstance(scaled, str), scaled  # `supports` refused the layer
    return scaled


@tactic(
    "engine.qconv",
    name="cudnn_float16_epilogue",
    devices=("cuda",),
    priority=EPILOGUE_PRIORITY,
    writes_arena=False,
    packs_weights=True,
    requires_triton=True,
    input_memory_format=torch.channels_last,
)
class QuantizedConvFloat16Epilogue:
    """Not `compiles`, though its epilogue kernel compiles at its first call: cuDNN's benchmark-mode search must not
    run beside other work (compile_ahead.py), as for the float cuDNN tactics."""

    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return _epilogue_reason(node)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight, shift = _scaled_weight(node, ctx)
        weight = weight.contiguous(memory_format=torch.channels_last)
        epilogue = LibraryEpilogue(node, ctx, sums_scale=2.0**shift)
        residual_index = Epilogue.of(node).residual_index
        dtype, channels = output_dtype(node), weight.shape[0]
        geometry, config = _conv_geometry(node), ctx.config

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].to(torch.float16, memory_format=torch.channels_last)
            with cudnn_flags(config):
                sums = F.conv2d(x, weight, None, *geometry)
            y = torch.empty(sums.shape, dtype=dtype, device=x.device, memory_format=torch.channels_last)
            residual = _nhwc_rows(inputs[residual_index], channels) if residual_index is not None else None
            if y.numel():
                epilogue(_nhwc_rows(sums, channels), y.permute(0, 2, 3, 1).reshape(-1, channels), residual)
            return (y,)

        return run


@tactic(
    "engine.qdense",
    name="cublas_float16_epilogue",
    devices=("cuda",),
    priority=EPILOGUE_PRIORITY,
    packs_weights=True,
    compiles=True,
    requires_triton=True,
)
class QuantizedDenseFloat16Epilogue:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return _epilogue_reason(node)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        return dense_kernel(node, _Float16Gemm(node, ctx))
