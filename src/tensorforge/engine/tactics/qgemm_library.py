"""cuBLASLt tactics of the quantized layers: `engine.qdense`, and `engine.qconv` when it is a 1x1 convolution.

- `cublaslt_int8`: `torch._int_mm`, int8 x int8 -> exact int32 sums (compute capability 7.5 and newer: Turing
  has integer tensor cores, which Triton's int8 dot does not use);
- `cublaslt_fp8`: `torch._scaled_mm`, float8_e4m3fn x float8_e4m3fn -> float32, with unit scales (8.9 and
  newer).

cuBLASLt's own epilogues cannot finish a quantized layer (a per-channel dequantizing scale, a residual, any
activation, the quantize with its rounding half to even), so each call is followed by one Triton kernel,
`qgemm_triton_kernel.qepilogue`, that reads the product once and writes the layer's output in its type: the same
epilogue as the fused Triton tactics (qgemm_triton.py). That costs a pass over the product the fused kernel does
not pay, which cuBLASLt's kernels, tuned for each GPU, can win back on large GEMMs; the builder times both.

The weight stays [N, K] as the layer stores it: its transpose is the column-major B both library calls want.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..ops import pointwise_conv_reason
from .gemm_triton import _cdiv
from .qgemm_triton import (
    EpilogueArgs,
    RowsGemm,
    conv1x1_kernel,
    dense_kernel,
    kernels,
    layer_reason,
    packed_weight,
)
from .quantized_layers import FP8_CAPABILITY, INT8_CAPABILITY
from .registry import BindContext, Capability, Kernel, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

# a library product: (a [M, K], b [K, N] column-major) -> the sums [M', N], M' >= M rows (only the first M read);
# made for the bind device once (`ProductOn`), so that what it needs besides a and b is allocated once
Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProductOn = Callable[[torch.device], Product]

INT_MM_MIN_ROWS = 17  # torch._int_mm on CUDA takes more than 16 rows: fewer are padded with zero rows
LIBRARY_PRIORITY = 15  # below the first Triton tile (qgemm_triton.FIRST_PRIORITY), above the others
EPILOGUE_BLOCK = (32, 128)  # rows x channels of a qepilogue program: 128 contiguous channels per row for the loads
EPILOGUE_WARPS = 4


def _contiguous(a: torch.Tensor) -> torch.Tensor:
    """`a` row-major with rows of exactly K (the libraries take no other leading dimension for A)."""
    return a if a.is_contiguous() else a.contiguous()


def int8_product(device: torch.device) -> Product:
    """int32 sums of a [M, K] x b [K, N], int8, by cuBLASLt; M padded to INT_MM_MIN_ROWS rows where smaller."""

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m = a.shape[0]
        if m < INT_MM_MIN_ROWS:
            padded = a.new_zeros((INT_MM_MIN_ROWS, a.shape[1]))
            padded[:m] = a
            a = padded
        return torch._int_mm(_contiguous(a), b)

    return product


def fp8_product(device: torch.device) -> Product:
    """float32 sums of a [M, K] x b [K, N], float8_e4m3fn, by cuBLASLt (torch._scaled_mm with unit scales: the
    layer's per-channel scale is the epilogue's). Without fast accumulation: cuBLASLt then promotes Hopper's
    reduced-precision fp8 sums into float32 as it goes."""
    one = torch.ones((), dtype=torch.float32, device=device)

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch._scaled_mm(_contiguous(a), b, one, one, out_dtype=torch.float32)

    return product


class LibraryEpilogue:
    """The `qepilogue` kernel of one layer, over a product a library computed: one read of the sums, one store of
    the layer's output. `sums_scale` multiplies the layer's per-channel scale where the product was computed on
    scaled operands (the float16 path of quantized_float.py)."""

    def __init__(self, node: Node, ctx: BindContext, sums_scale: float = 1.0) -> None:
        self.args = EpilogueArgs(node, ctx)
        if sums_scale != 1.0:
            self.args.scale = self.args.scale * sums_scale
        block_m, block_n = EPILOGUE_BLOCK
        self.flags = dict(self.args.flags, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=EPILOGUE_WARPS)

    def __call__(self, sums: torch.Tensor, c: torch.Tensor, residual: torch.Tensor | None) -> None:
        """c [M, N] = the epilogue of sums [M', N] (M' >= M rows, unit column stride; only the first M read)."""
        m, n = c.shape
        r, stride_rm = self.args.residual(residual, c)
        grid = (_cdiv(m, EPILOGUE_BLOCK[0]), _cdiv(n, EPILOGUE_BLOCK[1]))
        kernels().qepilogue[grid](
            sums,
            c,
            self.args.scale,
            self.args.bias,
            r,
            m,
            n,
            sums.stride(0),
            c.stride(0),
            stride_rm,
            *self.args.scalars,
            **self.flags,
        )


class _LibraryGemm:
    """A library product then the `qepilogue` kernel, for one layer: a `RowsGemm`."""

    def __init__(self, node: Node, ctx: BindContext, product_on: ProductOn) -> None:
        self.b = packed_weight(node, ctx).t()  # [K, N] column-major
        self.product = product_on(ctx.device)
        self.epilogue = LibraryEpilogue(node, ctx)

    def __call__(self, a: torch.Tensor, c: torch.Tensor, residual: torch.Tensor | None) -> None:
        if c.shape[0]:
            self.epilogue(self.product(a, self.b), c, residual)


class _LibraryTemplate:
    dtype: str  # the layers' 8-bit type
    product: ProductOn
    multiple: int  # what the library needs K and N to be multiples of
    library_call: str  # its name, for the refusals
    conv: bool  # a 1x1 engine.qconv, else engine.qdense

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        reason = (pointwise_conv_reason(node) if cls.conv else None) or layer_reason(node, cls.dtype)
        if reason:
            return reason
        n, *rest = node.inputs[1].type.concrete_shape()  # a constant: static
        k = rest[0]  # a 1x1 convolution's [O, I, 1, 1] is [N, K] too
        if k % cls.multiple or n % cls.multiple:
            return (
                f"{cls.library_call} needs input and output channels that are multiples of {cls.multiple}; "
                f"the layer has {k} and {n}"
            )
        return None

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        gemm: RowsGemm = _LibraryGemm(node, ctx, cls.product)  # a function read from the class: not bound
        return conv1x1_kernel(node, gemm) if cls.conv else dense_kernel(node, gemm)


LIBRARIES: dict[str, tuple[str, ProductOn, int, str, Capability]] = {
    # name: (layer type, product, K and N multiples of, library call, oldest compute capability)
    "cublaslt_int8": ("int8", int8_product, 8, "cuBLASLt's int8 GEMM (torch._int_mm)", INT8_CAPABILITY),
    "cublaslt_fp8": ("float8_e4m3fn", fp8_product, 16, "cuBLASLt's fp8 GEMM (torch._scaled_mm)", FP8_CAPABILITY),
}


def _register() -> None:
    for name, (dtype, product, multiple, call, capability) in LIBRARIES.items():
        spec = {"dtype": dtype, "product": product, "multiple": multiple, "library_call": call}
        # the epilogue is a Triton kernel (compiled ahead like the fused tactics'); the weight is packed at bind
        declared = functools.partial(
            tactic,
            name=name,
            devices=("cuda",),
            priority=LIBRARY_PRIORITY,
            packs_weights=True,
            compiles=True,
            requires_triton=True,
            min_capability=capability,
        )
        declared("engine.qdense")(type(f"QDense_{name}", (_LibraryTemplate,), {**spec, "conv": False}))
        # the conv's output is channels-last; arena views are row-major NCHW
        declared("engine.qconv", writes_arena=False, input_memory_format=torch.channels_last)(
            type(f"QConv1x1_{name}", (_LibraryTemplate,), {**spec, "conv": True})
        )


_register()
