"""Triton GEMM tactics with the whole epilogue inside: `engine.dense`, and `engine.conv` when it is a 1x1 conv.

cuBLASLt's epilogues cover bias + relu or tanh-gelu; everything else a layer ends with (relu6, erf-gelu, silu,
hardswish, a residual add) costs library GEMMs one more pass over the output. This template keeps the
accumulator in registers and applies bias, residual and activation before its one store, so a fused layer is
one kernel that writes its result once. A 1x1 convolution over a channels-last tensor is exactly this GEMM:
[N*H*W, C_in] x [C_in, C_out] — MobileNet's expand and project layers, most of its convolutions.

Several tile configurations are registered as separate tactics (`triton_gemm_<BMxBNxBK>`, one program per
output tile, and `triton_tma_<BMxBNxBK>`, persistent with Hopper's TMA loads and stores: see the kernels'
module); the builder times them against cuBLAS and cuDNN on each layer's real shapes and keeps the fastest, as
TensorRT does with its kernel library. The tactics take float16/bfloat16 inputs (float32 layers keep the
libraries' TF32/IEEE choice) and accumulate in float32. Weights are transposed to [K, N] once, at bind time.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from ...ir.types import HALF_DTYPES
from ..epilogue import Epilogue
from ..ops import pointwise_conv_reason
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

Tile = tuple[int, int, int, int, int]  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
# a Triton launch's compile-time arguments by name: tl.constexpr flags and sizes, num_warps, num_stages
LaunchFlags = dict[str, int]

ACTIVATION_CODES = {
    None: 0,
    "nn.relu": 1,
    "clip": 2,
    "nn.gelu": 3,
    "nn.silu": 5,
    "nn.hardswish": 6,
    "sigmoid": 7,
    "tanh": 8,
    "nn.leaky_relu": 9,
}  # nn.gelu with approximate="tanh" is code 4
TILES: dict[str, Tile] = {  # name -> (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
    "triton_gemm_128x256x64": (128, 256, 64, 8, 3),
    "triton_gemm_256x128x64": (256, 128, 64, 8, 3),
    "triton_gemm_128x128x64": (128, 128, 64, 8, 3),
    "triton_gemm_128x64x64": (128, 64, 64, 4, 4),
    "triton_gemm_64x64x64": (64, 64, 64, 4, 4),
}
TMA_TILES: dict[
    str, Tile
] = {  # persistent TMA kernel (sm90+): A, B and C rows must be 16-byte aligned (K, N multiples of 8)
    "triton_tma_128x256x64": (128, 256, 64, 8, 3),
    "triton_tma_128x128x64": (128, 128, 64, 8, 4),
}
# A residual tile costs the TMA kernel ~32 KiB more shared memory (its layout conversion): one stage fewer keeps
# 128x256 within Hopper's 227 KiB per block (tests/engine/test_gemm_triton.py compiles every variant)
TMA_RESIDUAL_STAGES = {"triton_tma_128x256x64": 2}
# Searched only from optimization level 4: on an H100 (bench/results/gemm_tactics.json) neither the wide tiles
# nor the TMA ones beat cuBLAS or the three tiles above on the benchmark models' GEMMs, and every tile is a
# Triton compile and a timing per layer shape (MobileNetV2's build went from 16 s to 34 s with all of them).
WIDE_TILES = ("triton_gemm_128x256x64", "triton_gemm_256x128x64", *TMA_TILES)
GROUP_M = 8  # programs that share a column of B run together, so B's tiles stay in L2


def _kernels() -> ModuleType:
    """The @triton.jit kernels (gemm_triton_kernel.py), imported on first use."""
    from . import gemm_triton_kernel

    return gemm_triton_kernel


def fusable_activation(epilogue: Epilogue) -> tuple[int, float, float, float] | str:
    """(code, clip low, clip high, leaky slope) of the layer's activation, or why it cannot be fused here."""
    act, attrs = epilogue.activation, epilogue.activation_kwargs
    if act not in ACTIVATION_CODES:
        return f"activation {act} is not in the template"
    code = ACTIVATION_CODES[act]
    if act == "nn.gelu" and attrs.get("approximate", "none") == "tanh":
        code = 4
    lo = attrs.get("a_min")
    hi = attrs.get("a_max")
    return (
        code,
        -math.inf if lo is None else float(lo),
        math.inf if hi is None else float(hi),
        float(attrs.get("alpha", 0.01)),
    )


def epilogue_flags(epilogue: Epilogue) -> tuple[LaunchFlags, tuple[float, float, float]]:
    """A fused engine.dense/engine.conv's epilogue as the Triton kernels take it (`gemm_triton_kernel._epilogue`):
    the compile-time flags HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT, and the run-time (clip low, clip high,
    leaky slope). The layer must be supported (its activation fusable)."""
    fused = fusable_activation(epilogue)
    if isinstance(fused, str):
        raise ValueError(fused)
    code, lo, hi, slope = fused
    flags: LaunchFlags = dict(
        HAS_BIAS=epilogue.has_bias,
        HAS_RESIDUAL=epilogue.has_residual,
        RESIDUAL_PRE=epilogue.residual_before_activation,
        ACT=code,
    )
    return flags, (lo, hi, slope)


class _GemmLaunch:
    """The kernel launch shared by the dense and 1x1-conv tactics: `run(a, c, residual)` on 2-d row-major views."""

    def __init__(
        self,
        node: Node,
        weight_kn: torch.Tensor,
        bias: torch.Tensor | None,
        tile: Tile,
        tma: bool,
        residual_stages: int | None = None,
    ):
        epilogue, self.scalars = epilogue_flags(Epilogue.of(node))
        self.weight, self.bias = weight_kn, bias
        self.block_m, self.block_n, self.block_k, self.num_warps, self.num_stages = tile
        self.tma = tma
        if epilogue["HAS_RESIDUAL"] and residual_stages is not None:
            self.num_stages = residual_stages
        # the launch's compile-time flags: fixed by the layer, so worked out once, not on every call
        self.flags = dict(
            epilogue,
            BLOCK_M=self.block_m,
            BLOCK_N=self.block_n,
            BLOCK_K=self.block_k,
            GROUP=GROUP_M,
            num_warps=self.num_warps,
            num_stages=self.num_stages,
        )
        if tma:
            device = weight_kn.device
            from triton.tools.tensor_descriptor import TensorDescriptor

            self.descriptor = TensorDescriptor.from_tensor
            self.b_desc = self.descriptor(weight_kn, [self.block_k, self.block_n])
            self.programs = (
                torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
            )

    def __call__(self, a: torch.Tensor, c: torch.Tensor, residual: torch.Tensor | None) -> None:
        m, k = a.shape
        n = c.shape[1]
        lo, hi, slope = self.scalars
        bias = self.bias if self.bias is not None else c
        r_stride = residual.stride(0) if residual is not None else 0
        residual = residual if residual is not None else c
        if not self.tma:
            grid = (_cdiv(m, self.block_m) * _cdiv(n, self.block_n),)
            _kernels().gemm_epilogue[grid](
                a,
                self.weight,
                c,
                bias,
                residual,
                m,
                n,
                k,
                a.stride(0),
                self.weight.stride(0),
                c.stride(0),
                r_stride,
                lo,
                hi,
                slope,
                EVEN_K=k % self.block_k == 0,
                **self.flags,
            )
            return
        a = a if _tma_ready(a) else a.clone()  # a fresh copy is contiguous and aligned
        out = c if _tma_ready(c) else torch.empty((m, n), dtype=c.dtype, device=c.device)
        a_desc = self.descriptor(a, [self.block_m, self.block_k])
        c_desc = self.descriptor(out, [self.block_m, self.block_n])
        programs = min(self.programs, _cdiv(m, self.block_m) * _cdiv(n, self.block_n))
        _kernels().gemm_epilogue_tma[(programs,)](
            a_desc, self.b_desc, c_desc, bias, residual, m, n, k, r_stride, lo, hi, slope, programs, **self.flags
        )
        if out is not c:
            c.copy_(out)


def _tma_ready(t: torch.Tensor) -> bool:
    """Whether a 2-d tensor meets TMA's rules: unit inner stride, 16-byte aligned base and row stride."""
    size = t.element_size()
    return t.stride(1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * size) % 16 == 0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _supports_common(node: Node, tma: bool) -> str | None:
    if node.inputs[0].type.dtype not in HALF_DTYPES:
        return "the Triton GEMM template takes float16/bfloat16 layers (float32 keeps the libraries' TF32 choice)"
    if node.inputs[1].data is None:
        return "the weight must be a constant"
    epilogue = Epilogue.of(node)
    bias, _ = epilogue.split(node.inputs)
    if bias is not None and bias.data is None:
        return "the bias must be a constant"
    if tma and any(d % 8 for d in node.inputs[1].type.concrete_shape()[:2]):  # a constant: static
        return "the TMA GEMM needs 16-byte rows: input and output channels must be multiples of 8"
    act = fusable_activation(epilogue)
    return act if isinstance(act, str) else None


def _bias(node: Node, ctx: BindContext) -> torch.Tensor | None:
    """The layer's constant bias on the bind device (`supports` refuses a bias computed in the plan), or None."""
    bias, _ = Epilogue.of(node).split(node.inputs)
    return constant_on(bias, ctx.device) if bias is not None else None


def _nhwc_rows(t: torch.Tensor, channels: int) -> torch.Tensor:
    """A 4-d tensor's channels-last memory as [N*H*W, channels] (a view where it is channels-last already)."""
    return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, channels)


def _rows(t: torch.Tensor, k: int) -> torch.Tensor:
    """`t` as [rows, k] with unit stride along k (a view when the memory allows, else a copy)."""
    flat = t.reshape(-1, k)
    return flat if flat.stride(1) == 1 else flat.contiguous()


class _DenseTemplate:
    tile: Tile
    tma = False
    residual_stages: int | None = None

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        return _supports_common(node, cls.tma)

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        weight_kn = constant_on(node.inputs[1], ctx.device).t().contiguous()
        bias = _bias(node, ctx)
        gemm = _GemmLaunch(node, weight_kn, bias, cls.tile, cls.tma, cls.residual_stages)
        k, n = weight_kn.shape
        residual_index = Epilogue.of(node).residual_index

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0]
            out = outputs[0]
            if out is None or not out.is_contiguous():
                out = torch.empty(*x.shape[:-1], n, dtype=x.dtype, device=x.device)
            residual = _rows(inputs[residual_index], n) if residual_index is not None else None
            gemm(_rows(x, k), out.view(-1, n), residual)
            return (out,)

        return run


class _Conv1x1Template:
    """A 1x1, stride-1, unpadded, ungrouped convolution over channels-last activations, as the GEMM."""

    tile: Tile
    tma = False
    residual_stages: int | None = None

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        return pointwise_conv_reason(node) or _supports_common(node, cls.tma)

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        weight = constant_on(node.inputs[1], ctx.device)
        c_out, c_in = weight.shape[:2]
        weight_kn = weight.reshape(c_out, c_in).t().contiguous()
        bias = _bias(node, ctx)
        gemm = _GemmLaunch(node, weight_kn, bias, cls.tile, cls.tma, cls.residual_stages)
        residual_index = Epilogue.of(node).residual_index

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0]
            n, _, h, w = x.shape
            y = torch.empty((n, c_out, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
            residual = _nhwc_rows(inputs[residual_index], c_out) if residual_index is not None else None
            gemm(_nhwc_rows(x, c_in), y.permute(0, 2, 3, 1).reshape(-1, c_out), residual)
            return (y,)

        return run


def _register() -> None:
    # priorities below the libraries' (optimization level 0 keeps cuBLAS/cuDNN); TMA tiles last of all
    tiles = [(name, tile, True) for name, tile in reversed(TMA_TILES.items())]
    tiles += [(name, tile, False) for name, tile in reversed(TILES.items())]
    for priority, (name, tile, tma) in enumerate(tiles):
        spec = {"tile": tile, "tma": tma, "residual_stages": TMA_RESIDUAL_STAGES.get(name)}
        dense = type(f"DenseTriton_{name}", (_DenseTemplate,), spec)
        conv = type(f"Conv1x1Triton_{name}", (_Conv1x1Template,), spec)
        level = 4 if name in WIDE_TILES else 0
        hopper = (9, 0) if tma else None  # the TMA kernel needs Hopper's tensor-memory accelerator
        # both: a Triton kernel (compiled ahead, in parallel: compile_ahead.py), weights packed at bind time
        declared = functools.partial(
            tactic,
            name=name,
            devices=("cuda",),
            priority=5 + priority,
            min_level=level,
            packs_weights=True,
            compiles=True,
            requires_triton=True,
            min_capability=hopper,
        )
        declared("engine.dense")(dense)
        # the conv's output is channels-last; arena views are row-major NCHW
        declared("engine.conv", writes_arena=False, input_memory_format=torch.channels_last)(conv)


_register()
