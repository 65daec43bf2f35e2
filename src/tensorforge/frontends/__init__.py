"""Frontends turn a model into an `ir.Graph`."""

from . import onnx_opaque  # noqa: F401  (registers the `onnx.` opaque op namespace with the IR)
from .torch import from_torch


def from_onnx(*args, **kwargs):
    """`tensorforge.frontends.onnx.from_onnx`, imported on first use: onnx is an optional dependency
    (`pip install tensorforge[onnx]`), so `import tensorforge` must not need it."""
    try:
        from .onnx import from_onnx as impl
    except ImportError as exc:
        raise ImportError(
            f"from_onnx needs the onnx and onnxruntime packages ({exc}); "
            f"install them with: pip install 'tensorforge[onnx]'"
        ) from exc
    return impl(*args, **kwargs)


__all__ = ["from_torch", "from_onnx"]
