"""Triton tactic for `nn.max_pool2d` over channels-last activations.

ATen's channels-last max pool (`max_pool_forward_nhwc`) runs one thread per output element with a scalar
loop over the window; on an H100 GoogLeNet's thirteen pools take ~25 us each at batch 1, more than all
its convolutions together. This kernel reads a [pixels x channels] tile per program, the channels
contiguous (one vector load per window position), and keeps the plan channels-last (the convolutions around
it are). Padding, stride, dilation and ceil_mode follow PyTorch: the output shape comes from the IR type,
and window positions outside the input are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir.types import GPU_FLOAT_DTYPES
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, sizes_at, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

BLOCK_P, BLOCK_C = 32, 64
# the float types, and the 8-bit ones a quantized graph pools (sink_dequantize moves a dequantize below the pool)
POOLED_DTYPES = GPU_FLOAT_DTYPES | {"int8", "float8_e4m3fn"}


# writes_arena=False: a channels-last output; arena views are row-major NCHW
@tactic(
    "nn.max_pool2d",
    name="triton_nhwc",
    devices=("cuda",),
    priority=10,
    writes_arena=False,
    compiles=True,
    requires_triton=True,
    input_memory_format=torch.channels_last,
)
class MaxPool2dNHWC:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        if node.inputs[0].type.dtype not in POOLED_DTYPES:
            return f"dtype {node.inputs[0].type.dtype}"
        if node.inputs[0].type.rank != 4:
            return "the kernel pools [N, C, H, W] tensors"
        return None

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        from .pool_triton_kernel import max_pool2d_nhwc

        a = node.attrs
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["pool_size"], a["strides"], a["padding"], a["dilation"]
        out_side = sizes_at(node.outputs[0].type.shape[2:])  # per run: h and w may be symbols of the profile

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=torch.channels_last)
            n, c, h, w = x.shape
            oh, ow = out_side(env)
            y = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
            pixels = n * oh * ow
            grid = (-(-pixels // BLOCK_P), -(-c // BLOCK_C))
            max_pool2d_nhwc[grid](
                x,
                y,
                pixels,
                c,
                h,
                w,
                oh,
                ow,
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
            )
            return (y,)

        return run
