"""Matrix products: Gemm and MatMul.

A product with a constant 2-d right operand is a linear layer: it becomes `nn.dense` with the weight
transposed once, at import (the engine then sees the layer it has its best tactics for, as with the
PyTorch frontend's `aten.linear`), and a 1-d constant bias added to it becomes `nn.bias_add`.
"""

from __future__ import annotations

from ...ir.types import FLOAT_DTYPES
from .registry import onnx_converter


def _product(ctx, a, b, b_transposed: bool):
    """a @ b (b_transposed: a @ b.T) as nn.dense where b is a constant float matrix."""
    if b.rank == 2 and a.dtype in FLOAT_DTYPES:
        if b_transposed:
            return ctx.emit("nn.dense", a, b)
        if b.is_known:
            return ctx.emit("nn.dense", a, ctx.emit("transpose", b, axes=(1, 0)))  # folds: b is known
    if b_transposed:
        b = ctx.emit("transpose", b, axes=(1, 0))
    return ctx.emit("matmul", a, b)


def _add_bias(ctx, out, bias):
    if bias.rank == 1 and bias.shape[0] == out.shape[-1] and out.rank >= 1:
        return ctx.emit("nn.bias_add", out, bias, axis=-1)
    return ctx.emit("add", out, bias)


@onnx_converter("Gemm", since=(11, 13))
def gemm(ctx, *, A, B, C=None, alpha, beta, transA, transB):
    a = ctx.emit("transpose", A, axes=(1, 0)) if transA else A
    out = _product(ctx, a, B, bool(transB))
    if alpha != 1:
        out = ctx.emit("multiply", out, ctx.const(float(alpha), dtype=out.dtype))
    if C is None or beta == 0:
        return out
    bias = C if beta == 1 else ctx.emit("multiply", C, ctx.const(float(beta), dtype=C.dtype))
    return _add_bias(ctx, out, bias)


@onnx_converter("MatMul", since=(9, 13))
def matmul(ctx, *, A, B):
    return _product(ctx, A, B, b_transposed=False)
