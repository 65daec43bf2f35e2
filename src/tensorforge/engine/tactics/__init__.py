"""Tactics: the implementations a layer can run with. `registry.py` holds the registry, the tactic record (what
each tactic declares at registration) and the kernel contract; one module per family of tactics registers them:
the reference and its CUDA twin (`reference.py`, `eager.py`), views (`views.py`), cuDNN and Triton convolutions
(`conv_cudnn.py`, `conv_triton.py`), cuBLAS and Triton GEMMs (`gemm.py`, `gemm_triton.py`), layer norms
(`norm_triton.py`), max pooling (`pool_triton.py`), generated pointwise kernels (`pointwise_triton.py`), and the 8-bit
layers' kernels: Triton and cuBLASLt GEMMs (`qgemm_triton.py`, `qgemm_library.py`), Triton implicit-GEMM and
depthwise convolutions (`qconv_triton.py`) and their float16 library path (`quantized_float.py`), and a quantize
left on its own (`quantize_triton.py`)."""

# each module registers its tactics
from . import (  # noqa: F401
    conv_cudnn,
    conv_triton,
    eager,
    gemm,
    gemm_triton,
    norm_triton,
    pointwise_triton,
    pool_triton,
    qconv_triton,
    qgemm_library,
    qgemm_triton,
    quantize_triton,
    quantized_float,
    reference,
    views,
)
from .registry import ANY_OP, BindContext, Kernel, Tactic, candidates, get_tactic, registered_tactics, tactic

__all__ = ["tactic", "Tactic", "BindContext", "Kernel", "candidates", "get_tactic", "registered_tactics", "ANY_OP"]
