"""Opaque ops: a source-framework op the IR has no name for, kept and run through that framework.

A node named `torch.aten.cumsum.default` (or `torch.mylib.myop.default`) calls that torch operator.
Its attributes say how to rebuild the call:
- `args` / `kwargs`: the operator's arguments, where `{"input": i}` stands for the node's i-th input,
  `{"dtype": name}`, `{"device": None}` (the device the graph runs on), `{"layout": name}`,
  `{"memory_format": name}` and `{"list": [...]}` for values that are not plain JSON;
- `output_types`: the output types the framework reported, since nothing else can infer them.
"""

from __future__ import annotations

import functools

import torch

from ..registry import OpDef, register_opaque_namespace
from ..types import Sym, TensorType, torch_dtype


def decode_output_type(spec) -> TensorType:
    dtype, shape = spec
    return TensorType(dtype, tuple(Sym(*d) if isinstance(d, tuple) else d for d in shape))


def encode_output_type(t: TensorType) -> tuple:
    return (t.dtype, tuple((d.symbol, d.scale) if isinstance(d, Sym) else d for d in t.shape))


def _torch_operator(name: str):
    """torch.aten.cumsum.default -> torch.ops.aten.cumsum.default (looked up, never evaluated)."""
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != "torch":
        raise ValueError(f"opaque torch op names look like torch.<namespace>.<op>.<overload>, got {name!r}")
    _, namespace, op, overload = parts
    try:
        return getattr(getattr(getattr(torch.ops, namespace), op), overload)
    except (AttributeError, RuntimeError) as exc:
        raise ValueError(f"torch has no operator {namespace}::{op}.{overload} (needed by an opaque node); "
                         f"import the library that registers it before loading this graph") from exc


_LAYOUTS = {"strided", "sparse_coo", "sparse_csr"}
_MEMORY_FORMATS = {"contiguous_format", "channels_last", "channels_last_3d", "preserve_format"}


def _materialize(arg, tensors, device):
    if isinstance(arg, dict):
        if "input" in arg:
            return tensors[arg["input"]]
        if "dtype" in arg:
            return torch_dtype(arg["dtype"])
        if "device" in arg:
            return device
        if "list" in arg:
            return [_materialize(a, tensors, device) for a in arg["list"]]
        if "layout" in arg and arg["layout"] in _LAYOUTS:
            return getattr(torch, arg["layout"])
        if "memory_format" in arg and arg["memory_format"] in _MEMORY_FORMATS:
            return getattr(torch, arg["memory_format"])
        raise ValueError(f"unknown opaque argument encoding {arg!r}")
    if isinstance(arg, tuple):
        return tuple(_materialize(a, tensors, device) for a in arg)
    return arg


@functools.lru_cache(maxsize=None)
def _resolve_torch(name: str) -> OpDef:
    def compute(*tensors, args=(), kwargs=None, output_types=(), device=None):
        op = _torch_operator(name)
        dev = tensors[0].device if tensors else device
        out = op(*_materialize(tuple(args), tensors, dev),
                 **{k: _materialize(v, tensors, dev) for k, v in (kwargs or {}).items()})
        return tuple(out) if isinstance(out, (tuple, list)) else out

    compute.__doc__ = f"{name}: run through PyTorch"

    def infer(inputs, attrs):
        return [decode_output_type(spec) for spec in attrs["output_types"]]

    return OpDef(name=name, compute=compute, num_inputs=(0, None), infer=infer, family="opaque", opaque=True)


register_opaque_namespace("torch.", _resolve_torch)
