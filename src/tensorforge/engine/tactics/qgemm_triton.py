"""Triton GEMM tactics of the quantized layers: `engine.qdense`, and `engine.qconv` when it is a 1x1 convolution.

A quantized layer (engine/quantized_ops.py) multiplies 8-bit data by 8-bit weights and ends with an epilogue that
dequantizes, adds bias and residual, applies the activation and, where the next layer reads 8 bits too, quantizes
again. Done by a library GEMM, that epilogue is a second pass over an int32 or float32 product four times the
size of the int8 result; here it runs on the accumulator in registers, and the layer is one kernel that reads 8
bits and writes its output once, in its output type (qgemm_triton_kernel.py). A 1x1, stride-1, unpadded,
ungrouped convolution over channels-last data is the same GEMM, [N*H*W, C_in] x [C_in, C_out], as in
gemm_triton.py.

Each tile configuration is its own tactic, `triton_qgemm_<int8|fp8>_<BMxBNxBK>`; the builder times them (and the
cuBLASLt tactics of qgemm_library.py) on each layer's shapes. int8 runs from compute capability 8.0 (Ampere;
cuBLASLt covers Turing), fp8 from 8.9 (Ada and Hopper). The weight is kept as the layer stores it, [N, K] with K
contiguous: the layout Hopper's 8-bit tensor-core instructions read both operands in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from ..epilogue import Epilogue
from ..ops import pointwise_conv_reason
from .gemm_triton import GROUP_M, Tile, _cdiv, _nhwc_rows, _rows, _tma_ready
from .quantized_layers import (
    FP8_CAPABILITY,
    bound_scale_bias,
    constants_reason,
    epilogue_launch,
    output_dtype,
)
from .registry import BindContext, Capability, Env, Inputs, Kernel, OutputViews, constant_on, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

# A GEMM over 2-d views with unit inner stride, epilogue included: (a [M, K], c [M, N], residual [M, N] or None)
# writes c. Each tactic brings one (a Triton launch, a library call and its epilogue); `dense_kernel` and
# `conv1x1_kernel` make the layer's kernel of it.
RowsGemm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], None]

# Triton's int8 tensor-core dot starts at Ampere: for Turing (7.5) Triton 3.8 cannot compile an int8 tl.dot at all
# (its matmul pass falls back to an FMA loop that extends the int8 operands as floats, and fails), so there int8
# layers take cuBLASLt (qgemm_library.py, from INT8_CAPABILITY). fp8 tensor cores start at Ada (8.9).
TRITON_INT8_CAPABILITY: Capability = (8, 0)
# the 8-bit types a layer multiplies in: (the tactic names' short form, the oldest compute capability the kernel
# runs on)
LAYER_TYPES: dict[str, tuple[str, Capability]] = {
    "int8": ("int8", TRITON_INT8_CAPABILITY),
    "float8_e4m3fn": ("fp8", FP8_CAPABILITY),
}
# "BMxBNxBK" -> (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), the highest priority first. 8-bit tensor-core
# instructions take 32 values along K where 16-bit ones take 16, so the tiles are twice as deep as gemm_triton's:
# 128 bytes of K per row, one full cache line. The first, taken at optimization level 0, needs 96 KiB of shared
# memory on Hopper (3 stages of (128 + 128) x 128 bytes) and 64 KiB on Ampere and Ada (2 buffers): within every
# GPU it runs on (Ada and consumer Ampere allow 99 KiB a block). 16x64x128 is for few rows: a batch-1
# transformer's tokens, a decoder's one token per step, where a 128-row tile is mostly padding and N / 64
# programs are all the parallelism there is.
TILES: dict[str, Tile] = {
    "128x128x128": (128, 128, 128, 8, 3),
    "128x64x128": (128, 64, 128, 4, 3),
    "64x128x64": (64, 128, 64, 4, 4),
    "64x64x128": (64, 64, 128, 4, 4),
    "16x64x128": (16, 64, 128, 4, 4),
}
# The tiles of each layer type. On an H100 (Triton 3.6) a 128x256 int8 tile ran a 4096^3 layer in 169 us against
# 201 us for 128x128x128 (cuBLASLt and its epilogue: 204 us); the same tile in fp8 spilled registers (the
# promoted accumulator doubles them) and ran 2.7 times slower, so fp8 does without it.
TILES_OF: dict[str, dict[str, Tile]] = {
    "int8": {**TILES, "128x256x128": (128, 256, 128, 8, 3)},
    "float8_e4m3fn": TILES,
}
# The persistent TMA kernel's tiles (Hopper and newer, `qgemm_epilogue_tma`), tactics `triton_qgemm_tma_<type>_<tile>`.
# TMA reads rows at 16-byte aligned addresses: K must be a multiple of 16 (8-bit values).
TMA_TILES_OF: dict[str, dict[str, Tile]] = {
    "int8": {"128x256x128": (128, 256, 128, 8, 3), "128x128x128": (128, 128, 128, 8, 4)},
    "float8_e4m3fn": {"128x128x128": (128, 128, 128, 8, 4)},
}
TMA_CAPABILITY: Capability = (9, 0)
TMA_ALIGNMENT = 16  # bytes, so K values of an 8-bit row


def kernels() -> ModuleType:
    """The @triton.jit kernels (qgemm_triton_kernel.py), imported on first use: tensorforge imports without
    Triton."""
    from . import qgemm_triton_kernel

    return qgemm_triton_kernel


def tactic_name(dtype: str, tile: str, tma: bool = False) -> str:
    """The registered name of the Triton tactic for layers of `dtype` ("int8", "float8_e4m3fn") and tile "BMxBNxBK"
    (of the persistent TMA kernel where `tma`)."""
    return f"triton_qgemm_{'tma_' if tma else ''}{LAYER_TYPES[dtype][0]}_{tile}"


def layer_reason(node: Node, dtype: str) -> str | None:
    """None when a GEMM tactic multiplying `dtype` can take the quantized layer `node` (its data of that type, its
    weight, scale and bias constants, its activation fusable), else why not."""
    got = node.inputs[0].type.dtype
    if got != dtype:
        return f"this tactic multiplies {dtype} tensors; the layer's data is {got}"
    return constants_reason(node)


def packed_weight(node: Node, ctx: BindContext) -> torch.Tensor:
    """The layer's weight as the GEMM's B, [N, K] with K contiguous, on the bind device (a 1x1 convolution's
    [O, I, 1, 1] is [O, I])."""
    weight = constant_on(node.inputs[1], ctx.device)
    return weight.reshape(weight.shape[0], -1).contiguous()


class EpilogueArgs:
    """What the common epilogue (quantized_epilogue_kernel.py) is launched with, bound once per layer: the scale
    and bias tensors, the compile-time flags (`epilogue_launch`) and the run-time scalars."""

    def __init__(self, node: Node, ctx: BindContext) -> None:
        self.scale, bias = bound_scale_bias(node, ctx)
        self.bias = bias if bias is not None else self.scale  # a pointer HAS_BIAS=False never reads
        self.flags, self.scalars = epilogue_launch(node)

    @staticmethod
    def residual(residual: torch.Tensor | None, c: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(the residual pointer, its row stride): `c` and 0 without one (HAS_RESIDUAL=False never reads it)."""
        return (residual, residual.stride(0)) if residual is not None else (c, 0)


class _QGemmLaunch:
    """The fused kernel's launch for one layer and tile: a `RowsGemm`."""

    def __init__(self, node: Node, ctx: BindContext, tile: Tile, tma: bool = False) -> None:
        self.weight = packed_weight(node, ctx)
        self.args = EpilogueArgs(node, ctx)
        block_m, block_n, self.block_k, num_warps, num_stages = tile
        self.blocks = (block_m, block_n)
        self.tma = tma
        if tma:
            from triton.tools.tensor_descriptor import TensorDescriptor

            self.descriptor = TensorDescriptor.from_tensor
            self.b_desc = self.descriptor(self.weight, [block_n, self.block_k])
            device = self.weight.device
            self.programs = (
                torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
            )
        # the launch's compile-time arguments: fixed by the layer and the tile, so worked out once
        self.flags = dict(
            self.args.flags,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_K=self.block_k,
            GROUP=GROUP_M,
            num_warps=num_warps,
            num_stages=num_stages,
        )

    def __call__(self, a: torch.Tensor, c: torch.Tensor, residual: torch.Tensor | None) -> None:
        m, k = a.shape
        n = c.shape[1]
        if m == 0:
            return
        r, stride_rm = self.args.residual(residual, c)
        tiles = _cdiv(m, self.blocks[0]) * _cdiv(n, self.blocks[1])
        if self.tma:
            a = a if _tma_ready(a) else a.clone()  # a fresh copy is contiguous and aligned
            programs = min(self.programs, tiles)
            kernels().qgemm_epilogue_tma[(programs,)](
                self.descriptor(a, [self.blocks[0], self.block_k]),
                self.b_desc,
                c,
                self.args.scale,
                self.args.bias,
                r,
                m,
                n,
                k,
                c.stride(0),
                stride_rm,
                *self.args.scalars,
                programs,
                **self.flags,
            )
            return
        grid = (tiles,)
        kernels().qgemm_epilogue[grid](
            a,
            self.weight,
            c,
            self.args.scale,
            self.args.bias,
            r,
            m,
            n,
            k,
            a.stride(0),
            self.weight.stride(0),
            c.stride(0),
            stride_rm,
            *self.args.scalars,
            EVEN_K=k % self.block_k == 0,
            **self.flags,
        )


def dense_kernel(node: Node, gemm: RowsGemm) -> Kernel:
    """The engine.qdense kernel running `gemm` over the rows of its data ([..., K] -> [..., N]): into the arena
    view it is offered where that is contiguous."""
    n, k = node.inputs[1].type.concrete_shape()  # a constant: static
    dtype = output_dtype(node)
    residual_index = Epilogue.of(node).residual_index

    def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
        x = inputs[0]
        out = outputs[0]
        if out is None or not out.is_contiguous():
            out = torch.empty(*x.shape[:-1], n, dtype=dtype, device=x.device)
        residual = _rows(inputs[residual_index], n) if residual_index is not None else None
        gemm(_rows(x, k), out.view(-1, n), residual)
        return (out,)

    return run


def conv1x1_kernel(node: Node, gemm: RowsGemm) -> Kernel:
    """The kernel of a 1x1 engine.qconv (`ops.pointwise_conv_reason`) running `gemm` over its channels-last pixels;
    its output is a channels-last tensor of its own (the arena's views are row-major NCHW)."""
    c_out, c_in = node.inputs[1].type.concrete_shape()[:2]
    dtype = output_dtype(node)
    residual_index = Epilogue.of(node).residual_index

    def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
        x = inputs[0]
        n, _, h, w = x.shape
        y = torch.empty((n, c_out, h, w), dtype=dtype, device=x.device, memory_format=torch.channels_last)
        residual = _nhwc_rows(inputs[residual_index], c_out) if residual_index is not None else None
        gemm(_nhwc_rows(x, c_in), y.permute(0, 2, 3, 1).reshape(-1, c_out), residual)
        return (y,)

    return run


def tma_reason(node: Node) -> str | None:
    """None when the persistent TMA kernel can take the layer `node`: its weight's rows (K values) 16-byte
    aligned."""
    k = math.prod(node.inputs[1].type.concrete_shape()[1:])  # a constant: static; a 1x1 conv's [O, I, 1, 1]
    if k % TMA_ALIGNMENT:
        return f"the TMA kernel needs input channels in multiples of {TMA_ALIGNMENT}; the layer has {k}"
    return None


class _QDenseTemplate:
    tile: Tile
    dtype: str  # the layers' 8-bit type: a key of LAYER_TYPES
    tma: bool

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        return layer_reason(node, cls.dtype) or (tma_reason(node) if cls.tma else None)

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        return dense_kernel(node, _QGemmLaunch(node, ctx, cls.tile, cls.tma))


class _QConv1x1Template(_QDenseTemplate):
    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        return pointwise_conv_reason(node) or super().supports(node, config)

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        return conv1x1_kernel(node, _QGemmLaunch(node, ctx, cls.tile, cls.tma))


# Priorities: the first tile above the others and above qgemm_library's cuBLASLt tactics (LIBRARY_PRIORITY):
# optimization level 0 takes it (one kernel, no int32 product in memory), higher levels time them all.
FIRST_PRIORITY = 20
OTHER_PRIORITY = 10  # the other tiles: 10, 9, ... in TILES_OF's order


def _register() -> None:
    for dtype, (short, capability) in LAYER_TYPES.items():
        tiles = [(name, tile, False) for name, tile in TILES_OF[dtype].items()]
        tiles += [(name, tile, True) for name, tile in TMA_TILES_OF[dtype].items()]
        for i, (tile_name, tile, tma) in enumerate(tiles):
            spec = {"tile": tile, "dtype": dtype, "tma": tma}
            kind = f"{'TMA' if tma else ''}{short}_{tile_name}"
            dense = type(f"QDenseTriton_{kind}", (_QDenseTemplate,), spec)
            conv = type(f"QConv1x1Triton_{kind}", (_QConv1x1Template,), spec)
            # a Triton kernel (compiled ahead, in parallel: compile_ahead.py), its weight packed at bind time
            declared = functools.partial(
                tactic,
                name=tactic_name(dtype, tile_name, tma),
                devices=("cuda",),
                priority=FIRST_PRIORITY if i == 0 else OTHER_PRIORITY + 1 - i,
                packs_weights=True,
                compiles=True,
                requires_triton=True,
                min_capability=max(capability, TMA_CAPABILITY) if tma else capability,
            )
            declared("engine.qdense")(dense)
            # the conv's output is channels-last; arena views are row-major NCHW
            declared("engine.qconv", writes_arena=False, input_memory_format=torch.channels_last)(conv)


_register()
