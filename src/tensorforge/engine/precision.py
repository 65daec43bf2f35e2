"""TF32: whether float32 matrix products and convolutions on the GPU may round their inputs to TF32.

`BuilderConfig.tf32` is TensorRT's kTF32 flag. Unlike fp16/bf16 it does not change any type in the graph (a TF32
layer reads and writes float32), so it is not a pass: it is a switch of the math libraries that must be set
while a plan's float32 kernels run, are timed, or are captured into a CUDA graph. `tf32_mode(enabled)` sets
both switches PyTorch has, cuBLAS matmuls and cuDNN convolutions, and restores the previous ones on exit.

It uses PyTorch's per-backend `fp32_precision` settings ("tf32" / "ieee"), never the `allow_tf32` flags: PyTorch
refuses to read a legacy flag once the new settings disagree with it (it calls that a mix of the legacy and new
APIs). The switches are process-wide, like PyTorch's own. Threads that run plans at once share them: the first
to enter saves the previous switches and the last to leave restores them (a thread leaving early must not switch
TF32 back on under another still running a `tf32=False` plan). Two threads running plans with *different* `tf32`
settings at the same moment still race: the later one's setting holds; graph replays are not affected (their
kernels were captured).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch


def _switches() -> list[tuple[object, str, str, str]]:
    """(object, attribute, value for TF32 on, value for off) for cuBLAS matmuls and cuDNN convolutions."""
    # torch.backends.cudnn replaces its module object at import to add `conv`: no stub declares it
    conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]
    return [(torch.backends.cuda.matmul, "fp32_precision", "tf32", "ieee"), (conv, "fp32_precision", "tf32", "ieee")]


_lock = threading.Lock()
_holders = 0  # threads inside tf32_mode now
_saved: list[object] = []  # the switches as they were before the first of them entered
_nesting = threading.local()  # this thread's settings, outermost first


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Inside the block, float32 GPU matmuls and convolutions may use TF32 (`enabled`) or must not."""
    global _holders, _saved
    switches = _switches()
    stack = _nesting.__dict__.setdefault("stack", [])

    def apply(setting: bool) -> None:
        for obj, attr, on, off in switches:
            setattr(obj, attr, on if setting else off)

    with _lock:
        if not stack:
            if _holders == 0:
                _saved = [getattr(obj, attr) for obj, attr, _, _ in switches]
            _holders += 1
        stack.append(enabled)
        apply(enabled)
    try:
        yield
    finally:
        with _lock:
            stack.pop()
            if stack:  # back to this thread's enclosing block
                apply(stack[-1])
            else:
                _holders -= 1
                if _holders == 0:
                    for (obj, attr, _, _), value in zip(switches, _saved):
                        setattr(obj, attr, value)
