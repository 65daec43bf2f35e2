"""GEMM tactics for `engine.dense` on CUDA: cuBLAS(Lt) with the epilogue fused where the library has it.

- `cublaslt_epilogue`: bias + relu (or tanh-approximated gelu) inside the GEMM, through
  `torch._addmm_activation`, which asks cuBLASLt for its bias/activation epilogue; written straight into the
  layer's arena view.
- `cublas_addmm`: bias in the GEMM (`addmm`, beta = 1) writing into the arena view, the rest of the epilogue
  in place on it.

Weights are pre-transposed once at bind time (K x N, row-major), so every call is a plain NN product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir.types import GPU_FLOAT_DTYPES
from ..epilogue import Epilogue
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig


def _supports_dense(node: Node, config: BuilderConfig) -> str | None:
    if node.inputs[1].data is None:
        return "the weight must be a constant"
    if node.inputs[0].type.dtype not in GPU_FLOAT_DTYPES:
        return f"dtype {node.inputs[0].type.dtype}"
    bias, _ = Epilogue.of(node).split(node.inputs)
    if bias is not None and bias.data is None:
        return "the bias must be a constant"
    return None


def _bound_weights(node: Node, ctx: BindContext) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the weight as (K, N), the bias or None) on the bind device."""
    weight_t = constant_on(node.inputs[1], ctx.device).t().contiguous()  # (K, N)
    bias, _ = Epilogue.of(node).split(node.inputs)
    return weight_t, constant_on(bias, ctx.device) if bias is not None else None


def _flat_out(outputs: OutputViews, rows: int, cols: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the layer's output, the same memory as [rows, cols]): the offered view where it is contiguous, else new."""
    out = outputs[0]
    if out is not None and out.is_contiguous():
        return out, out.view(rows, cols)
    full = torch.empty(*like.shape[:-1], cols, dtype=like.dtype, device=like.device)
    return full, full.view(rows, cols)


@tactic("engine.dense", name="cublaslt_epilogue", devices=("cuda",), priority=20, packs_weights=True)
class DenseLtEpilogue:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        reason = _supports_dense(node, config)
        if reason:
            return reason
        epilogue = Epilogue.of(node)
        if not epilogue.has_bias:
            return "the cuBLASLt epilogue path needs a bias"
        act = epilogue.activation
        approx = epilogue.activation_kwargs.get("approximate", "none")
        if act not in ("nn.relu", "nn.gelu") or (act == "nn.gelu" and approx != "tanh"):
            return "cuBLASLt epilogues are relu and tanh-approximated gelu"
        if epilogue.has_residual:
            return "no residual in the cuBLASLt epilogue"
        return None

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight_t, bias = _bound_weights(node, ctx)
        if bias is None:  # `supports` refuses such layers
            raise ValueError("the cuBLASLt epilogue path needs a bias")
        use_gelu = Epilogue.of(node).activation == "nn.gelu"
        k, n = weight_t.shape

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0]
            rows = x.numel() // k
            full, flat = _flat_out(outputs, rows, n, x)
            torch._addmm_activation(bias, x.reshape(rows, k), weight_t, use_gelu=use_gelu, out=flat)
            return (full,)

        return run


@tactic("engine.dense", name="cublas_addmm", devices=("cuda",), priority=15, packs_weights=True)
class DenseAddmm:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return _supports_dense(node, config)

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        weight_t, bias = _bound_weights(node, ctx)
        k, n = weight_t.shape
        epilogue = Epilogue.of(node)
        residual_index = epilogue.residual_index
        tail = epilogue.in_place()  # the residual add and the activation, in the layer's order, on the GEMM's output

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0]
            rows = x.numel() // k
            full, flat = _flat_out(outputs, rows, n, x)
            if bias is not None:
                torch.addmm(bias, x.reshape(rows, k), weight_t, out=flat)
            else:
                torch.mm(x.reshape(rows, k), weight_t, out=flat)
            tail(full, inputs[residual_index] if residual_index is not None else None)
            return (full,)

        return run
