"""Opaque ops: a source-framework op the IR has no name for, kept and run through that framework.

A node named `torch.aten.logcumsumexp.default` (or `torch.mylib.myop.default`) calls that torch operator.
Its attributes say how to rebuild the call:
- `args` / `kwargs`: the operator's arguments, where `{"input": i}` stands for the node's i-th input,
  `{"dtype": name}`, `{"device": None}` (the device the graph runs on), `{"layout": name}`,
  `{"memory_format": name}` and `{"list": [...]}` for values that are not plain JSON;
- `output_types`: the output types the framework reported, since nothing else can infer them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from ..registry import OpDef, UnknownOpError, register_opaque_namespace
from ..symbolic import SymbolicFormatError, SymExpr
from ..types import Dim, Sym, TensorType, as_dim, monomial, torch_dtype

# An output type as an attribute holds it: (dtype name, shape), a symbolic dimension `scale*symbol` as
# (symbol, scale) (the form graphs had before any other expression existed), any other as the SymExpr itself.
OutputTypeSpec: TypeAlias = tuple[str, tuple[int | tuple[str, int] | SymExpr, ...]]


def decode_output_type(spec: OutputTypeSpec) -> TensorType:
    """The type a spec holds. A dimension may also be in `SymExpr.to_json`'s form (a symbol's name, or
    {"+": [...]}-style objects), as a writer that never built a SymExpr spells it."""
    dtype, shape = spec
    return TensorType(dtype, tuple(_decode_dim(d) for d in shape))


def _decode_dim(dim: object) -> Dim:
    if isinstance(dim, tuple):
        return Sym(*dim)
    if isinstance(dim, (str, dict)):
        try:
            return as_dim(SymExpr.from_json(_json_lists(dim)))
        except SymbolicFormatError as exc:
            raise ValueError(f"a dimension {dim!r} is not a size expression: {exc}") from None
    if isinstance(dim, (int, SymExpr)) and not isinstance(dim, bool):
        return dim
    raise ValueError(f"a dimension is an int, (symbol, scale) or a size expression, got {dim!r}")


def _json_lists(value: object) -> object:
    """JSON's lists back from the tuples attributes hold them as (`canonical_attr`)."""
    if isinstance(value, (tuple, list)):
        return [_json_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_lists(v) for k, v in value.items()}
    return value


def encode_output_type(t: TensorType) -> OutputTypeSpec:
    return (
        t.dtype,
        tuple(
            monomial(d, "an opaque output type") if isinstance(d, SymExpr) and d.to_dim() is not None else d
            for d in t.shape
        ),
    )


# One part of an operator name: an identifier that is not a dunder (torch.ops' own attributes are dunders or
# methods; a name is never walked as attributes until the dispatcher has said it is a registered operator).
_NAME_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# Registered operators a graph must never name, whatever a file says: collectives and process groups, TorchScript
# and profiler built-ins, debugging hooks. Together with the schema checks below they keep opaque nodes to pure
# computations on tensors.
_REFUSED_NAMESPACES = frozenset(
    {
        "prim",
        "profiler",
        "c10d",
        "_c10d_functional",
        "_c10d_functional_autograd",
        "symm_mem",
        "debugprims",
        "debug_mode_ops",
        "static_runtime",
        "_test",
    }
)


def _unsafe(namespace: str, schema: torch.FunctionSchema) -> str | None:
    """Why a registered operator may not run from a graph (None: it may): it must compute tensors from tensors,
    without side effects — no in-place or out= writes, no file names (aten::save, aten::from_file), something
    returned."""
    if namespace in _REFUSED_NAMESPACES:
        return f"is in the {namespace!r} namespace (not a tensor computation)"
    if schema.is_mutable:
        return "writes to its arguments"
    if any(arg.name in ("filename", "path", "file") for arg in schema.arguments):
        return "reads or writes files"
    if not schema.returns or not all("Tensor" in str(r.type) for r in schema.returns):
        return "does not return tensors"
    return None


def torch_operator(name: str) -> torch._ops.OpOverload:
    """torch.aten.logcumsumexp.default -> torch.ops.aten.logcumsumexp.default, only if the dispatcher has that overload.

    A name comes from a file, so it is data: it is checked against the operator registry (the schemas the
    dispatcher lists for `namespace::op`) before anything is looked up, and the lookup must give an
    `OpOverload`. Nothing is imported, evaluated or reached by walking attributes of arbitrary objects."""
    parts = name.split(".")
    if (
        len(parts) != 4
        or parts[0] != "torch"
        or not all(_NAME_PART.match(p) and not p.startswith("__") for p in parts[1:])
    ):
        raise UnknownOpError(
            f"opaque torch op names look like torch.<namespace>.<op>.<overload> (identifiers, no dunders), got {name!r}"
        )
    _, namespace, op, overload = parts
    schemas = {
        schema.overload_name or "default": schema
        for schema in torch._C._jit_get_schemas_for_operator(f"{namespace}::{op}")
    }
    if overload not in schemas:
        known = f" (it has {', '.join(sorted(schemas))})" if schemas else ""
        raise UnknownOpError(
            f"torch has no operator {namespace}::{op}.{overload}{known}, needed by an opaque node; "
            f"import the library that registers it before loading this graph"
        )
    problem = _unsafe(namespace, schemas[overload])
    if problem:
        raise UnknownOpError(
            f"opaque node names {namespace}::{op}.{overload}, which {problem}: a graph may only name "
            f"pure tensor operators"
        )
    resolved = getattr(getattr(getattr(torch.ops, namespace), op), overload)
    if not isinstance(resolved, torch._ops.OpOverload):  # the registry said yes: anything else is a torch bug
        raise UnknownOpError(f"{name!r} does not resolve to a torch operator overload")
    return resolved


_LAYOUTS = {"strided", "sparse_coo", "sparse_csr"}
_MEMORY_FORMATS = {"contiguous_format", "channels_last", "channels_last_3d", "preserve_format"}


def _materialize(arg: object, tensors: Sequence[Tensor], device: torch.device | str | None) -> Any:
    """An encoded operator argument as the value the operator takes."""
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


@functools.lru_cache(maxsize=1024)  # bounded: names come from files, and a refused name is not cached
def _resolve_torch(name: str) -> OpDef:
    op = torch_operator(name)  # checked now, when a graph naming it is read, not at its first run

    def compute(
        *tensors: Tensor,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        output_types: Sequence[OutputTypeSpec] = (),
        device: torch.device | str | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        dev = tensors[0].device if tensors else device
        out = op(
            *_materialize(tuple(args), tensors, dev),
            **{k: _materialize(v, tensors, dev) for k, v in (kwargs or {}).items()},
        )
        return tuple(out) if isinstance(out, (tuple, list)) else out

    compute.__doc__ = f"{name}: run through PyTorch"

    def infer(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        used = _input_references((attrs.get("args", ()), attrs.get("kwargs", {})))
        if any(not 0 <= i < len(inputs) for i in used):
            raise ValueError(f"{name}: its arguments refer to input(s) {sorted(used)}, but it has {len(inputs)}")
        return [decode_output_type(spec) for spec in attrs["output_types"]]

    return OpDef(
        name=name,
        compute=compute,
        num_inputs=(0, None),
        infer=infer,
        family="opaque",
        opaque=True,
        check_attrs=functools.partial(_check_torch_attrs, op._schema),
    )


_TORCH_ATTRS = {"args", "kwargs", "output_types"}


def _check_torch_attrs(schema: torch.FunctionSchema, attrs: Mapping[str, Any]) -> str | None:
    """Why an opaque torch node's attributes are malformed (None: they are not), checked when a graph is read:
    the layout above, and a call the operator's schema can take (no more positional arguments than it has, only
    keyword arguments it names)."""
    unknown = sorted(set(attrs) - _TORCH_ATTRS)
    if unknown:
        return f"unknown attribute(s) {unknown}; an opaque torch node has {sorted(_TORCH_ATTRS)}"
    args, kwargs, outputs = attrs.get("args", ()), attrs.get("kwargs", {}), attrs.get("output_types")
    if not isinstance(args, (tuple, list)):
        return f"args must be a list, got {type(args).__name__}"
    if not isinstance(kwargs, dict):
        return f"kwargs must be an object, got {type(kwargs).__name__}"
    if not isinstance(outputs, (tuple, list)) or not outputs:
        return "output_types must be a non-empty list of (dtype, shape)"
    try:
        for spec in outputs:
            decode_output_type(spec)
    except (TypeError, ValueError, KeyError) as exc:
        return f"output_types: {exc}"
    positional = [a.name for a in schema.arguments if not a.kwarg_only]
    if len(args) > len(positional):
        return f"{len(args)} positional arguments, the operator takes at most {len(positional)} ({schema})"
    names = {a.name for a in schema.arguments}
    extra = sorted(set(kwargs) - names)
    if extra:
        return f"keyword argument(s) {extra} that the operator does not have ({schema})"
    return None


def _input_references(arg: object) -> set[int]:
    """The node inputs an encoded argument refers to ({"input": i}, at any depth)."""
    if isinstance(arg, dict):
        if "input" in arg:
            return {arg["input"]} if isinstance(arg["input"], int) and not isinstance(arg["input"], bool) else {-1}
        return set().union(*(_input_references(v) for v in arg.values())) if arg else set()
    if isinstance(arg, (tuple, list)):
        return set().union(*(_input_references(v) for v in arg)) if arg else set()
    return set()


register_opaque_namespace("torch.", _resolve_torch)
