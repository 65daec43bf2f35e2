"""Tactics: the implementations a layer can run with. `registry.py` holds the registry and the kernel
contract; one module per family of tactics registers them (`reference.py` today; conv, gemm, pointwise,
attention and quantized tactics for GPUs join here)."""

# each module registers its tactics
from . import conv_cudnn, conv_triton, eager, gemm, gemm_triton, norm_triton, pool_triton, reference, views  # noqa: F401
from .registry import ANY_OP, BindContext, Kernel, Tactic, candidates, get_tactic, registered_tactics, tactic

__all__ = ["tactic", "Tactic", "BindContext", "Kernel", "candidates", "get_tactic", "registered_tactics", "ANY_OP"]
