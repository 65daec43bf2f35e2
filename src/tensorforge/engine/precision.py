"""TF32: whether float32 matrix products and convolutions on the GPU may round their inputs to TF32.

`BuilderConfig.tf32` is TensorRT's kTF32 flag. Unlike fp16/bf16 it does not change any type in the graph (a TF32
layer reads and writes float32), so it is not a pass: it is a switch of the math libraries that must be set
while a plan's float32 kernels run, are timed, or are captured into a CUDA graph. `tf32_mode(enabled)` sets
both switches PyTorch has, cuBLAS matmuls and cuDNN convolutions, and restores the previous ones on exit.

It uses PyTorch's per-backend `fp32_precision` settings ("tf32" / "ieee") where they exist (PyTorch 2.9 and
later); the older `allow_tf32` flags only on older versions, because PyTorch refuses to read a legacy flag once
the new settings disagree with it (it calls that a mix of the legacy and new APIs). The switches are
process-wide, like PyTorch's own, so two threads running plans with different `tf32` settings at the same
moment would race.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def _switches() -> list[tuple[object, str, object, object]]:
    """(object, attribute, value for TF32 on, value for off) for cuBLAS matmuls and cuDNN convolutions: the
    `fp32_precision` settings where this PyTorch has them (2.9 and later), else the legacy `allow_tf32` flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return [(torch.backends.cuda.matmul, "fp32_precision", "tf32", "ieee"),
                (conv, "fp32_precision", "tf32", "ieee")]
    return [(torch.backends.cuda.matmul, "allow_tf32", True, False), (torch.backends.cudnn, "allow_tf32", True, False)]


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Inside the block, float32 GPU matmuls and convolutions may use TF32 (`enabled`) or must not."""
    switches = _switches()
    previous = [getattr(obj, attr) for obj, attr, _, _ in switches]
    try:
        for obj, attr, on, off in switches:
            setattr(obj, attr, on if enabled else off)
        yield
    finally:
        for (obj, attr, _, _), value in zip(switches, previous):
            setattr(obj, attr, value)
