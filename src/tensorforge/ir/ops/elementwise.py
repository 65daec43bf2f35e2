"""Elementwise ops: unary math and activations, binary arithmetic and comparisons, clip, cast, where.

Broadcasting and type promotion follow PyTorch (the reference implementations are PyTorch ops),
so a graph computes exactly what the framework it came from computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import REQUIRED, ShapeInferenceError, register_op
from ..symbolic import SymExpr
from ..types import Dim, TensorType, torch_dtype


def broadcast_dims(shapes: Sequence[Sequence[Dim]]) -> tuple[Dim, ...] | None:
    """Broadcasting on size expressions, axes aligned from the right: sizes that are the same expression, or 1,
    which stretches. A symbolic size against a different one (a constant > 1 or another expression) is equal only
    at some sizes, so it is refused, naming both. Sizes that are all constants are the reference's to judge (None)."""
    rank = max((len(s) for s in shapes), default=0)
    shape: list[Dim] = []
    for axis in range(-rank, 0):
        sizes: list[Dim] = []
        for dims in shapes:
            size = dims[axis] if len(dims) >= -axis else 1
            if not (isinstance(size, int) and size == 1) and size not in sizes:
                sizes.append(size)
        if len(sizes) > 1:
            if not any(isinstance(d, SymExpr) for d in sizes):
                return None
            first, other = sorted(sizes, key=lambda d: not isinstance(d, SymExpr))[:2]  # a symbolic one first
            raise ShapeInferenceError(
                f"{first} broadcast against {other} holds only at {first} = {other} (axis {axis}); sizes broadcast "
                f"when they are the same expression or one is 1: make them equal, or slice or reshape one to 1"
            )
        shape.append(sizes[0] if sizes else 1)
    return tuple(shape)


def _broadcast_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape = broadcast_dims([t.shape for t in inputs])
    return None if shape is None else [shape]


# (IR name, reference) — each a one-input op with no attributes
UNARY: list[tuple[str, Callable[..., Tensor]]] = [
    ("nn.relu", torch.relu),
    ("sigmoid", torch.sigmoid),
    ("tanh", torch.tanh),
    ("exp", torch.exp),
    ("log", torch.log),
    ("sqrt", torch.sqrt),
    ("rsqrt", torch.rsqrt),
    ("abs", torch.abs),
    ("negative", torch.neg),
    ("sin", torch.sin),
    ("cos", torch.cos),
    ("tan", torch.tan),
    ("atan", torch.atan),
    ("ceil", torch.ceil),
    ("floor", torch.floor),
    ("round", torch.round),
    ("sign", torch.sign),
    ("reciprocal", torch.reciprocal),
    ("erf", torch.erf),
    ("logical_not", torch.logical_not),
    ("nn.silu", F.silu),
    ("nn.mish", F.mish),
    ("nn.hardswish", F.hardswish),
    ("nn.hardsigmoid", F.hardsigmoid),
    ("nn.softplus", F.softplus),
]

# (IR name, reference) — each a two-input op with broadcasting
BINARY: list[tuple[str, Callable[..., Tensor]]] = [
    ("add", torch.add),
    ("subtract", torch.sub),
    ("multiply", torch.mul),
    ("divide", torch.div),
    ("floor_divide", lambda a, b: torch.div(a, b, rounding_mode="floor")),
    ("trunc_divide", lambda a, b: torch.div(a, b, rounding_mode="trunc")),
    ("floor_mod", torch.remainder),
    ("trunc_mod", torch.fmod),
    ("power", torch.pow),
    ("maximum", torch.maximum),
    ("minimum", torch.minimum),
    ("equal", torch.eq),
    ("not_equal", torch.ne),
    ("less", torch.lt),
    ("less_equal", torch.le),
    ("greater", torch.gt),
    ("greater_equal", torch.ge),
    ("logical_and", torch.logical_and),
    ("logical_or", torch.logical_or),
    ("logical_xor", torch.logical_xor),
]


def _declare(name: str, fn: Callable[..., Tensor], arity: int) -> None:
    def reference(*xs: Tensor) -> Tensor:
        return fn(*xs)

    reference.__name__ = name.replace(".", "_")
    reference.__doc__ = f"{name}: elementwise {getattr(fn, '__name__', name)}"
    reference.__module__ = __name__
    register_op(name, inputs=arity, infer_shape=_broadcast_shape if arity > 1 else None)(reference)


for _name, _fn in UNARY:
    _declare(_name, _fn, 1)
for _name, _fn in BINARY:
    _declare(_name, _fn, 2)


@register_op("nn.gelu", attrs={"approximate": "none"})
def gelu(x: Tensor, approximate: str) -> Tensor:
    """nn.gelu: Gaussian error linear unit, exact ("none") or the tanh approximation."""
    return F.gelu(x, approximate=approximate)


@register_op("nn.leaky_relu", attrs={"alpha": 0.01})
def leaky_relu(x: Tensor, alpha: float) -> Tensor:
    """nn.leaky_relu: x if x > 0 else alpha * x."""
    return F.leaky_relu(x, alpha)


@register_op("nn.elu", attrs={"alpha": 1.0})
def elu(x: Tensor, alpha: float) -> Tensor:
    """nn.elu: x if x > 0 else alpha * (exp(x) - 1)."""
    return F.elu(x, alpha)


@register_op("nn.prelu", inputs=2)
def prelu(x: Tensor, alpha: Tensor) -> Tensor:
    """nn.prelu: leaky relu with a learned slope per channel (axis 1)."""
    return F.prelu(x, alpha)


@register_op("clip", attrs={"a_min": None, "a_max": None})
def clip(x: Tensor, a_min: float | None, a_max: float | None) -> Tensor:
    """clip: clamp into [a_min, a_max] (either bound may be None)."""
    return torch.clamp(x, a_min, a_max)


@register_op("cast", attrs={"dtype": REQUIRED})
def cast(x: Tensor, dtype: str) -> Tensor:
    """cast: convert to another dtype."""
    return x.to(torch_dtype(dtype))


@register_op("where", inputs=3, infer_shape=_broadcast_shape)
def where(condition: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """where: x where condition holds, else y (broadcasting)."""
    return torch.where(condition, x, y)
