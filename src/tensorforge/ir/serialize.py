"""Graphs on disk: structure as JSON, constants as safetensors, in one file. No pickle anywhere.

`save(graph, path)` writes a safetensors file whose metadata holds the graph's JSON; `load(path)` gives
back an identical graph (same names, attributes, types and constant bits). `graph_to_json` and
`graph_from_json` are the same encoding without the file, for embedding graphs in larger formats.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .graph import Graph, Node, Value
from .symbolic import SymbolicFormatError, SymExpr
from .types import AttrValue, Sym, TensorType, as_dim, monomial

FORMAT = "tensorforge.ir"
FORMAT_VERSION = 1
_META_KEY = "tensorforge.graph"
_Json = TypeVar("_Json")


class GraphFormatError(ValueError):
    pass


def _encode_attr(value: AttrValue) -> Any:
    """An attribute value as JSON: tuples become lists, a symbolic size `scale*symbol` the object
    {"__sym__": [symbol, scale]} (the form files had before any other expression existed, so they keep their
    bytes and digests), any other symbolic size {"__size__": <SymExpr.to_json()>}."""
    if isinstance(value, SymExpr):
        if value.is_constant:
            return value.constant
        if value.to_dim() is not None:
            return {"__sym__": list(monomial(value, "serialize"))}
        return {"__size__": value.to_json()}
    if isinstance(value, tuple):
        return [_encode_attr(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_attr(v) for k, v in value.items()}
    return value


# Attribute values nest a few levels (tuples of tuples, opaque ops' argument lists); a document nested deeper is not
# one graph_to_json wrote, and refusing it here keeps a hostile file from exhausting Python's stack.
MAX_ATTR_DEPTH = 32
MAX_SUBGRAPH_DEPTH = 8


def _decode_attr(value: Any, depth: int = 0) -> Any:
    """The attribute value a JSON value encodes (whether it suits its op, the op's normalization checks)."""
    if depth > MAX_ATTR_DEPTH:
        raise GraphFormatError(f"an attribute value is nested more than {MAX_ATTR_DEPTH} levels deep")
    if isinstance(value, list):
        return tuple(_decode_attr(v, depth + 1) for v in value)
    if isinstance(value, dict):
        if set(value) == {"__sym__"}:
            return Sym(*value["__sym__"])
        if set(value) == {"__size__"}:
            try:
                return as_dim(SymExpr.from_json(value["__size__"]))
            except (SymbolicFormatError, TypeError, ValueError) as exc:
                raise GraphFormatError(f"a symbolic size {_excerpt(value)} is malformed: {exc}") from None
        return {k: _decode_attr(v, depth + 1) for k, v in value.items()}
    return value


def encode_type(t: TensorType) -> dict[str, Any]:
    return {"dtype": t.dtype, "shape": [_encode_attr(d) for d in t.shape]}


def decode_type(d: Any) -> TensorType:
    if not isinstance(d, dict) or not isinstance(d.get("shape"), list):
        raise GraphFormatError(f"a tensor type is {{'dtype': ..., 'shape': [...]}}, got {_excerpt(d)}")
    return TensorType(d["dtype"], tuple(_decode_attr(x) for x in d["shape"]))


def _excerpt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expect(value: object, kind: type[_Json], what: str) -> _Json:
    """`value` when it has the JSON type `kind`, else GraphFormatError naming `what` (bool is no int here)."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise GraphFormatError(f"{what} must be a {'JSON ' + kind.__name__}, got {_excerpt(value)}")
    return value


def _names(value: object, what: str) -> list[str]:
    return [_expect(item, str, f"each of {what}") for item in _expect(value, list, what)]


def graph_to_json(graph: Graph) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The graph as a JSON-able dict plus the constant tensors it refers to by name."""
    subgraph_docs: dict[str, Any] = {}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": graph.name,
        "inputs": [{"name": v.name, "type": encode_type(v.type)} for v in graph.inputs],
        "constants": sorted(graph.constants),
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": [v.name for v in n.inputs],
                "outputs": [{"name": v.name, "type": encode_type(v.type)} for v in n.outputs],
                "attrs": {k: _encode_attr(v) for k, v in n.attrs.items()},
            }
            for n in graph.nodes
        ],
        "outputs": [v.name for v in graph.outputs],
        "subgraphs": subgraph_docs,
    }
    if graph.symbol_ranges:  # absent when empty: static and batch-only documents (and their digests) stay as they were
        doc["symbol_ranges"] = {name: [lo, hi] for name, (lo, hi) in sorted(graph.symbol_ranges.items())}
    tensors = {name: v.tensor for name, v in graph.constants.items()}
    for name, sub in graph.subgraphs.items():
        # a subgraph's constants are stored under "<subgraph>/<constant>" so names never collide
        subgraph_docs[name], sub_tensors = graph_to_json(sub)
        tensors.update({f"{name}/{key}": t for key, t in sub_tensors.items()})
    return doc, tensors


def graph_from_json(doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Graph:
    """The graph a `graph_to_json` document describes; GraphFormatError for anything else (a document from a file
    is data: every field is checked for its JSON type before it is used, and nesting is bounded)."""
    try:
        return _graph_from_json(doc, tensors, 0)
    except GraphFormatError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise GraphFormatError(f"malformed tensorforge graph document ({type(exc).__name__}: {exc})") from exc


def _graph_from_json(doc: dict[str, Any], tensors: dict[str, torch.Tensor], depth: int) -> Graph:
    _expect(doc, dict, "a graph document")
    if doc.get("format") != FORMAT:
        raise GraphFormatError(f"not a tensorforge graph (format {_excerpt(doc.get('format'))})")
    if doc.get("version") != FORMAT_VERSION:
        raise GraphFormatError(
            f"graph format version {_excerpt(doc.get('version'))} is not supported by this "
            f"tensorforge (it reads version {FORMAT_VERSION})"
        )
    graph = Graph(_expect(doc.get("name"), str, "the graph's name"))
    graph.symbol_ranges = _symbol_ranges(doc.get("symbol_ranges", {}), graph.name)
    subgraphs = _expect(doc.get("subgraphs", {}), dict, f"graph {graph.name!r}: subgraphs")
    if subgraphs and depth >= MAX_SUBGRAPH_DEPTH:
        raise GraphFormatError(f"graph {graph.name!r}: subgraphs nest more than {MAX_SUBGRAPH_DEPTH} levels deep")
    for name, sub_doc in subgraphs.items():
        prefix = f"{name}/"
        graph.subgraphs[name] = _graph_from_json(
            sub_doc, {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}, depth + 1
        )
    values: dict[str, Value] = {}
    for item in _expect(doc.get("inputs"), list, f"graph {graph.name!r}: inputs"):
        name = _expect(_expect(item, dict, "a graph input").get("name"), str, "a graph input's name")
        values[name] = graph.add_input(name, decode_type(item.get("type")))
    for name in _names(doc.get("constants"), f"graph {graph.name!r}: constants"):
        if name not in tensors:
            raise GraphFormatError(f"constant {name!r} is missing from the tensor data")
        values[name] = graph.add_constant(tensors[name], name, exact=True)
    for item in _expect(doc.get("nodes"), list, f"graph {graph.name!r}: nodes"):
        node = _node_from_json(item, values, graph)
        values.update((v.name, v) for v in node.outputs)
    try:
        graph.set_outputs([values[name] for name in _names(doc.get("outputs"), f"graph {graph.name!r}: outputs")])
    except KeyError as exc:
        raise GraphFormatError(f"graph output {exc.args[0]!r} is not defined") from None
    return graph


def _symbol_ranges(value: object, graph_name: str) -> dict[str, tuple[int, int | None]]:
    """A document's {symbol: [min, max]} (max null where unbounded): identifiers, ints, 0 <= min <= max."""
    where = f"graph {graph_name!r}: symbol_ranges"
    ranges: dict[str, tuple[int, int | None]] = {}
    for name, bounds in _expect(value, dict, where).items():
        if not name.isidentifier():
            raise GraphFormatError(f"{where}: a symbol name must be an identifier, got {_excerpt(name)}")
        pair = _expect(bounds, list, f"{where}[{name!r}]")
        if len(pair) != 2:
            raise GraphFormatError(f"{where}[{name!r}] must be [min, max], got {_excerpt(pair)}")
        lo = _expect(pair[0], int, f"{where}[{name!r}]: min")
        hi = None if pair[1] is None else _expect(pair[1], int, f"{where}[{name!r}]: max (or null)")
        if lo < 0 or (hi is not None and hi < lo):
            raise GraphFormatError(f"{where}[{name!r}]: needs 0 <= min <= max, got [{lo}, {hi}]")
        ranges[name] = (lo, hi)
    return ranges


def _node_from_json(item: object, values: dict[str, Value], graph: Graph) -> Node:
    """The node an item of a document's node list describes, added to `graph` as it is (the verifier checks it)."""
    node_doc = _expect(item, dict, "a node")
    name = _expect(node_doc.get("name"), str, "a node's name")
    where = f"node {name!r}"
    op = _expect(node_doc.get("op"), str, f"{where}: op")
    try:
        inputs = [values[v] for v in _names(node_doc.get("inputs"), f"{where}: inputs")]
    except KeyError as exc:
        raise GraphFormatError(f"{where} uses undefined value {exc.args[0]!r}") from None
    attrs = _expect(node_doc.get("attrs"), dict, f"{where}: attrs")
    outputs = []
    for out in _expect(node_doc.get("outputs"), list, f"{where}: outputs"):
        out_name = _expect(_expect(out, dict, f"{where}: an output").get("name"), str, f"{where}: an output's name")
        outputs.append((out_name, decode_type(out.get("type"))))
    return graph.create_node(name, op, inputs, {k: _decode_attr(v) for k, v in attrs.items()}, outputs)


def unshared_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, no two sharing memory: what safetensors accepts (plans and modules use it too)."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[name] = t
    return out


def save(graph: Graph, path: str | os.PathLike[str]) -> None:
    doc, tensors = graph_to_json(graph)
    save_file(unshared_tensors(tensors), os.fspath(path), metadata={_META_KEY: json.dumps(doc)})


def load(path: str | os.PathLike[str]) -> Graph:
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise GraphFormatError(f"{path}: not a readable tensorforge graph file ({exc})") from exc
    if _META_KEY not in meta:
        raise GraphFormatError(f"{path}: a safetensors file, but not a tensorforge graph (no {_META_KEY!r} metadata)")
    try:
        doc = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise GraphFormatError(f"{path}: the graph description is not valid JSON ({exc})") from exc
    return graph_from_json(doc, tensors)


def copy_graph(graph: Graph) -> Graph:
    """A structurally independent copy with the same names; constant tensors are shared, not copied (what every
    rewrite starts from: passes and the quantizer return new graphs and never change their input). What a
    `graph_to_json` round trip would give, made directly: every pass of every build copies its graph, and the
    round trip cost ~35 us a node (an unrolled recurrence's 17,000 nodes: 0.6 s a copy)."""
    copy = Graph(graph.name)
    copy.symbol_ranges = dict(graph.symbol_ranges)
    for name, sub in graph.subgraphs.items():
        copy.subgraphs[name] = copy_graph(sub)
    values: dict[str, Value] = {}
    for v in graph.inputs:
        values[v.name] = copy.add_input(v.name, v.type)
    for name in sorted(graph.constants):
        values[name] = copy.add_constant(graph.constants[name].tensor, name, exact=True)
    for n in graph.nodes:
        inputs = [values[v.name] for v in n.inputs]
        node = copy.create_node(
            n.name, n.op, inputs, {k: _copy_attr(v) for k, v in n.attrs.items()}, [(v.name, v.type) for v in n.outputs]
        )
        values.update((v.name, v) for v in node.outputs)
    copy.set_outputs([values[v.name] for v in graph.outputs])
    return copy


def _copy_attr(value: Any) -> Any:
    """An attribute value no two graphs share a mutable part of (canonical values: scalars, strings, sizes,
    tuples, dicts)."""
    if isinstance(value, dict):
        return {k: _copy_attr(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_copy_attr(v) for v in value)
    return value
