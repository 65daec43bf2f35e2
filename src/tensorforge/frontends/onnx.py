"""ONNX frontend: an `.onnx` file (or `ModelProto`) -> `ir.Graph`, for opset 11 and newer.

1. The model is loaded with its external data, graph inputs get their IR types (a symbolic leading
   dimension is the symbol `batch` with `dynamic_batch`, every other one a symbol named after its dim_param with
   `dynamic_shapes`; `input_shapes` fixes any), the model
   is validated as it will be imported (`onnx_validate.py`: onnx.checker and onnxruntime's further rules,
   every problem in one `OnnxImportError`), local functions are inlined and ONNX shape inference fills in
   the types of the values the model does not annotate (declared shapes are hints, as in onnxruntime).
2. The whole model is checked before anything is imported (`check_onnx_model`): every node whose op,
   opset version, attributes or dtypes have no mapping is collected, and all of them are reported at
   once (a warning, or an error with `strict=True`).
3. Each node is converted through the registry (`onnx_ops/`), keyed by (op type, since-version) as the
   model's opset resolves it. Initializers are constants; shape computations are evaluated at import
   (see `onnx_ops/context.py`), and so are `If` nodes whose condition they decide (`onnx_ops/control.py`). A
   node with no mapping, or one its converter declines, becomes an opaque node `onnx.<OpType>` that runs
   that node alone through onnxruntime (which must load it at import): nothing is dropped. Any other failure
   is an `OnnxImportError` naming the node.
4. Every converted value's IR type is checked against what ONNX shape inference says, so a converter
   bug fails here, naming the node, instead of computing wrong numbers later.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import onnx
import onnx.inliner
import onnx.version_converter
import torch

from ..ir import Graph, Sym, SymExpr, TensorType
from ..ir.ops.opaque import encode_output_type
from ..ir.types import dtype_name, monomial
from .onnx_dtypes import IR_DTYPES
from .onnx_opaque import encode_node, onnx_node_session, opaque_onnx_name, run_onnx_node
from .onnx_ops import registry as reg
from .onnx_ops.context import PROBE_PRIMES, SYMBOL, OnnxContext, Operand, solve_element
from .onnx_validate import OnnxImportError, topological_order, validate_model

__all__ = ["OnnxImportError", "UnsupportedNode", "check_onnx_model", "from_onnx", "load_model", "prepare_model"]

logger = logging.getLogger("tensorforge")

MIN_OPSET = 11
DATA_SAMPLES = 4  # random draws that must give the zero inputs' output sizes before an opaque node is typed


@contextlib.contextmanager
def _stage(where: str):
    """Any error but OnnxImportError raised inside becomes one that says where (a node, a field, a stage): an
    invalid model that got past the checks must still fail with a message naming what broke."""
    try:
        yield
    except OnnxImportError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OnnxImportError(
            f"{where}: {type(exc).__name__}: {detail}" if detail else f"{where}: {type(exc).__name__}"
        ) from exc


def _elem_name(elem: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return f"element type {elem} (unknown to onnx)"


@dataclass(frozen=True)
class UnsupportedNode:
    """One node the frontend cannot map: it runs through onnxruntime as an opaque node."""

    op_type: str
    domain: str
    version: int  # the op's since-version the model's opset selects (the opset itself for unknown ops)
    node: str
    reason: str

    def __str__(self) -> str:
        domain = f"{self.domain}." if self.domain else ""
        return f"{domain}{self.op_type}-{self.version} (node {self.node!r}): {self.reason}"


def format_unsupported(items: Sequence[UnsupportedNode]) -> str:
    """All unsupported nodes, grouped by op: one line per op, its reasons and the nodes it concerns."""
    groups: dict[tuple, list[UnsupportedNode]] = collections.defaultdict(list)
    for item in items:
        groups[(item.domain, item.op_type, item.version, item.reason)].append(item)
    lines = [f"{len(items)} ONNX node(s) have no IR mapping and run through onnxruntime:"]
    for (domain, op, version, reason), group in sorted(groups.items()):
        names = ", ".join(repr(g.node) for g in group[:5]) + (f" and {len(group) - 5} more" if len(group) > 5 else "")
        lines.append(f"  {domain + '.' if domain else ''}{op}-{version} x{len(group)}: {reason} (nodes {names})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Loading and preparing the model
# ---------------------------------------------------------------------------------------------


def load_model(path_or_model, base_dir: str | None = None) -> onnx.ModelProto:
    """A ModelProto with its external data loaded (from the model's folder, or `base_dir`)."""
    if not isinstance(path_or_model, onnx.ModelProto) and not isinstance(path_or_model, (bytes, bytearray)):
        path = os.fspath(path_or_model)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no ONNX model at {path!r}")
    with _stage("cannot read the ONNX model (a ModelProto, its external data)"):
        return _load_model(path_or_model, base_dir)


def _load_model(path_or_model, base_dir: str | None) -> onnx.ModelProto:
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        if base_dir is not None:
            onnx.external_data_helper.load_external_data_for_model(model, base_dir)
        return model
    if isinstance(path_or_model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(path_or_model))
    path = os.fspath(path_or_model)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no ONNX model at {path!r}")
    model = onnx.load(path, load_external_data=base_dir is None)
    if base_dir is not None:
        onnx.external_data_helper.load_external_data_for_model(model, base_dir)
    return model


def model_opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {reg.canonical_domain(o.domain): o.version for o in model.opset_import}


def _upgraded(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at opset MIN_OPSET or newer: an older one (model zoos still ship opset 7-9 files) is converted with
    onnx's own version converter, which rewrites each node by the ops' published version changes; where it has no
    adapter the import is refused, naming what failed."""
    opset = model_opsets(model).get("")
    if opset is None or opset >= MIN_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, MIN_OPSET)
        validate_model(upgraded)
    except Exception as exc:
        raise OnnxImportError(
            f"the model uses ONNX opset {opset}; tensorforge imports opset {MIN_OPSET} and newer, "
            f"and onnx.version_converter could not convert it ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
        ) from exc
    logger.info("converted the model from ONNX opset %d to %d (onnx.version_converter)", opset, MIN_OPSET)
    return upgraded


def _dims(type_proto) -> tuple | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or None)
        for d in type_proto.tensor_type.shape.dim
    )


def _set_dims(type_proto, dims: Sequence) -> None:
    shape = type_proto.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, SymExpr):
            symbol, scale = monomial(d, "an ONNX shape annotation")
            dim.dim_param = symbol if scale == 1 else f"{scale}*{symbol}"
        else:
            dim.dim_value = int(d)


def _identifier(text: str) -> str:
    """A dim_param as a symbol name: characters outside [A-Za-z0-9_] become `_`, a leading digit gets a `_`."""
    name = re.sub(r"\W", "_", text) or "_"
    return f"_{name}" if name[0].isdigit() else name


class _SymbolNames:
    """IR symbol names for an ONNX model's dynamic input dimensions: a dim_param's own name (sanitised to an
        identifier), `batch` for the leading one under dynamic_batch, `{input}_d{axis}` for an unnamed one (or one named
    only by punctuation, like "?"); two different
        dim_params that sanitise alike are told apart by a suffix (`_2`, ...)."""

    def __init__(self) -> None:
        self.by_key: dict[tuple, str] = {}

    def name(self, key: tuple, wanted: str) -> SymExpr:
        if key not in self.by_key:
            base = _identifier(wanted)
            taken = set(self.by_key.values())
            name, k = base, 1
            while name in taken:
                k += 1
                name = f"{base}_{k}"
            self.by_key[key] = name
        return SymExpr.symbol(self.by_key[key])


def _input_types(
    model, dynamic_batch: bool, input_shapes: Mapping[str, Sequence[int | SymExpr]], dynamic_shapes: bool = False
) -> dict[str, TensorType]:
    """IR types of the graph inputs (initializers excluded); every dimension problem reported at once."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    unknown = sorted(set(input_shapes) - {v.name for v in inputs})
    if unknown:
        raise OnnxImportError(
            f"input_shapes names {unknown}, which are not graph inputs ({', '.join(v.name for v in inputs)})"
        )
    batch_names = {dims[0] for v in inputs if (dims := _dims(v.type)) and isinstance(dims[0], str)}
    names = _SymbolNames()
    if dynamic_batch:
        names.by_key[("batch",)] = SYMBOL

    def symbol(name: str, axis: int, param: str | None) -> SymExpr | None:
        """The symbol of a dynamic dimension, or None where it needs a size from input_shapes."""
        if dynamic_batch and (axis == 0 or param in batch_names):
            return names.name(("batch",), SYMBOL)
        if not dynamic_shapes:
            return None
        if param and re.search(r"[A-Za-z0-9]", param):
            return names.name(("param", param), param)
        # unnamed, or a placeholder such as "?" (exporters write it for "unknown", not for "equal to each other")
        return names.name(("axis", name, axis), f"{name}_d{axis}")

    types, problems = {}, []
    for v in inputs:
        elem = v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else None
        if elem not in IR_DTYPES:
            kind = _elem_name(elem) if elem is not None else v.type.WhichOneof("value")
            problems.append(f"input {v.name!r} is {kind}, which the IR cannot hold")
            continue
        dims = _dims(v.type)
        if v.name in input_shapes:
            declared = dims or ()
            pinned: list[int | SymExpr] = []
            for i, d in enumerate(input_shapes[v.name]):
                if isinstance(d, SymExpr):  # a size the caller states as an expression: 32*h, a multiple of 32
                    pinned.append(d)
                    continue
                param = declared[i] if i < len(declared) and isinstance(declared[i], str) else None
                sym = symbol(v.name, i, param) if d == -1 and (i == 0 or dynamic_shapes) else None
                pinned.append(sym if sym is not None else d)
            out = tuple(pinned)
        elif dims is None:
            problems.append(f"input {v.name!r} has no shape; give one with input_shapes")
            continue
        else:
            sizes: list[int | SymExpr] = []
            for axis, d in enumerate(dims):
                if isinstance(d, int):  # a dim_value, 0 included: ONNX has empty tensors (a reduction over none)
                    sizes.append(d)
                    continue
                sym = symbol(v.name, axis, d if isinstance(d, str) else None)
                if sym is not None:
                    sizes.append(sym)
                else:
                    what = repr(d) if d else "unknown"
                    hint = "" if dynamic_batch or axis else " (dynamic_batch=False)"
                    problems.append(f"input {v.name!r} axis {axis} is symbolic ({what}){hint}")
            out = tuple(sizes)
        if any(isinstance(d, int) and d < 0 for d in out):
            problems.append(f"input {v.name!r}: negative size in {out}")
            continue
        types[v.name] = TensorType(IR_DTYPES[elem], out)
    if problems:
        hint = (
            "\nFix sizes with input_shapes={name: (sizes...)} (-1 at axis 0 keeps the batch dynamic), or keep "
            "every symbolic dimension as a symbol with dynamic_shapes=True"
            if any("symbolic" in p or "no shape" in p for p in problems)
            else ""
        )
        raise OnnxImportError("cannot type the model's inputs:\n  " + "\n  ".join(problems) + hint)
    return types


def input_symbols(types: Mapping[str, TensorType]) -> frozenset[str]:
    return frozenset(s for t in types.values() for s in t.symbols)


def prepare_model(
    model: onnx.ModelProto,
    dynamic_batch: bool = True,
    input_shapes: Mapping[str, Sequence[int | SymExpr]] | None = None,
    dynamic_shapes: bool = True,
):
    """Typed inputs, the validity check (`onnx_validate`), the opset check, inlined functions, shape inference:
    (model, input IR types)."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    with _stage("typing the model's inputs"):
        types = _input_types(model, dynamic_batch, dict(input_shapes or {}), dynamic_shapes)
    for v in model.graph.input:
        if v.name in types:
            _set_dims(v.type, types[v.name].shape)
    validate_model(model)  # as it will be imported: the input sizes given are part of it
    with _stage(f"converting the model to opset {MIN_OPSET}"):
        model = _upgraded(model)
    if model.functions:
        with _stage("inlining the model's local functions"):
            model = onnx.inliner.inline_local_functions(model)
    # declared output and intermediate shapes are hints (onnxruntime only warns when they are wrong) and may name
    # the old batch parameters: inference decides, and a declared shape stays only where it finds none
    declared = {}
    for v in list(model.graph.output) + list(model.graph.value_info):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            dims = _dims(v.type)
            if dims is not None and not any(isinstance(d, str) or d is None for d in dims):
                declared[v.name] = v.type.tensor_type.shape
            v.type.tensor_type.ClearField("shape")
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001  (> 2 GiB protos, an op inference cannot handle: the IR infers types anyway)
        logger.warning(
            "ONNX shape inference failed (%s); importing with the IR's own type inference", str(exc).splitlines()[0]
        )
    for v in list(model.graph.output) + list(model.graph.value_info):
        if v.name in declared and v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape"):
            v.type.tensor_type.shape.CopyFrom(declared[v.name])
    return model, types


def _subgraphs(node) -> list:
    """The graphs a node's attributes hold (If's branches, Loop's and Scan's bodies)."""
    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def _all_graphs(graph) -> list:
    """A graph and every subgraph in it, at any depth (ONNX names are unique across all of them)."""
    out = [graph]
    for node in graph.node:
        for sub in _subgraphs(node):
            out.extend(_all_graphs(sub))
    return out


def _value_types(model) -> dict[str, tuple]:
    """name -> (ONNX element type, dims or None) for every value shape inference or the model typed, in the
    main graph and in subgraphs."""
    out = {}
    for graph in reversed(_all_graphs(model.graph)):  # the main graph's entries win
        for v in list(graph.input) + list(graph.value_info) + list(graph.output):
            if v.type.HasField("tensor_type"):
                out[v.name] = (v.type.tensor_type.elem_type, _dims(v.type))
        for t in graph.initializer:
            out[t.name] = (t.data_type, tuple(t.dims))
    return out


def _ir_type(entry, symbols: frozenset[str]) -> TensorType | None:
    """A full IR type from an ONNX (element type, dims) entry, or None when anything is unknown (a dim_param that is
    none of the input symbols, nor `k*symbol`)."""
    if entry is None:
        return None
    elem, dims = entry
    if elem not in IR_DTYPES or dims is None:
        return None
    shape: list[int | SymExpr] = []
    for d in dims:
        if isinstance(d, int):
            shape.append(d)
        elif d in symbols:
            shape.append(Sym(d))
        elif isinstance(d, str) and d.count("*") == 1 and d.split("*")[0].isdigit() and d.split("*")[1] in symbols:
            scale, symbol = d.split("*")
            shape.append(Sym(symbol, int(scale)))
        else:
            return None
    return TensorType(IR_DTYPES[elem], tuple(shape))


def _topological(nodes) -> list[int]:
    """Node indices in an order where every input is produced first (the ONNX spec asks for it; not all files
    obey); the file's order where it already is one."""
    order = topological_order(nodes, reads=lambda n: set(n.input) | _captured_names(n))
    if len(order) != len(nodes):
        raise OnnxImportError("the ONNX graph has a cycle")
    return order


def _captured_names(node) -> set[str]:
    """Outer-scope values the subgraph attributes (If/Loop/Scan bodies) of `node` refer to."""
    names: set[str] = set()
    for sub in _subgraphs(node):
        names |= _graph_captures(sub)
    return names


def _graph_captures(graph) -> set[str]:
    """Values a graph (at any depth) reads but does not define: those of the scopes around it."""
    names: set[str] = set()

    def walk(graph, defined: set[str]):
        defined = defined | {v.name for v in graph.input} | {t.name for t in graph.initializer}
        defined |= {o for n in graph.node for o in n.output}  # a subgraph's nodes need not be sorted either
        for n in graph.node:
            for sub in _subgraphs(n):
                walk(sub, defined)
            names.update(x for x in n.input if x and x not in defined)
        names.update(o.name for o in graph.output if o.name not in defined)

    walk(graph, set())
    return names


# ---------------------------------------------------------------------------------------------
# The whole-model check
# ---------------------------------------------------------------------------------------------


def _used_outputs(model) -> dict[str, bool]:
    """Every value some node (in any graph) reads, or some graph returns."""
    used: dict[str, bool] = {}
    for graph in _all_graphs(model.graph):
        used.update((o.name, True) for o in graph.output)
        for n in graph.node:
            used.update((name, True) for name in n.input if name)
    return used


def _node_name(node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _static_operand(
    name: str, value_types: dict, constants: dict[str, torch.Tensor], symbols: frozenset[str]
) -> Operand:
    if name in constants:
        return Operand.known(name, [constants[name]])
    return Operand(name, _ir_type(value_types.get(name), symbols))


def _initializer(t, where: str = "") -> Operand:
    if t.data_type not in IR_DTYPES:
        raise OnnxImportError(
            f"initializer {t.name!r}{where} has ONNX element type {_elem_name(t.data_type)}, which the IR cannot hold"
        )
    with _stage(f"initializer {t.name!r}{where} cannot be read"):
        return Operand.known(t.name, [reg.tensor_from_proto(t)])


def _without_inferred_types(node):
    """The node with the value_info shape inference added to its subgraphs removed: those sizes are the import's,
    and onnxruntime would check every later run against them."""
    if not _subgraphs(node):
        return node
    out = onnx.NodeProto()
    out.CopyFrom(node)
    for sub in _subgraphs(out):
        for graph in _all_graphs(sub):
            graph.ClearField("value_info")
    return out


def _check_node(
    node,
    index: int,
    opsets: dict[str, int],
    value_types: dict,
    constants: dict,
    used: dict[str, bool],
    symbols: frozenset[str],
) -> UnsupportedNode | None:
    domain = reg.canonical_domain(node.domain)
    opset = opsets.get(domain)
    name = _node_name(node, index)
    if opset is None:
        return UnsupportedNode(node.op_type, domain, 0, name, f"the model imports no opset for domain {domain!r}")
    since, schema, converter = reg.resolve(node.op_type, domain, opset)
    unsupported = lambda reason: UnsupportedNode(node.op_type, domain, since, name, reason)  # noqa: E731
    if converter is None:
        if schema is None:
            return unsupported("custom op: onnx has no schema for it and no converter is registered")
        versions = reg.mapped_versions(node.op_type, domain)
        hint = f" (mapped versions: {', '.join(map(str, versions))})" if versions else ""
        return unsupported(f"no converter for {node.op_type}-{since}{hint}")
    for value in list(node.input) + list(node.output):
        entry = value_types.get(value) if value else None
        if entry is not None and entry[0] not in IR_DTYPES and entry[0] != 0:
            return unsupported(f"{value!r} has ONNX element type {_elem_name(entry[0])}, which the IR cannot hold")
    try:
        operands = [_static_operand(x, value_types, constants, symbols) if x else None for x in node.input]
        kwargs = reg.call_kwargs(schema, node, operands, converter)
    except reg.Unsupported as exc:
        return unsupported(str(exc))
    if converter.check is None:
        return None
    reason = converter.check(**kwargs, used_outputs=tuple(bool(o) and used.get(o, False) for o in node.output))
    return unsupported(reason) if reason else None


def _static_constants(graph) -> dict[str, torch.Tensor]:
    """Initializers and Constant outputs, as far as the check needs their values."""
    out = {}
    for t in graph.initializer:
        if t.data_type in IR_DTYPES:
            with contextlib.suppress(Exception):  # one that does not decode: the import names it
                out[t.name] = reg.tensor_from_proto(t)
    for n in graph.node:
        if n.op_type == "Constant" and reg.canonical_domain(n.domain) == "" and len(n.attribute) == 1:
            attr = n.attribute[0]
            if attr.name == "value" and attr.t.data_type in IR_DTYPES:
                out[n.output[0]] = reg.tensor_from_proto(attr.t)
    return out


def _check_prepared(model, symbols: frozenset[str]) -> dict[int, UnsupportedNode]:
    """Unsupported nodes by their index in the model (node names need not be unique)."""
    opsets, value_types = model_opsets(model), _value_types(model)
    constants, used = _static_constants(model.graph), _used_outputs(model)
    found = {}
    for i, n in enumerate(model.graph.node):
        with _stage(f"checking node {_node_name(n, i)!r} ({n.op_type})"):
            found[i] = _check_node(n, i, opsets, value_types, constants, used, symbols)
    return {i: f for i, f in found.items() if f is not None}


def check_onnx_model(
    path_or_model,
    *,
    dynamic_batch: bool = True,
    input_shapes: Mapping[str, Sequence[int | SymExpr]] | None = None,
    base_dir: str | None = None,
    dynamic_shapes: bool = True,
) -> list[UnsupportedNode]:
    """Every node `from_onnx` would leave to onnxruntime, with the reason, found before importing anything."""
    model, types = prepare_model(load_model(path_or_model, base_dir), dynamic_batch, input_shapes, dynamic_shapes)
    return list(_check_prepared(model, input_symbols(types)).values())


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


def from_onnx(
    path_or_model,
    dynamic_batch: bool = True,
    *,
    input_shapes: Mapping[str, Sequence[int | SymExpr]] | None = None,
    strict: bool = False,
    base_dir: str | None = None,
    name: str | None = None,
    dynamic_shapes: bool = True,
) -> Graph:
    """Import an ONNX model (a path, bytes or a `ModelProto`; opset >= 11) as an `ir.Graph`.

    dynamic_batch: a symbolic leading input dimension becomes the symbol `batch`. dynamic_shapes (default): every
    other symbolic input dimension stays a symbol too, named after its dim_param (sanitised to an identifier; an
    unnamed one is `{input}_d{axis}`); with dynamic_shapes=False they need sizes from
    `input_shapes`. `input_shapes` pins any dimension either way (-1 keeps one symbolic), or states it as a size
    expression: `{"x": (-1, 3, 32*h, 32*w)}` with `h = ir.SymExpr.symbol("h")` says the model runs only at sides that
    are multiples of 32 (a detector whose feature pyramid adds maps of 1/4 and 1/8 the side), which no ONNX file can.
    Shape computations on those sizes (Shape -> Gather -> Concat -> Reshape, Slice, ConstantOfShape, Range, Expand) are
    evaluated as size expressions at import. Nodes without a mapping become opaque `onnx.<OpType>` nodes run by
    onnxruntime; they are all logged at once as a warning, or raised as `OnnxImportError` with `strict=True`.
    `check_onnx_model` gives the same list without importing.
    """
    model, input_types = prepare_model(load_model(path_or_model, base_dir), dynamic_batch, input_shapes, dynamic_shapes)
    found = _check_prepared(model, input_symbols(input_types))
    if found:
        if strict:
            raise OnnxImportError(format_unsupported(list(found.values())))
        logger.warning("%s", format_unsupported(list(found.values())))
    importer = _Importer(model, input_types, {i: u.reason for i, u in found.items()}, name)
    graph = importer.run()
    if importer.declined:  # reasons only conversion could find (a shape computed from data, ...)
        logger.warning(
            "converters declined %d more node(s) during import:\n%s",
            len(importer.declined),
            format_unsupported(importer.declined),
        )
    return graph


class _EncodedNode(TypedDict):
    """An ONNX node as an opaque IR node records it: what onnxruntime needs to run it alone."""

    node: str
    opset_imports: tuple[tuple[str, int], ...]
    ir_version: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


class _Importer:
    def __init__(self, model, input_types: dict[str, TensorType], reasons: dict[int, str], name: str | None):
        self.model = model
        self.graph = Graph(name or model.graph.name or "main")
        self.ctx = OnnxContext(self.graph, sorted(input_symbols(input_types)))
        self.input_types = input_types
        self.reasons = reasons
        self.opsets = model_opsets(model)
        self.value_types = _value_types(model)
        self.used = _used_outputs(model)
        self.env: dict[str, Operand] = {}
        self.declined: list[UnsupportedNode] = []
        self.ctx.subgraph_importer = self._import_subgraph

    def _scratch(self, captured: set[str]) -> _Importer:
        """An importer of the same model into a throwaway graph, whose inputs are the run-time values in `captured`
        (known ones keep their values): where a subgraph is imported only to learn its output types."""
        child = _Importer(self.model, {}, {}, "scratch")
        child.opsets, child.value_types, child.used = self.opsets, self.value_types, self.used
        child.ctx.symbols = self.ctx.symbols  # probes bind the same symbols alike
        for name in sorted(captured):
            outer = self.env.get(name)
            if outer is None:
                raise OnnxImportError(f"a subgraph refers to {name!r}, which nothing produces")
            if outer.is_known:  # a copy: materializing it in the scratch graph must not touch the real operand
                child.env[name] = Operand(outer.name, outer.type, probes=outer.probes, sizes=outer.sizes)
            else:
                value = child.graph.add_input(name, outer.known_type)
                child.env[name] = Operand(name, outer.type, value=value)
        return child

    def _import_subgraph(self, graph) -> list[Operand]:
        """Import a subgraph's nodes (If's taken branch) into this graph; the operands of its outputs."""
        if len(graph.input):
            raise reg.Unsupported(f"subgraph {graph.name!r} takes inputs (a loop body)")
        for t in graph.initializer:
            self.env[t.name] = _initializer(t, f" of subgraph {graph.name!r}")
        nodes = list(graph.node)
        constants = _static_constants(graph)
        constants.update({k: v.const for k, v in self.env.items() if v.const is not None and k not in constants})
        for i in _topological(nodes):
            name = _node_name(nodes[i], i)
            with _stage(f"node {name!r} ({nodes[i].op_type}) of subgraph {graph.name!r}"):
                found = _check_node(
                    nodes[i], i, self.opsets, self.value_types, constants, self.used, frozenset(self.ctx.symbols)
                )
                if found is not None:
                    self.declined.append(
                        UnsupportedNode(found.op_type, found.domain, found.version, name, found.reason)
                    )
                self._import_node(nodes[i], name, found.reason if found else None)
        missing = [o.name for o in graph.output if o.name not in self.env]
        if missing:
            raise OnnxImportError(f"subgraph {graph.name!r} returns {missing}, which nothing produces")
        return [self.env[o.name] for o in graph.output]

    def run(self) -> Graph:
        graph = self.graph
        for v in self.model.graph.input:
            if v.name in self.input_types:
                value = graph.add_input(v.name, self.input_types[v.name])
                self.env[v.name] = Operand(v.name, value.type, value=value)
        for t in self.model.graph.initializer:  # initializers win over graph inputs of the same name
            self.env[t.name] = _initializer(t)
        nodes = list(self.model.graph.node)
        for i in _topological(nodes):
            with _stage(f"node {_node_name(nodes[i], i)!r} ({nodes[i].op_type})"):
                self._import_node(nodes[i], _node_name(nodes[i], i), self.reasons.get(i))
        outputs = []
        for out in self.model.graph.output:
            if out.name not in self.env:
                raise OnnxImportError(f"graph output {out.name!r} is not computed by any node")
            outputs.append(self.ctx.materialize(self.env[out.name]))
        graph.set_outputs(outputs)
        for index, out in enumerate(self.model.graph.output):
            graph.rename_output(index, out.name)
        # a converter that reads how an input was computed (ScatterND's indices of a slice assignment become slice
        # attributes) leaves that computation unread, and so can the model itself: nothing needs it, and left in
        # the graph it would run, in PyTorch or in a region of its own
        graph.erase_unread_nodes()
        return graph.verify()

    def _import_node(self, node, name: str, reason: str | None) -> None:
        operands = []
        for x in node.input:
            if x and x not in self.env:
                raise OnnxImportError(f"node {name!r} ({node.op_type}) reads {x!r}, which nothing produces")
            operands.append(self.env[x] if x else None)
        used = [bool(o) and self.used.get(o, False) for o in node.output]
        results = None
        if reason is None:
            state = self.ctx.checkpoint()
            try:
                results = self._convert(node, name, operands, used)
            except reg.Unsupported as exc:
                self.ctx.rollback(state)
                reason = str(exc)
                domain = reg.canonical_domain(node.domain)
                since = reg.resolve(node.op_type, domain, self.opsets.get(domain, 0))[0]
                self.declined.append(UnsupportedNode(node.op_type, domain, since, name, reason))
        converted = results is not None
        if results is None:
            assert reason is not None  # conversion was not tried, or the converter declined with a reason
            results = self._opaque(node, name, operands, reason)
        for out_name, operand in zip(node.output, results):
            if out_name and operand is not None:
                self._check_type(node, name, out_name, operand, converted)
                self.env[out_name] = operand

    def _convert(self, node, name: str, operands: list, used: list[bool]) -> list:
        domain = reg.canonical_domain(node.domain)
        since, schema, converter = reg.resolve(node.op_type, domain, self.opsets[domain])
        kwargs = reg.call_kwargs(schema, node, operands, converter)
        ctx = self.ctx
        ctx.node_name, ctx.outputs_used, ctx.since = name, used, since
        result = converter.fn(ctx, **kwargs)
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        results += [None] * (len(node.output) - len(results))
        for i, (out_name, operand) in enumerate(zip(node.output, results)):
            if operand is None and used[i]:
                raise reg.Unsupported(f"output {i} ({out_name!r}) is used but the converter does not produce it")
        return results

    def _check_type(self, node, name: str, out_name: str, operand: Operand, converted: bool) -> None:
        entry = self.value_types.get(out_name)
        if entry is None or operand.type is None:
            return
        elem, dims = entry
        ours = operand.type
        problem = elem in IR_DTYPES and IR_DTYPES[elem] != ours.dtype
        if dims is not None and not problem:
            problem = len(dims) != ours.rank or any(isinstance(t, int) and t != o for t, o in zip(dims, ours.shape))
        if problem:
            theirs = f"{IR_DTYPES.get(elem, elem)}{list(dims) if dims is not None else '[?]'}"
            if converted:
                raise OnnxImportError(
                    f"node {name!r} ({node.op_type}): converted output {out_name!r} is {ours}, "
                    f"ONNX shape inference says {theirs} — a converter bug; please report it"
                )
            raise OnnxImportError(
                f"node {name!r} ({node.op_type}) runs through onnxruntime: its output {out_name!r} "
                f"is {ours} there, ONNX shape inference says {theirs} — the two disagree on this "
                f"node; please report it"
            )

    # -- opaque nodes ---------------------------------------------------------------------------

    def _opaque(self, node, name: str, operands: list, reason: str) -> list:
        """Run the node through onnxruntime: now, if every input is known, else as an opaque IR node."""
        input_names = list(dict.fromkeys(x for x in node.input if x)) + sorted(_captured_names(node) - set(node.input))
        missing = [x for x in input_names if x not in self.env]
        if missing:
            raise OnnxImportError(f"node {name!r} ({node.op_type}) refers to {missing}, which nothing produces")
        inputs = [self.env[x] for x in input_names]
        output_names = [o for o in node.output if o]
        encoded = _EncodedNode(
            node=encode_node(_without_inferred_types(node)),
            opset_imports=tuple((o.domain, o.version) for o in self.model.opset_import),
            ir_version=int(self.model.ir_version),
            input_names=tuple(input_names),
            output_names=tuple(output_names),
        )
        entries = [self.value_types.get(o) for o in output_names]
        for out_name, entry in zip(output_names, entries):
            if entry is not None and entry[0] and entry[0] not in IR_DTYPES:
                raise OnnxImportError(
                    f"node {name!r} ({node.op_type}: {reason}) outputs {out_name!r} of ONNX type "
                    f"{_elem_name(entry[0])}, which the IR cannot hold"
                )
        dtypes = [IR_DTYPES.get(e[0]) if e else None for e in entries]  # None: onnxruntime will say
        if all(x.is_known for x in inputs):
            folded = self._fold_through_onnxruntime(inputs, encoded, dtypes)
            if folded is not None:
                return self._spread(node, output_names, folded)
        symbols = frozenset(self.ctx.symbols)
        declared = [t for t in (_ir_type(e, symbols) for e in entries) if t is not None]
        if len(declared) == len(entries):
            types = declared
        elif node.op_type == "If" and not reg.canonical_domain(node.domain):
            types = self._branch_types(node, name)
        else:
            self._refuse_runtime_trip_count(name, node)
            types = self._probe_types(name, node, inputs, encoded, dtypes, reason)
        with _stage(f"node {name!r} ({node.op_type}) runs through onnxruntime, which cannot load it"):
            onnx_node_session(
                **encoded,
                input_specs=[(x.dtype, x.rank) for x in inputs],
                output_dtypes=[t.dtype for t in types],
            )
        values = [self.ctx.materialize(x) for x in inputs]
        attrs = dict(encoded, output_types=tuple(encode_output_type(t) for t in types), reason=reason)
        ir_node = self.graph.add_node(
            opaque_onnx_name(node.op_type, node.domain), values, attrs, name=name, output_types=types
        )
        return self._spread(node, output_names, [Operand(v.name, v.type, value=v) for v in ir_node.outputs])

    def _branch_types(self, node, name: str) -> list[TensorType]:
        """An If's output types from its branches, where shape inference left them open: each branch is imported
        into a scratch graph (shape tests inside it fold there as they would here), and they must agree. A branch
        that cannot be typed at these input sizes (silero-vad's 8 kHz branch given a 16 kHz chunk) would fail in
        onnxruntime too, were it taken: the other branch types the node, and a warning says so."""
        found, failed = {}, {}
        for attr in node.attribute:
            if attr.name in ("then_branch", "else_branch"):
                scratch = self._scratch(_graph_captures(attr.g))
                try:
                    types = [o.known_type for o in scratch._import_subgraph(attr.g)]
                except (OnnxImportError, reg.Unsupported) as exc:
                    failed[attr.name] = str(exc)
                    continue
                if len(types) != len(node.output):
                    raise OnnxImportError(
                        f"node {name!r} (If): its {attr.name} returns {len(types)} values, the "
                        f"node has {len(node.output)} outputs"
                    )
                found[attr.name] = types
        if not found:
            raise OnnxImportError(
                f"node {name!r} (If): its condition is computed at run time and neither branch can "
                f"be typed at these input sizes: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
            )
        if len(found) == 2 and found["then_branch"] != found["else_branch"]:
            diff = "; ".join(
                f"output {i}: then {a}, else {b}"
                for i, (a, b) in enumerate(zip(found["then_branch"], found["else_branch"]))
                if a != b
            )
            raise OnnxImportError(
                f"node {name!r} (If): its branches give different output types ({diff}); the IR "
                f"needs one type per output"
            )
        for branch, reason in failed.items():
            logger.warning(
                "node %r (If): its %s cannot run at these input sizes, so onnxruntime will fail if the "
                "condition selects it; the outputs are typed from the other branch. (%s)",
                name,
                branch,
                reason,
            )
        return [t for t, o in zip(next(iter(found.values())), node.output) if o]

    @staticmethod
    def _spread(node, output_names, operands) -> list:
        by_name = dict(zip(output_names, operands))
        return [by_name.get(o) if o else None for o in node.output]

    def _run(self, tensors, encoded, dtypes):
        return run_onnx_node(tensors, output_dtypes=dtypes, **encoded)

    def _fold_through_onnxruntime(self, inputs, encoded, dtypes) -> list[Operand] | None:
        count = max(len(x.probes) for x in inputs) if inputs else 1
        try:
            runs = [
                self._run([x.probes[i] if len(x.probes) > 1 else x.probes[0] for x in inputs], encoded, dtypes)
                for i in range(count)
            ]
        except Exception as exc:  # noqa: BLE001  (left to run time, where the error reaches the user)
            logger.debug("onnxruntime could not fold %s: %s", encoded["output_names"], exc)
            return None
        outs = []
        for j in range(len(runs[0])):
            probes = [r[j] for r in runs]
            if any(p.shape != probes[0].shape for p in probes):
                return None
            outs.append(Operand.known(encoded["output_names"][j], probes))
        return outs

    def _refuse_runtime_trip_count(self, name, node) -> None:
        """A Loop's scan outputs are as long as it runs. When its trip count or condition is computed at run time,
        that length is data; probing cannot see it (integer and bool inputs are probed as zeros: the loop would
        run zero times in every probe), so such a Loop is refused here, by what it is."""
        if node.op_type != "Loop" or len(node.output) <= len(node.input) - 2:
            return  # not a Loop, or one with no scan outputs: its outputs are shaped like its loop-carried values
        control = [x for x in node.input[:2] if x]
        if not all(self.env[x].is_known for x in control):
            raise OnnxImportError(
                f"node {name!r} (Loop): its scan outputs are as long as the loop runs, and its trip "
                f"count or condition is computed at run time: the IR cannot express that size"
            )

    def _probe_types(self, name, node, inputs, encoded, dtypes, reason) -> list[TensorType]:
        """Output types shape inference left open: run the node at the probe batch sizes and solve each size.

        Run-time inputs are zeros, and at the first probe also DATA_SAMPLES random float draws (seeded, so an
        import always decides alike): an output whose size changes with the data (NonZero, Unique, ...) has no IR
        type, and is refused rather than typed from one sample."""
        shapes, probed_dtypes = [], []
        draws = torch.Generator().manual_seed(0)

        def sample(x, i: int, random: bool):
            if x.is_known:
                return x.probes[min(i, len(x.probes) - 1)]
            t = torch.zeros(x.type.concrete_shape(self.ctx.probe_env(i)), dtype=x.type.torch_dtype)
            if random and t.is_floating_point():
                t = (torch.rand(t.shape, generator=draws) + 0.5).to(t.dtype)  # in [0.5, 1.5): no zeros, no signs
            return t

        try:
            for i in range(len(PROBE_PRIMES)):
                outs = self._run([sample(x, i, False) for x in inputs], encoded, dtypes)
                shapes.append([tuple(t.shape) for t in outs])
                probed_dtypes = [dtype_name(t.dtype) for t in outs]
                drawn = (self._run([sample(x, i, True) for x in inputs], encoded, dtypes) for _ in range(DATA_SAMPLES))
                if i == 0 and any([tuple(t.shape) for t in other] != shapes[0] for other in drawn):
                    raise OnnxImportError(
                        f"node {name!r} ({node.op_type}): its output sizes depend on the data, "
                        f"which the IR cannot express"
                    )
        except OnnxImportError:
            raise
        except Exception as exc:
            raise OnnxImportError(
                f"node {name!r} ({node.op_type}) has no mapping ({reason}) and onnxruntime cannot "
                f"run it to find its output types: {str(exc).splitlines()[0]}"
            ) from exc
        types = []
        for j, (dtype, *probed) in enumerate(zip(dtypes, *shapes)):
            dtype = dtype or probed_dtypes[j]
            if len({len(s) for s in probed}) != 1:
                raise OnnxImportError(f"node {name!r} ({node.op_type}): its output rank depends on the input sizes")
            dims: list[int | SymExpr] = []
            for axis, sizes in enumerate(zip(*probed)):
                solved = solve_element(list(sizes), self.ctx.symbols)
                if not isinstance(solved, int | SymExpr):  # None; a size is never a float
                    at = "; ".join(f"{v} at {self.ctx.probe_env(i)}" for i, v in enumerate(sizes))
                    raise OnnxImportError(
                        f"node {name!r} ({node.op_type}): its output sizes depend on the data or on the input "
                        f"sizes in a way the IR cannot express: output {j} axis {axis} is {at} ({probed})"
                    )
                dims.append(solved)
            types.append(TensorType(dtype, tuple(dims)))
        return types
