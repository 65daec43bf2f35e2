"""TF32: whether float32 matrix products and convolutions on the GPU may round their inputs to TF32.

`BuilderConfig.tf32` is TensorRT's kTF32 flag. Unlike fp16/bf16 it does not change any type in the graph (a TF32
layer reads and writes float32), so it is not a pass: it is a switch of the math libraries that must be set
while a plan's float32 kernels run, are timed, or are captured into a CUDA graph. `tf32_mode(enabled)` sets
both switches PyTorch has, cuBLAS matmuls and cuDNN convolutions, and restores the previous ones on exit.

It uses PyTorch's per-backend `fp32_precision` settings ("tf32" / "ieee"). The older `allow_tf32` flags are
not touched: PyTorch refuses to read them once the new settings have been used (it calls that a mix of the
legacy and new APIs), and a user may be on either. The switches are process-wide, like PyTorch's own, so
two threads running plans with different `tf32` settings at the same moment would race; plans built with the
default (True) and PyTorch's default for convolutions agree.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def _switches() -> list:
    """The backend objects whose `fp32_precision` governs TF32: cuBLAS matmul and cuDNN convolution."""
    return [torch.backends.cuda.matmul, torch.backends.cudnn.conv]


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Inside the block, float32 GPU matmuls and convolutions may use TF32 (`enabled`) or must not."""
    switches = _switches()
    previous = [s.fp32_precision for s in switches]
    try:
        for s in switches:
            s.fp32_precision = "tf32" if enabled else "ieee"
        yield
    finally:
        for s, value in zip(switches, previous):
            s.fp32_precision = value
