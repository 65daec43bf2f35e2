"""Epilogue activations applied in place on a layer's output (shared by the conv and GEMM tactics).

An activation after a GEMM or convolution that the library cannot fuse still should not cost an extra
tensor: each entry overwrites the output it is given. Anything not listed runs through its IR op's
reference and is copied back (correct, one extra pass over the data).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ...ir import get_op

IN_PLACE: dict[str, Callable[[torch.Tensor, Mapping], torch.Tensor]] = {
    "nn.relu": lambda y, a: y.relu_(),
    "clip": lambda y, a: y.clamp_(a.get("a_min"), a.get("a_max")),
    "nn.gelu": lambda y, a: torch.ops.aten.gelu_(y, approximate=a.get("approximate", "none")),
    "nn.silu": lambda y, a: F.silu(y, inplace=True),
    "nn.hardswish": lambda y, a: F.hardswish(y, inplace=True),
    "nn.leaky_relu": lambda y, a: F.leaky_relu(y, a.get("alpha", 0.01), inplace=True),
    "sigmoid": lambda y, a: y.sigmoid_(),
    "tanh": lambda y, a: y.tanh_(),
}


def activation_fn(activation: str | None, attrs: Mapping) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function that applies `activation` to its argument, in place where it can, and returns the result."""
    if activation is None:
        return None
    attrs = dict(attrs)
    fn = IN_PLACE.get(activation)
    if fn is not None:
        return lambda y: fn(y, attrs)
    opdef = get_op(activation)
    return lambda y: y.copy_(opdef.run([y], attrs, {})[0])
