"""PyTorch frontend: `nn.Module` or `ExportedProgram` -> `ir.Graph`, through `torch.export`.

1. The model is exported (`torch.export.export`, non-strict) with the `dynamic_shapes` the caller declares
   (`torch.export.Dim`s: each becomes an IR symbol of its name), else with the batch dimension of every input
   dynamic unless `dynamic_batch=False`. Sizes export computes from those symbols become `SymExpr`s, and the
   ranges it settles on become `Graph.symbol_ranges`.
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
import re
import warnings
from collections.abc import Sequence
from typing import Any

import sympy  # type: ignore[import-untyped]  # torch's own dependency, no stubs
import torch
import torch.fx

from ..ir import Graph, TensorType, Value
from ..ir.ops.opaque import encode_output_type
from ..ir.symbolic import SymExpr
from ..ir.types import BATCH, Dim, dtype_name
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

    def __init__(self, graph: Graph, symbols: _Symbols):
        self.graph = graph
        self.symbols = symbols
        self.fx_node: torch.fx.Node | None = None

    def output_shape(self) -> tuple[Dim, ...]:
        """The shape torch.export recorded for the node being converted (its first tensor output), in IR sizes."""
        val = self.fx_node.meta.get("val") if self.fx_node is not None else None
        if isinstance(val, (tuple, list)):
            val = val[0]
        if not isinstance(val, torch.Tensor):
            raise Unsupported("the node records no output tensor")
        return tuple(_dim(d, self.symbols) for d in val.shape)

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


# -- symbols: export's sympy sizes -> named SymExpr -----------------------------------------------


def _identifier(text: str) -> str:
    """`text` as a symbol name: characters outside [A-Za-z0-9_] become `_`, a leading digit gets a `_` before it."""
    name = re.sub(r"\W", "_", text) or "_"
    return f"_{name}" if name[0].isdigit() else name


def _declared_dim_names(model, args: tuple, kwargs: dict, dynamic_shapes) -> list[dict[int, str]]:
    """For each input tensor in export's order (the leaves of (args, kwargs)): axis -> the name of the `Dim` the
    user declared there. `Dim.AUTO`/`DYNAMIC` and static axes name nothing (their symbols get `{input}_d{axis}`)."""
    if dynamic_shapes is None:
        return []
    if isinstance(dynamic_shapes, dict):
        names = list(inspect.signature(model.forward).bind(*args, **kwargs).arguments)
        positional = names[: len(args)]
        specs = [dynamic_shapes.get(n) for n in positional] + [dynamic_shapes.get(k) for k in kwargs]
    else:
        specs = list(dynamic_shapes) + [None] * (len(args) + len(kwargs) - len(dynamic_shapes))
    out: list[dict[int, str]] = []
    for value, spec in zip([*args, *kwargs.values()], specs):
        _walk_spec(value, spec, out)
    return out


def _walk_spec(value, spec, out: list[dict[int, str]]) -> None:
    """Pair one (possibly nested) input with its spec, in the order torch.export flattens inputs."""
    if isinstance(value, torch.Tensor):
        axes = spec.items() if isinstance(spec, dict) else enumerate(spec) if isinstance(spec, (list, tuple)) else ()
        out.append({axis: dim.__name__ for axis, dim in axes if isinstance(dim, torch.export.Dim)})
    elif isinstance(value, (list, tuple)):
        subs = spec if isinstance(spec, (list, tuple)) else [None] * len(value)
        for item, sub in zip(value, subs):
            _walk_spec(item, sub, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_spec(item, spec.get(key) if isinstance(spec, dict) else None, out)
    else:
        out.append({})  # a non-tensor leaf still takes its place among export's inputs


class _Symbols:
    """Export's sympy symbols and the IR names they take: a bare symbol at an input's axis is named after the
    user's `Dim` there, `batch` on the legacy `dynamic_batch` path (axis 0), else `{input}_d{axis}`; a name two
    symbols want is suffixed `_2`, `_3`, ... Sizes are translated to `SymExpr` (`expr`)."""

    def __init__(self) -> None:
        self.names: dict[Any, str] = {}

    def name(self, symbol, wanted: str, *, shared: bool = False) -> str:
        """The IR name of `symbol`, given `wanted` the first time; `shared`: several symbols may take that name
        (export's independent batch sizes of dynamic_batch's inputs are declared to be one size)."""
        if symbol not in self.names:
            base = _identifier(wanted)
            taken = set(self.names.values())
            name, k = base, 1
            while name in taken and not shared:
                k += 1
                name = f"{base}_{k}"
            self.names[symbol] = name
        return self.names[symbol]

    def expr(self, expr) -> SymExpr | int:
        """A sympy size as an IR dimension; ConversionError naming the part the IR has no arithmetic for."""
        result = _translate(expr, self, expr)
        return result.constant if isinstance(result, SymExpr) and result.is_constant else result


def _translate(expr, symbols: _Symbols, whole) -> SymExpr:
    if getattr(expr, "is_Integer", False):
        return SymExpr.const(int(expr))
    if getattr(expr, "is_Symbol", False):
        return SymExpr.symbol(symbols.name(expr, str(expr)))
    kind = type(expr).__name__
    args: tuple[Any, ...] = tuple(getattr(expr, "args", ()))
    if getattr(expr, "is_Add", False) or getattr(expr, "is_Mul", False):
        parts = [_translate(a, symbols, whole) for a in args]
        total = parts[0]
        for p in parts[1:]:
            total = total + p if expr.is_Add else total * p
        return total
    if getattr(expr, "is_Pow", False) and getattr(args[1], "is_Integer", False) and int(args[1]) >= 0:
        base, result = _translate(args[0], symbols, whole), SymExpr.const(1)
        for _ in range(int(args[1])):
            result = result * base
        return result
    if kind in _DIVISIONS and len(args) == 2 and getattr(args[1], "is_Integer", False) and int(args[1]) >= 1:
        return _DIVISIONS[kind](_translate(args[0], symbols, whole), int(args[1]))
    if kind == "CeilToInt" and len(args) == 1 and type(args[0]).__name__ == "IntTrueDiv":
        num, den = args[0].args
        if getattr(den, "is_Integer", False) and int(den) >= 1:  # ceil(a / d) == (a + d - 1) // d
            return (_translate(num, symbols, whole) + (int(den) - 1)) // int(den)
    shown = {sym: sympy.Symbol(name) for sym, name in symbols.names.items()}  # as the user named them
    raise ConversionError(
        f"symbolic size {whole.xreplace(shown)} uses {expr.xreplace(shown)} ({kind}), which the IR's size "
        f"arithmetic cannot express (it has +, -, *, "
        f"integer powers, and // and % by a positive int); declare that dimension static or give it its own Dim"
    )


# sympy functions (torch.utils._sympy.functions, by class name: stable across torch versions) that divide by an int
_DIVISIONS = {
    "FloorDiv": lambda e, d: e // d,
    "CleanDiv": lambda e, d: e // d,  # exact by construction
    "CeilDiv": lambda e, d: (e + (d - 1)) // d,
    "Mod": lambda e, d: e % d,  # sizes are non-negative: C and Python remainders agree
    "PythonMod": lambda e, d: e % d,
}


def _input_symbols(ep, declared: list[dict[int, str]], legacy_batch: bool) -> _Symbols:
    """Name every symbol that is a whole input dimension (see `_Symbols`), inputs in order."""
    symbols = _Symbols()
    user_inputs = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for index, name in enumerate(user_inputs):
        val = placeholders[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        dims = declared[index] if index < len(declared) else {}
        for axis, d in enumerate(val.shape):
            expr = d.node.expr if isinstance(d, torch.SymInt) else None
            if getattr(expr, "is_Symbol", False):
                if axis in dims:
                    symbols.name(expr, dims[axis])
                elif legacy_batch and axis == 0:
                    # dynamic_batch declares every input's leading dimension to be the one batch size
                    symbols.name(expr, BATCH, shared=True)
                else:
                    symbols.name(expr, f"{name}_d{axis}")
    return symbols


def _symbol_ranges(ep, symbols: _Symbols) -> dict[str, tuple[int, int | None]]:
    """Export's range constraints of the named symbols: (min, max), max None where unbounded."""
    ranges: dict[str, tuple[int, int | None]] = {}
    for symbol, vr in ep.range_constraints.items():
        if symbol not in symbols.names:
            continue
        lo = _finite_int(vr.lower)
        hi = _finite_int(vr.upper)
        ranges[symbols.names[symbol]] = (max(lo or 0, 0), hi)
    return ranges


def _finite_int(bound) -> int | None:
    """A range bound as an int; None for infinity (torch's `int_oo`, sympy's `oo`)."""
    return int(bound) if getattr(bound, "is_Integer", False) or type(bound) is int else None


def _dim(d, symbols: _Symbols):
    if isinstance(d, int):
        return d
    return symbols.expr(d.node.expr if isinstance(d, torch.SymInt) else d)


def _tensor_type(val: torch.Tensor, symbols: _Symbols) -> TensorType:
    return TensorType(dtype_name(val.dtype), tuple(_dim(d, symbols) for d in val.shape))


def _check_devices(model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """A model whose weights sit on another device than its example inputs cannot be traced: say which, and the fix
    (torch.export's own message names neither the model's device nor what to move)."""
    weights = {str(t.device) for t in (*model.parameters(), *model.buffers())}
    inputs = {str(t.device) for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)}
    if len(weights) == 1 and inputs and inputs != weights:
        (where,) = weights
        raise ConversionError(
            f"{type(model).__name__}'s weights are on {where} but its example inputs on {', '.join(sorted(inputs))}: "
            f"move one to the other's device (model.to({next(iter(sorted(inputs)))!r}) or the inputs .to({where!r})) "
            f"before converting"
        )


def _export(model, args: tuple, kwargs: dict, dynamic_batch: bool, dynamic_shapes):
    _check_devices(model, args, kwargs)
    declared = dynamic_shapes is not None
    if not declared and dynamic_batch:
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
        return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False), False
    except Exception as exc:
        if declared and "Constraints violated" in str(exc):
            # export emitted a guard narrower than the declared range (torch 2.11 guards ResNet's sides with
            # ((h - 1) // 2) % 2 != 0, which 2.14 does not): export with Dim.DYNAMIC instead. The names still come
            # from the declared Dims and their ranges still bound the profiles; the model itself runs at every size
            try:
                relaxed = _relax_dims(dynamic_shapes)
                ep = torch.export.export(model, args, kwargs, dynamic_shapes=relaxed, strict=False)
            except Exception:  # noqa: BLE001 - the original refusal is the one to report
                pass
            else:
                guards = [line.strip(" -") for line in str(exc).splitlines() if "generated guard" in line]
                warnings.warn(
                    f"torch.export guarded {type(model).__name__} more narrowly than the declared ranges "
                    f"({'; '.join(guards) or str(exc).splitlines()[0]}); exported with Dim.DYNAMIC instead. The "
                    f"converted graph runs every size of the declared ranges; if the model's Python branches on a "
                    f"size, check its outputs at sizes outside those guards",
                    UserWarning,
                    stacklevel=3,
                )
                return ep, True
        hint = " (check dynamic_shapes)" if declared else " (try dynamic_batch=False)" if dynamic_batch else ""
        raise ConversionError(
            f"torch.export could not capture {type(model).__name__}: {str(exc).strip().splitlines()[0]}{hint}"
        ) from exc


def _relax_dims(spec: Any) -> Any:
    """`spec` with every named `Dim` replaced by `Dim.DYNAMIC`."""
    if isinstance(spec, torch.export.Dim):
        return torch.export.Dim.DYNAMIC
    if isinstance(spec, dict):
        return {k: _relax_dims(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return type(spec)(_relax_dims(v) for v in spec)
    return spec


def _declared_ranges(spec: Any) -> dict[str, tuple[int, int | None]]:
    """name -> (min, max) of every named `Dim` in `spec` (max None where unbounded)."""
    if isinstance(spec, torch.export.Dim):
        high = getattr(spec, "max", None)
        bounded = isinstance(high, int) and high < 2**31
        return {_identifier(spec.__name__): (int(getattr(spec, "min", 0) or 0), high if bounded else None)}
    items = spec.values() if isinstance(spec, dict) else spec if isinstance(spec, (list, tuple)) else ()
    found: dict[str, tuple[int, int | None]] = {}
    for item in items:
        found.update(_declared_ranges(item))
    return found


def from_torch(
    model,
    example_inputs=(),
    dynamic_batch: bool = True,
    *,
    dynamic_shapes: Any = None,
    example_kwargs: dict | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    name: str = "main",
) -> Graph:
    """Convert a PyTorch model (an `nn.Module` in eval mode, or an `ExportedProgram`) to an `ir.Graph`.

    example_inputs: a tensor or a tuple of tensors (positional arguments of forward); example_kwargs: keyword
    tensors. With dynamic_batch the leading dimension of every input is the symbol `batch`.

    dynamic_shapes: what `torch.export.export` takes (a dict by argument name or a tuple in argument order, each
    entry {axis: Dim} or a tuple of Dims/None per axis), e.g. `{"input_ids": {0: Dim("batch"), 1: Dim("seq",
    max=512)}}`. Given, it alone decides what is dynamic (dynamic_batch adds nothing). Each symbol is named after
    its Dim (`Dim.AUTO` and other unnamed dynamic axes: `{input}_d{axis}`), and the ranges export settles on
    become `graph.symbol_ranges`. Sizes the model computes from them (`seq - 1`, `batch*seq`, `(h + 1) // 2`)
    are expressions over those names; one the IR cannot express (`Max`, `sqrt`) is a ConversionError naming it.
    Outputs are the tensors of the model's output, flattened in order (a tuple, a dict, a ModelOutput).
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    declared: list[dict[int, str]] = []
    relaxed = False
    if isinstance(model, torch.export.ExportedProgram):
        if dynamic_shapes is not None:
            raise ValueError("dynamic_shapes is for exporting an nn.Module; an ExportedProgram has its shapes already")
        ep = model
    else:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"from_torch takes an nn.Module or an ExportedProgram, got {type(model).__name__}")
        if model.training:  # inference: dropout off, batch norm on running statistics
            try:
                model = model.eval()
            except NotImplementedError:  # a PT2E-converted GraphModule refuses .eval(): torchao switches it
                from torchao.quantization.pt2e import move_exported_model_to_eval  # type: ignore[import-untyped]

                model = move_exported_model_to_eval(model)
        args, kwargs = tuple(example_inputs), dict(example_kwargs or {})
        with torch.no_grad():
            ep, relaxed = _export(model, args, kwargs, dynamic_batch, dynamic_shapes)
        declared = _declared_dim_names(model, args, kwargs, dynamic_shapes)
    legacy_batch = dynamic_shapes is None  # an ExportedProgram's leading symbols, or dynamic_batch's: `batch`
    ep = ep.run_decompositions(_decomposition_table())
    graph = _convert_program(ep, _input_symbols(ep, declared, legacy_batch), input_names, output_names, name)
    if relaxed:  # exported unbounded: the ranges the caller declared are the model's
        ranges = _declared_ranges(dynamic_shapes)
        graph.symbol_ranges.update({s: r for s, r in ranges.items() if s in graph.symbol_ranges})
    return graph


def _convert_program(ep, symbols: _Symbols, input_names, output_names, name: str) -> Graph:
    graph = Graph(name)
    graph.symbol_ranges = _symbol_ranges(ep, symbols)
    ctx = TorchContext(graph, symbols)
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
    # the converted nodes whose results nothing reads: what only the bookkeeping nodes the frontend drops read
    # (`_assert_tensor_metadata`), or what the model computes and ignores (ESM's position ids from the padding mask,
    # unused under rotary embeddings). Kept, such a node runs on every call, and as an engine region of its own it
    # splits the model's work. Opaque nodes stay: nothing says what a framework op does besides its result.
    graph.erase_unread_nodes(keep=lambda node: node.opdef.opaque)
    if output_names:
        if len(output_names) != len(graph.outputs):
            raise ValueError(f"output_names has {len(output_names)} names for {len(graph.outputs)} outputs")
        for index, output_name in enumerate(output_names):
            graph.rename_output(index, output_name)
    return graph.verify()


class _SymbolicScalar:
    """What a node computing a symbolic bool or float (a shape guard's `s0 >= 3`) leaves: the bookkeeping nodes that
    read it (`_assert_scalar`, `sym_constrain_range`) are dropped; any other reader cannot be converted."""

    def __init__(self, node: torch.fx.Node) -> None:
        self.node = node


def _map_arg(arg, env, symbols: _Symbols):
    if isinstance(arg, torch.fx.Node):
        if arg not in env:
            raise ConversionError(f"FX node {arg.name} is used before it is converted")
        value = env[arg]
        if isinstance(value, _SymbolicScalar):
            raise ConversionError(
                f"FX node {arg.name} computes the symbolic {type(arg.meta.get('val')).__name__} "
                f"{arg.meta.get('val')}, which only shape guards may read; the IR has no value for it"
            )
        return value
    if isinstance(arg, torch.SymInt):
        return _dim(arg, symbols)
    if isinstance(arg, (list, tuple)):
        return type(arg)(_map_arg(a, env, symbols) for a in arg)
    return arg


def _convert_node(ctx: TorchContext, node: torch.fx.Node, env: dict, symbols: _Symbols) -> None:
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
        env[node] = _dim(val, symbols)  # size arithmetic (sym_size, sym_numel, mul of sizes): a compile-time Dim
        return
    if isinstance(val, (torch.SymBool, torch.SymFloat, bool)):
        env[node] = _SymbolicScalar(node)  # a guard's condition: its readers are dropped below
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


def _check_types(node: torch.fx.Node, result, symbols: _Symbols) -> None:
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


def _opaque(ctx: TorchContext, node: torch.fx.Node, env: dict, symbols: _Symbols):
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
