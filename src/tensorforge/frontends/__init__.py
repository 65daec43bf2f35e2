"""Frontends turn a model into an `ir.Graph`."""

from .torch import from_torch
from .onnx import from_onnx

__all__ = ["from_torch", "from_onnx"]
