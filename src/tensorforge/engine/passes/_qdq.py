"""Reading quantized graphs for passes (not a pass): which values are dequantized 8-bit tensors, and how.

A quantized layer (engine/quantized_ops.py) is made from dequantize nodes of two kinds: a *per-tensor* one on an
activation (one scale, zero point 0: what tensorforge's calibrators and TensorRT's explicit quantization insert)
and a *weight* one on a constant (a scale per output channel, axis 0, or one for the tensor; a matmul's [K, N]
weight: per column, axis 1). Both must be
symmetric: a zero point would add a term to every product that the 8-bit kernels do not compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...ir import Node, Value
from ..quantized_ops import LAYER_DTYPES


@dataclass(frozen=True)
class Dequantized:
    """A value that is `dequantize(source, scale)`: `source` 8-bit (int8 / float8_e4m3fn), `scale` float32, 0-d for
    a per-tensor scale or [C] along `axis`; `node` is the dequantize."""

    node: Node
    source: Value
    scale: torch.Tensor
    axis: int | None

    @property
    def dtype(self) -> str:
        return self.source.type.dtype


def _symmetric(node: Node) -> bool:
    """Whether the quantize / dequantize `node` has no zero point, or a constant one of zeros."""
    if len(node.inputs) < 3:
        return True
    zero_point = node.inputs[2].data
    return zero_point is not None and not bool((zero_point.float() != 0).any())


def _symmetric_dequantize(value: Value) -> Dequantized | None:
    node = value.producer
    if node is None or node.op != "dequantize" or node.inputs[0].type.dtype not in LAYER_DTYPES:
        return None
    scale = node.inputs[1].data
    if scale is None:
        return None
    if not _symmetric(node):
        return None
    return Dequantized(node, node.inputs[0], scale.float(), node.attrs["axis"])


def per_tensor_dequantized(value: Value) -> Dequantized | None:
    """`value` as a symmetric per-tensor dequantize of an 8-bit activation or constant, else None."""
    found = _symmetric_dequantize(value)
    if found is None or found.scale.numel() != 1 or (found.axis is not None and found.scale.dim() != 0):
        return None
    return found


def dequantized_weight(value: Value) -> Dequantized | None:
    """`value` as a symmetric dequantize of an 8-bit constant, per output channel (axis 0) or per tensor, else
    None."""
    found = _symmetric_dequantize(value)
    if found is None or found.source.data is None:
        return None
    if found.scale.numel() == 1 and found.scale.dim() <= 1:
        return found
    rank = found.source.type.rank
    if found.axis is not None and found.axis % rank == 0 and found.scale.shape == (found.source.type.shape[0],):
        return found
    return None


def dequantized_matmul_weight(value: Value) -> Dequantized | None:
    """`value` as a symmetric dequantize of a 2-d 8-bit constant [K, N], the right operand of a matmul by a weight
    (GPT-2's Conv1D, an addmm), per column (axis 1) or per tensor, else None."""
    found = _symmetric_dequantize(value)
    if found is None or found.source.data is None or found.source.type.rank != 2:
        return None
    if found.scale.numel() == 1 and found.scale.dim() <= 1:
        return found
    if found.axis is not None and found.axis % 2 == 1 and found.scale.shape == (found.source.type.shape[1],):
        return found
    return None


def channel_scales(weight: Dequantized) -> torch.Tensor:
    """The weight's scale as float32 [output channels] (a per-tensor scale repeated)."""
    channels = weight.source.type.concrete_shape()[0]  # a constant: static
    return weight.scale.reshape(-1).expand(channels).clone() if weight.scale.numel() == 1 else weight.scale.clone()


def per_tensor_quantize_scale(node: Node) -> float | None:
    """The scale of `node` when it is a symmetric per-tensor quantize to an 8-bit layer type, else None: what a
    layer (or a norm) can compute in its own epilogue before its one store."""
    if node.op != "quantize" or node.attrs["axis"] is not None or node.attrs["dtype"] not in LAYER_DTYPES:
        return None
    scale = node.inputs[1].data
    if scale is None or scale.numel() != 1:
        return None
    return float(scale.reshape(())) if _symmetric(node) else None
