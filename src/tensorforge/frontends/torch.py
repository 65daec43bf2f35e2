"""PyTorch frontend: `nn.Module` or `ExportedProgram` -> `ir.Graph`, through `torch.export`.

1. The model is exported (`torch.export.export`, non-strict) with the batch dimension of every input
   dynamic unless `dynamic_batch=False`.
2. It is decomposed to core ATen, except for the ops we have a converter for: those stay whole
   (`aten.linear`, `aten.scaled_dot_product_attention`, `aten.layer_norm`, ...), so the IR sees the
   layer rather than its pieces.
3. Every FX node becomes IR nodes through its converter (frontends/aten.py); a node with no converter,
   or one its converter declines, becomes an opaque node named `torch.<ns>.<op>.<overload>` that runs
   through PyTorch. Nothing is dropped.
4. Every converted node's inferred IR type is checked against the type torch.export recorded, so a
   wrong conversion fails here, loudly, instead of producing wrong numbers later.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx

from ..ir import Graph, TensorType, Value
from ..ir.ops.opaque import encode_output_type
from ..ir.symbolic import SymExpr
from ..ir.types import BATCH, Sym, dtype_name
from . import aten  # noqa: F401  (registers the ATen converters)
from .converters import Unsupported, lookup


class ConversionError(RuntimeError):
    pass


# FX nodes that only check shapes at run time; they produce nothing the graph needs.
_CHECK_OPS = {
    "aten::_assert_tensor_metadata",
    "aten::_assert_scalar",
    "aten::sym_constrain_range_for_size",
    "aten::sym_constrain_range",
    "aten::_assert_async",
    "aten::_functional_assert_async",
}


def qualified_name(target) -> str:
    """aten.add.Tensor -> 'aten::add.Tensor'."""
    return f"{target._schema.name}.{target._overloadname}"


def opaque_name(target) -> str:
    """aten.logcumsumexp.default -> 'torch.aten.logcumsumexp.default' (the IR name of an opaque node)."""
    namespace, op = target._schema.name.split("::", 1)
    return f"torch.{namespace}.{op}.{target._overloadname}"


def _decomposition_table():
    """Core-ATen decompositions minus the ops we convert whole."""
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if isinstance(op, torch._ops.OpOverload) and lookup(qualified_name(op)) is not None:
            del table[op]
    return table


def _bind_schema(target, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name every argument of an OpOverload call after its schema, filling defaults."""
    bound = {}
    positional = list(args)
    for arg in target._schema.arguments:
        if positional and not arg.kwarg_only:
            bound[arg.name] = positional.pop(0)
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
        else:
            bound[arg.name] = None
    return bound


class TorchContext:
    """What a converter sees: the graph being built and helpers to add nodes and constants."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.fx_node: torch.fx.Node | None = None

    def emit(self, op: str, *inputs: Value, **attrs):
        """Add an IR node (named after the FX node being converted) and return its output(s)."""
        name = self.fx_node.name if self.fx_node is not None else None
        return self.graph.call(op, *inputs, name=name, **attrs)

    def const(self, value, dtype: torch.dtype | None = None) -> Value:
        """A constant from a tensor or a Python scalar (0-d, typed like PyTorch types Python scalars)."""
        if not isinstance(value, torch.Tensor):
            if dtype is None:
                dtype = (
                    torch.bool if isinstance(value, bool) else torch.int64 if isinstance(value, int) else torch.float32
                )
            value = torch.tensor(value, dtype=dtype)
        elif dtype is not None:
            value = value.to(dtype)
        return self.graph.add_constant(value, "const")

    def value(self, x, like: Value | None = None) -> Value:
        """x as a Value: Values pass through; Python scalars become 0-d constants (dtype of `like` if float)."""
        if isinstance(x, Value):
            return x
        if isinstance(x, (bool, int, float)):
            return self.const(x)
        raise Unsupported(f"argument {x!r} of type {type(x).__name__} cannot be an IR tensor")

    def users(self) -> list[torch.fx.Node]:
        return list(self.fx_node.users) if self.fx_node is not None else []


def _symbol_names(ep) -> dict[Any, str]:
    """Map export's sympy symbols to IR symbol names: the batch of the first input is BATCH."""
    names: dict[Any, str] = {}
    user_inputs = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for name in user_inputs:
        val = placeholders[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for axis, d in enumerate(val.shape):
            if isinstance(d, torch.SymInt):
                expr = d.node.expr
                if getattr(expr, "is_Symbol", False) and expr not in names:
                    # dynamic_batch declares every input's leading dimension to be the one batch size
                    names[expr] = BATCH if axis == 0 else f"dim{axis}_{len(names)}"
    return names


def _dim(d, symbols: dict):
    if isinstance(d, int):
        return d
    expr = d.node.expr if isinstance(d, torch.SymInt) else d
    if getattr(expr, "is_Integer", False):
        return int(expr)
    coeff, rest = expr.as_coeff_Mul()
    if getattr(rest, "is_Symbol", False) and rest in symbols and coeff == int(coeff) and int(coeff) >= 1:
        return Sym(symbols[rest], int(coeff))
    raise ConversionError(
        f"symbolic size {expr} is not a multiple of one input's batch size; convert with dynamic_batch=False"
    )


def _tensor_type(val: torch.Tensor, symbols: dict) -> TensorType:
    return TensorType(dtype_name(val.dtype), tuple(_dim(d, symbols) for d in val.shape))


def _export(model, args: tuple, kwargs: dict, dynamic_batch: bool):
    dynamic_shapes = None
    if dynamic_batch:
        # export specializes a size of 1: trace with batch 2 so the batch dimension stays symbolic
        def grow(t):
            return (
                t.expand(2, *t.shape[1:]).clone() if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == 1 else t
            )

        args = tuple(grow(a) for a in args)
        kwargs = {k: grow(v) for k, v in kwargs.items()}
        bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
        dynamic_shapes = {
            name: {0: torch.export.Dim.AUTO} if isinstance(v, torch.Tensor) and v.dim() else None
            for name, v in bound.items()
        }
    try:
        return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:
        hint = " (try dynamic_batch=False)" if dynamic_batch else ""
        raise ConversionError(
            f"torch.export could not capture {type(model).__name__}: {str(exc).strip().splitlines()[0]}{hint}"
        ) from exc


def from_torch(
    model,
    example_inputs=(),
    dynamic_batch: bool = True,
    *,
    example_kwargs: dict | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    name: str = "main",
) -> Graph:
    """Convert a PyTorch model (an `nn.Module` in eval mode, or an `ExportedProgram`) to an `ir.Graph`.

    example_inputs: a tensor or a tuple of tensors (positional arguments of forward); example_kwargs: keyword
    tensors. With dynamic_batch the leading dimension of every input is the symbol `batch`.
    Outputs are the tensors of the model's output, flattened in order (a tuple, a dict, a ModelOutput).
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(model, torch.export.ExportedProgram):
        ep = model
    else:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"from_torch takes an nn.Module or an ExportedProgram, got {type(model).__name__}")
        if model.training:
            model = model.eval()  # inference: dropout off, batch norm on running statistics
        with torch.no_grad():
            ep = _export(model, tuple(example_inputs), dict(example_kwargs or {}), dynamic_batch)
    ep = ep.run_decompositions(_decomposition_table())
    return _convert_program(ep, input_names, output_names, name)


def _convert_program(ep, input_names, output_names, name: str) -> Graph:
    graph = Graph(name)
    ctx = TorchContext(graph)
    symbols = _symbol_names(ep)
    env: dict[torch.fx.Node, Any] = {}
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs}
    user_inputs = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    rename = dict(zip(user_inputs, input_names or user_inputs))

    for node in ep.graph.nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            if spec.kind.name == "USER_INPUT":
                val = node.meta["val"]
                if not isinstance(val, torch.Tensor):
                    raise ConversionError(
                        f"input {node.name!r} is a {type(val).__name__}; only tensor inputs are supported"
                    )
                env[node] = graph.add_input(rename[node.name], _tensor_type(val, symbols))
            else:
                tensor = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
                env[node] = graph.add_constant(tensor.detach(), spec.target or node.name)
        elif node.op == "call_function":
            _convert_node(ctx, node, env, symbols)
        elif node.op == "output":
            outs = []
            for item in torch.utils._pytree.tree_leaves(node.args[0]):
                value = env.get(item) if isinstance(item, torch.fx.Node) else None
                if not isinstance(value, Value):
                    raise ConversionError(f"model output {item!r} is not a tensor computed by the graph")
                outs.append(value)
            graph.set_outputs(outs)
    if output_names:
        if len(output_names) != len(graph.outputs):
            raise ValueError(f"output_names has {len(output_names)} names for {len(graph.outputs)} outputs")
        for index, output_name in enumerate(output_names):
            graph.rename_output(index, output_name)
    return graph.verify()


def _map_arg(arg, env, symbols):
    if isinstance(arg, torch.fx.Node):
        if arg in env:
            return env[arg]
        raise ConversionError(f"FX node {arg.name} is used before it is converted")
    if isinstance(arg, (list, tuple)):
        return type(arg)(_map_arg(a, env, symbols) for a in arg)
    return arg


def _convert_node(ctx: TorchContext, node: torch.fx.Node, env: dict, symbols: dict) -> None:
    target = node.target
    val = node.meta.get("val")
    if target is operator.getitem:
        source, index = node.args
        if not isinstance(source, torch.fx.Node) or not isinstance(index, int):
            raise ConversionError(f"{node.name}: getitem of {source!r} at {index!r} is not a node output")
        produced = env[source]
        if not isinstance(produced, (tuple, list)) or produced[index] is None:
            raise ConversionError(f"{node.name}: output {index} of {source.name} was not converted")
        env[node] = produced[index]
        return
    if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
        env[node] = _dim(val, symbols)  # size arithmetic (sym_size, mul of sizes): a compile-time Dim
        return
    if not isinstance(target, torch._ops.OpOverload):
        raise ConversionError(f"{node.name}: cannot convert call to {target!r} (not an ATen-style operator)")
    qname = qualified_name(target)
    if qname.rsplit(".", 1)[0] in _CHECK_OPS:
        return
    kwargs = _bind_schema(target, _map_arg(node.args, env, symbols), _map_arg(node.kwargs, env, symbols))
    fn = lookup(qname)
    result = None
    if fn is not None:
        ctx.fx_node = node
        try:
            result = fn(ctx, **kwargs)
        except Unsupported:
            result = None
        finally:
            ctx.fx_node = None
    if result is None:
        result = _opaque(ctx, node, env, symbols)
    env[node] = result
    _check_types(node, result, symbols)


def _check_types(node: torch.fx.Node, result, symbols: dict) -> None:
    vals = node.meta.get("val")
    values = result if isinstance(result, (tuple, list)) else (result,)
    vals = vals if isinstance(vals, (tuple, list)) else (vals,)
    for value, val in zip(values, vals):
        if isinstance(value, Value) and isinstance(val, torch.Tensor):
            expected = _tensor_type(val, symbols)
            if value.type != expected:
                raise ConversionError(
                    f"{node.name} ({node.target}): converted to {value.type}, but PyTorch "
                    f"computes {expected} — a converter bug; please report it"
                )


def _encode_opaque_arg(arg, env_inputs: list[Value]):
    if isinstance(arg, Value):
        env_inputs.append(arg)
        return {"input": len(env_inputs) - 1}
    if isinstance(arg, (list, tuple)):
        return {"list": [_encode_opaque_arg(a, env_inputs) for a in arg]}
    if isinstance(arg, torch.dtype):
        return {"dtype": dtype_name(arg)}
    if isinstance(arg, torch.device):
        return {"device": None}
    if isinstance(arg, torch.layout):
        return {"layout": str(arg).removeprefix("torch.")}
    if isinstance(arg, torch.memory_format):
        return {"memory_format": str(arg).removeprefix("torch.")}
    if arg is None or isinstance(arg, (bool, int, float, str, SymExpr)):
        return arg
    raise ConversionError(f"cannot record argument {arg!r} ({type(arg).__name__}) of an opaque node")


def _opaque(ctx: TorchContext, node: torch.fx.Node, env: dict, symbols: dict):
    """Keep the node as `torch.<ns>.<op>.<overload>`: it runs through PyTorch with its recorded arguments."""
    target = node.target
    inputs: list[Value] = []
    args = [_encode_opaque_arg(_map_arg(a, env, symbols), inputs) for a in node.args]
    kwargs = {k: _encode_opaque_arg(_map_arg(v, env, symbols), inputs) for k, v in node.kwargs.items()}
    val = node.meta.get("val")
    vals = list(val) if isinstance(val, (tuple, list)) else [val]
    tensors = [v for v in vals if isinstance(v, torch.Tensor)]
    if len(tensors) != len(vals):
        raise ConversionError(f"{node.name}: {target} returns {type(val).__name__}, which an opaque node cannot carry")
    types = [_tensor_type(v, symbols) for v in tensors]
    out = ctx.graph.add_node(
        opaque_name(target),
        inputs,
        {"args": tuple(args), "kwargs": kwargs, "output_types": tuple(encode_output_type(t) for t in types)},
        name=node.name,
        output_types=types,
    )
    return tuple(out.outputs) if isinstance(val, (tuple, list)) else out.outputs[0]
