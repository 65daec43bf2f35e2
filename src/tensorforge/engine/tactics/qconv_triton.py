"""Triton tactics for quantized convolutions (`engine.qconv`, engine/quantized_ops.py) over channels-last 8-bit data.

A quantized network's convolutions are where its time goes, and no library the engine calls fuses what a Q/DQ
layer needs: 8-bit operands on the tensor cores, the per-channel dequantize, bias, residual (itself 8-bit or
float), activation and the next layer's quantize, all before one store. These kernels do, so a layer reads 8 bits
and writes 8 bits (a quarter of float32's traffic) in one launch:

- `triton_qconv_<int8|fp8>_<BMxBNxBK>`: an implicit GEMM (qconv_triton_kernel.py) for ungrouped convolutions of
  any kernel size, stride, padding and dilation, one tactic per tile so the builder times them on each layer's
  shapes, as it does the float GEMM tiles. The `gather` tile reads K densely across (kh, kw, c_in): for the few
  input channels of a network's stem, where padding every tap's channels to BLOCK_K would multiply mostly zeros.
- `triton_qdepthwise_<int8|fp8>`: depthwise convolutions (groups = channels), memory-bound, no tensor cores.

1x1, stride-1, unpadded, ungrouped convolutions are plain GEMMs over the channels-last rows: the qgemm tactics
take them, and these refuse them. Grouped convolutions other than depthwise ones are not covered (the eager
tactic runs them). Weights are packed once, at bind time; outputs are channels-last (the arena's views are
row-major NCHW, hence writes_arena=False), and inputs are expected channels-last (`input_memory_format`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from ..epilogue import Epilogue
from ..ops import is_depthwise, pointwise_conv_reason
from .gemm_triton import GROUP_M, Tile, _cdiv
from .quantized_layers import (
    FP8_CAPABILITY,
    INT8_CAPABILITY,
    bound_scale_bias,
    constants_reason,
    epilogue_launch,
    output_dtype,
)
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, sizes_at, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

DTYPES = {"int8": "int8", "float8_e4m3fn": "fp8"}  # the data's type -> its part of the tactic names
CAPABILITIES = {"int8": INT8_CAPABILITY, "float8_e4m3fn": FP8_CAPABILITY}
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). 8-bit tiles are half the bytes of float16 ones, so Hopper's
# shared memory holds 3-4 stages even of 128x128; BLOCK_K=32 suits layers of few input channels per tap.
TILES: dict[str, Tile] = {
    "128x128x64": (128, 128, 64, 8, 3),
    "128x64x64": (128, 64, 64, 4, 4),
    "64x64x64": (64, 64, 64, 4, 4),
    "64x128x32": (64, 128, 32, 4, 4),
}
# Optimization level 0 takes the first supported tactic: for most layers the first of these (the middle ground)
TILE_PREFERENCE = ("128x64x64", "128x128x64", "64x64x64", "64x128x32")
GATHER_TILES: dict[str, Tile] = {"gather_128x64x32": (128, 64, 32, 4, 3)}
# The gather tile pays per-element index arithmetic and unvectorized loads: worth it only where per-tap padding
# would waste most of each K step (fewer input channels than this)
GATHER_MAX_CHANNELS = 16
DEPTHWISE_BLOCK_P, DEPTHWISE_BLOCK_C, DEPTHWISE_WARPS = 32, 64, 4  # 64 int8 channels: one 64-byte run per pixel


def _common_reason(node: Node, dtype: str) -> str | None:
    """What every tactic here needs: its data type, a 2-d convolution, constant weights, a fusable activation."""
    data = node.inputs[0].type.dtype
    if data != dtype:
        return f"the tactic takes {dtype} data; this layer's is {data} (triton_*_{DTYPES.get(data, data)} take it)"
    if node.attrs["ndim"] != 2:
        return "the kernels cover 2-d convolutions"
    return constants_reason(node)


def pack_weights(weight: torch.Tensor, block_k: int, gather: bool) -> torch.Tensor:
    """[C_out, C_in, KH, KW] 8-bit weights as the implicit GEMM's B: [C_out, KP], each output channel's K (kh, kw,
    c_in order, c_in fastest) contiguous and zero-padded so that every BLOCK_K step is whole. Per-tap K pads each
    tap's channels to a multiple of block_k; gathered K (gather=True) pads only the end. Packed through an int8
    view: zero bits are zero in both 8-bit types, and torch pads fp8 tensors on no device."""
    c_out, c_in, kh, kw = weight.shape
    taps = weight.view(torch.int8).permute(0, 2, 3, 1)  # [C_out, KH, KW, C_in]
    if gather:
        k = kh * kw * c_in
        packed = torch.zeros((c_out, _cdiv(k, block_k) * block_k), dtype=torch.int8, device=weight.device)
        packed[:, :k] = taps.reshape(c_out, k)
    else:
        padded = torch.zeros((c_out, kh, kw, _cdiv(c_in, block_k) * block_k), dtype=torch.int8, device=weight.device)
        padded[..., :c_in] = taps
        packed = padded.reshape(c_out, -1)
    return packed.view(weight.dtype)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)  # no copy where it already is


class _ImplicitGemm:
    """An ungrouped convolution as the implicit GEMM; subclasses fix the data type and the tile."""

    dtype: str
    tile: Tile
    gather: bool

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        reason = _common_reason(node, cls.dtype)
        if reason:
            return reason
        if node.attrs["groups"] != 1:
            return "the implicit GEMM covers ungrouped convolutions (triton_qdepthwise_* takes depthwise ones)"
        if pointwise_conv_reason(node) is None:
            return "1x1, stride-1, unpadded, ungrouped convolutions are GEMMs: the qgemm tactics take them"
        if cls.gather and node.inputs[1].type.concrete_shape()[1] >= GATHER_MAX_CHANNELS:  # a constant: static
            return f"the gather tile is for layers of fewer than {GATHER_MAX_CHANNELS} input channels"
        return None

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        from .qconv_triton_kernel import qconv2d_implicit_gemm_nhwc

        block_m, block_n, block_k, num_warps, num_stages = cls.tile
        weight = constant_on(node.inputs[1], ctx.device)
        c_out, c_in, kh, kw = weight.shape
        packed = pack_weights(weight, block_k, cls.gather)
        scale, bias = bound_scale_bias(node, ctx)
        epilogue, (r_scale, lo, hi, slope, out_scale) = epilogue_launch(node)
        residual_index = Epilogue.of(node).residual_index
        out_type = output_dtype(node)
        a = node.attrs
        (sh, sw), (ph, pw), (dh, dw) = a["strides"], a["padding"], a["dilation"]
        flags = dict(  # compile-time arguments, fixed by the layer: worked out once
            epilogue,
            C_IN=c_in,
            KH=kh,
            KW=kw,
            SH=sh,
            SW=sw,
            PH=ph,
            PW=pw,
            DH=dh,
            DW=dw,
            INT8=cls.dtype == "int8",
            GATHER=cls.gather,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            GROUP=GROUP_M,
            num_warps=num_warps,
            num_stages=num_stages,
        )
        out_side = sizes_at(node.outputs[0].type.shape[2:])  # per run: h and w may be symbols of the profile

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = _channels_last(inputs[0])
            n, _, h, w = x.shape
            oh, ow = out_side(env)
            y = torch.empty((n, c_out, oh, ow), dtype=out_type, device=x.device, memory_format=torch.channels_last)
            m = n * oh * ow
            if m == 0:
                return (y,)
            residual = _channels_last(inputs[residual_index]) if residual_index is not None else y
            grid = (_cdiv(m, block_m) * _cdiv(c_out, block_n),)
            qconv2d_implicit_gemm_nhwc[grid](
                x,
                packed,
                y,
                scale,
                bias if bias is not None else scale,
                residual,
                m,
                h,
                w,
                oh,
                ow,
                c_out,
                packed.shape[1],
                r_scale,
                lo,
                hi,
                slope,
                out_scale,
                **flags,
            )
            return (y,)

        return run


class _Depthwise:
    """A depthwise convolution; subclasses fix the data type."""

    dtype: str

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        reason = _common_reason(node, cls.dtype)
        if reason:
            return reason
        if not is_depthwise(node):
            return "the kernel covers depthwise convolutions (groups = input channels = output channels)"
        return None

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        from .qconv_triton_kernel import qdepthwise_conv2d_nhwc

        weight = constant_on(node.inputs[1], ctx.device)
        channels, _, kh, kw = weight.shape
        # [KH * KW, C]: a tap's channels contiguous; through int8 (the transpose copy of fp8 is not everywhere)
        taps = weight.view(torch.int8).reshape(channels, kh * kw).t().contiguous().view(weight.dtype)
        scale, bias = bound_scale_bias(node, ctx)
        epilogue, (r_scale, lo, hi, slope, out_scale) = epilogue_launch(node)
        residual_index = Epilogue.of(node).residual_index
        out_type = output_dtype(node)
        a = node.attrs
        (sh, sw), (ph, pw), (dh, dw) = a["strides"], a["padding"], a["dilation"]
        flags = dict(
            epilogue,
            KH=kh,
            KW=kw,
            SH=sh,
            SW=sw,
            PH=ph,
            PW=pw,
            DH=dh,
            DW=dw,
            INT8=cls.dtype == "int8",
            BLOCK_P=DEPTHWISE_BLOCK_P,
            BLOCK_C=DEPTHWISE_BLOCK_C,
            num_warps=DEPTHWISE_WARPS,
        )
        out_side = sizes_at(node.outputs[0].type.shape[2:])

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = _channels_last(inputs[0])
            n, c, h, w = x.shape
            oh, ow = out_side(env)
            y = torch.empty((n, c, oh, ow), dtype=out_type, device=x.device, memory_format=torch.channels_last)
            pixels = n * oh * ow
            if pixels == 0:
                return (y,)
            residual = _channels_last(inputs[residual_index]) if residual_index is not None else y
            grid = (_cdiv(pixels, DEPTHWISE_BLOCK_P), _cdiv(c, DEPTHWISE_BLOCK_C))
            qdepthwise_conv2d_nhwc[grid](
                x,
                taps,
                y,
                scale,
                bias if bias is not None else scale,
                residual,
                pixels,
                c,
                h,
                w,
                oh,
                ow,
                r_scale,
                lo,
                hi,
                slope,
                out_scale,
                **flags,
            )
            return (y,)

        return run


def _register() -> None:
    # Above the eager tactic (-50), the only other runner of engine.qconv; depthwise layers have one tactic, and a
    # stem's few channels go to the gather tile first (it refuses the others)
    tiles = [(name, TILES[name], False, 23 - i) for i, name in enumerate(TILE_PREFERENCE)]
    tiles += [(name, tile, True, 30) for name, tile in GATHER_TILES.items()]
    for dtype, short in DTYPES.items():
        # every one: a Triton kernel compiled ahead (compile_ahead.py), weights packed at bind time, channels-last
        # in and out (the arena's views are row-major NCHW)
        declared = functools.partial(
            tactic,
            "engine.qconv",
            devices=("cuda",),
            writes_arena=False,
            packs_weights=True,
            compiles=True,
            requires_triton=True,
            min_capability=CAPABILITIES[dtype],
            input_memory_format=torch.channels_last,
        )
        for name, tile, gather, priority in tiles:
            spec = {"dtype": dtype, "tile": tile, "gather": gather}
            impl = type(f"QConvTriton_{short}_{name}", (_ImplicitGemm,), spec)
            declared(name=f"triton_qconv_{short}_{name}", priority=priority)(impl)
        depthwise = type(f"QDepthwiseTriton_{short}", (_Depthwise,), {"dtype": dtype})
        declared(name=f"triton_qdepthwise_{short}", priority=30)(depthwise)


_register()
