"""A depthwise convolution as one Triton kernel: channels-last, float32 weights and arithmetic, fused epilogue.

MobileNet and EfficientNet spend a third of their layers in depthwise convolutions (groups = channels, one
KHxKW filter per channel). With batch norm folded in, their weights carry each channel's BN scale, and in an
FP16 build `assign_precision` keeps those weights (and the bias) in float32: rounding them to float16 was
what moved MobileNetV2's logits twice as far from FP32 eager as PyTorch's own FP16 (bench/README.md). cuDNN
needs weights in the data's type, so this kernel is the fast tactic for those layers: it reads float16 (or
bfloat16) activations, multiplies by float32 weights, adds bias, residual and activation in float32 (the GEMM
template's epilogue) and rounds once when it stores. Memory-bound like every depthwise convolution: each
program holds BLOCK_P output pixels x BLOCK_C channels, and a channels-last layout makes every load a
contiguous run of channels. Where the weights are in the data's type (float32 builds, a `.half()` model) it
competes with cuDNN on time. Measured on an H100 (bench/results): MobileNetV2's FP16 plan agrees with FP32
eager on 432/432 images (429 before), largest logit error 0.082 (0.22 before; PyTorch's FP16: 0.107), and in
the `.half()` benchmark the timing chose this kernel for 17, 13 and 8 of the 17 depthwise layers at batch 1,
32 and 128.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir.types import GPU_FLOAT_DTYPES
from ..epilogue import Epilogue
from ..ops import is_depthwise
from .gemm_triton import epilogue_flags, fusable_activation
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, sizes_at, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

BLOCK_P, BLOCK_C = 64, 32  # output pixels x channels per program: 2048 outputs, 16 per thread with 4 warps
NUM_WARPS = 4


def depthwise_reason(node: Node) -> str | None:
    """None when `node` is a 2-d depthwise engine.conv with one filter per channel, else why not."""
    if node.attrs.get("ndim") != 2:
        return "the kernel covers 2-d convolutions"
    if not is_depthwise(node):
        return "the kernel covers depthwise convolutions (groups = input channels = output channels)"
    return None


# writes_arena=False: a channels-last output; arena views are row-major NCHW
@tactic(
    "engine.conv",
    name="triton_depthwise_nhwc",
    devices=("cuda",),
    priority=30,
    writes_arena=False,
    packs_weights=True,
    compiles=True,
    requires_triton=True,
    input_memory_format=torch.channels_last,
)
class DepthwiseConv2dNHWC:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        reason = depthwise_reason(node)
        if reason:
            return reason
        if node.inputs[0].type.dtype not in GPU_FLOAT_DTYPES:
            return f"dtype {node.inputs[0].type.dtype}"
        epilogue = Epilogue.of(node)
        bias, _ = epilogue.split(node.inputs)
        if node.inputs[1].data is None or (bias is not None and bias.data is None):
            return "the weight and bias must be constants"
        act = fusable_activation(epilogue)
        return act if isinstance(act, str) else None

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        from .conv_triton_kernel import depthwise_conv2d_nhwc

        a = node.attrs
        weight = constant_on(node.inputs[1], ctx.device)
        channels, _, kh, kw = weight.shape
        taps = weight.reshape(channels, kh * kw).t().contiguous()  # [KH * KW, C]: a tap's channels are contiguous
        layer = Epilogue.of(node)
        bias_value, _ = layer.split(node.inputs)
        bias = constant_on(bias_value, ctx.device) if bias_value is not None else None
        residual_index = layer.residual_index
        (sh, sw), (ph, pw), (dh, dw) = a["strides"], a["padding"], a["dilation"]
        epilogue, (lo, hi, slope) = epilogue_flags(layer)
        flags = dict(
            epilogue,
            SH=sh,
            SW=sw,
            PH=ph,
            PW=pw,
            KH=kh,
            KW=kw,
            DH=dh,
            DW=dw,
            BLOCK_P=BLOCK_P,
            BLOCK_C=BLOCK_C,
            num_warps=NUM_WARPS,
        )
        out_side = sizes_at(node.outputs[0].type.shape[2:])  # per run: h and w may be symbols of the profile

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=torch.channels_last)
            n, c, h, w = x.shape
            oh, ow = out_side(env)
            y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
            residual = (
                inputs[residual_index].contiguous(memory_format=torch.channels_last)
                if residual_index is not None
                else y
            )
            pixels = n * oh * ow
            grid = (-(-pixels // BLOCK_P), -(-c // BLOCK_C))
            depthwise_conv2d_nhwc[grid](
                x,
                taps,
                y,
                bias if bias is not None else taps,
                residual,
                pixels,
                c,
                h,
                w,
                oh,
                ow,
                lo,
                hi,
                slope,
                **flags,
            )
            return (y,)

        return run
