"""fold_constants: nodes computed from constants alone become constants, before any region is formed.

Why: models build masks and indices from constants at run time — Swin's shifted-window masks (`full`, slices,
`copy`, `slice_scatter`), relative-position biases gathered from a table, MLPs over fixed coordinates (Swin V2).
Left in the graph, each such island is a region with no inputs that goes back to PyTorch (or an opaque node
that runs there anyway), and every one of them is a boundary that splits the engine regions around it. Computed
once here, they become weights the regions read, and the regions merge. The engine folds constants again inside
each region (`engine/passes/constant_folding.py`); that pass cannot help here, because it runs only after the
regions are cut, and it leaves opaque ops alone.

What folds: a node whose inputs are all constants (or folded already), with no symbolic size in its attributes or
outputs, run through its reference implementation on the CPU exactly as `ir.execute` would run it. Opaque torch
nodes fold too, through their torch operator, unless that operator draws random numbers (`nondeterministic_seeded`)
or mutates its arguments.

What does not, each with its reason in the report (`PartitionReport.not_folded`):
- results above `limit_bytes` (64 MiB by default, as in the engine's pass);
- results above 1 MiB that are larger than the constants they are computed from: a 1 GB `full`, or a small table
  broadcast to a large one, is cheaper to compute at run time than to store, ship and load;
- the dequantize of an 8-bit constant (a quantized weight): the engine multiplies it in 8 bits
  (`engine/passes/fuse_quantized_layers.py`), and dequantizes it itself where it cannot;
- opaque ONNX nodes (they run through onnxruntime, which partitioning never calls) and random or mutating torch ops;
- nodes whose reference fails on these constants or gives another type than the graph declares (they then run,
  and report their own error, at run time).

The input graph is never modified: when anything folds, the result is a new graph (constant tensors are shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine.quantized_ops import LAYER_DTYPES
from ..ir.graph import Graph, Node, Value
from ..ir.ops.opaque import torch_operator
from ..ir.types import TensorType
from .regions import symbols_in

DEFAULT_LIMIT_BYTES = 64 << 20
# results up to this size fold whatever they are computed from (a mask, an index table)
FREE_BYTES = 1 << 20


@dataclass(frozen=True)
class FoldResult:
    """The graph with folded nodes replaced by constants; the original nodes that folded, and the constant-only
    nodes that did not (with why), in graph order."""

    graph: Graph
    folded: tuple[Node, ...]
    not_folded: tuple[tuple[Node, str], ...]


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _op_reason(node: Node) -> str | None:
    """None when the op may be evaluated at partition time, else why not."""
    if node.op == "subgraph":
        return "a subgraph call is not folded"
    if node.op == "dequantize" and node.inputs[0].type.dtype in LAYER_DTYPES:
        return "a quantized weight stays 8-bit for the engine's quantized layers"
    if not node.opdef.opaque:
        return None
    if not node.op.startswith("torch."):
        return f"{node.op} runs through its framework's runtime, which partitioning does not call"
    try:
        operator = torch_operator(node.op)
    except ValueError as exc:
        return str(exc)
    if torch.Tag.nondeterministic_seeded in operator.tags:
        return f"{node.op} draws random numbers: each run must draw its own"
    if operator._schema.is_mutable:
        return f"{node.op} writes into its arguments"
    return None


def _size_reason(node: Node, limit_bytes: int) -> str | None:
    """None when the result is small enough to store as a weight, else why not (decided from the types, so an
    oversized result is never computed)."""
    result = sum(v.type.nbytes() for v in node.outputs)
    if any(v.type.nbytes() > limit_bytes for v in node.outputs):
        return f"its result ({_size(result)}) exceeds the folding limit ({_size(limit_bytes)})"
    source = sum(v.type.nbytes() for v in node.inputs)
    if result > max(FREE_BYTES, source):
        return (
            f"its result ({_size(result)}) is larger than the constants it is computed from "
            f"({_size(source)}): cheaper to compute at run time than to store"
        )
    return None


def _evaluate(node: Node, tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor] | None, str | None]:
    try:
        with torch.no_grad():
            results = node.opdef.run(tensors, node.attrs, {}, torch.device("cpu"))
    except Exception as exc:  # noqa: BLE001 - the node then runs at run time and reports its own error there
        return None, f"evaluating it failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
    got = [TensorType.of(t) if isinstance(t, torch.Tensor) else None for t in results]
    want = [v.type for v in node.outputs]
    if got != want:
        shown = ", ".join(str(t) for t in got)
        return None, f"it computed {shown or 'nothing'}, but the graph declares {', '.join(map(str, want))}"
    # fresh contiguous tensors: results may be views of (or broadcasts over) other weights
    return [t.clone(memory_format=torch.contiguous_format) for t in results], None


def fold_constants(graph: Graph, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> FoldResult:
    """Fold every node computed from constants alone (see the module docstring for what stays)."""
    known: dict[int, torch.Tensor] = {id(v): v.data for v in graph.constants.values() if v.data is not None}
    folded: list[Node] = []
    not_folded: list[tuple[Node, str]] = []
    for node in graph.nodes:
        if not all(id(v) in known for v in node.inputs):
            continue
        if symbols_in(tuple(node.attrs.values())) or not all(v.type.is_static for v in node.outputs):
            continue  # it depends on the batch size: not a constant
        reason = _op_reason(node) or _size_reason(node, limit_bytes)
        results = None
        if reason is None:
            results, reason = _evaluate(node, [known[id(v)] for v in node.inputs])
        if reason is not None:
            not_folded.append((node, reason))
            continue
        assert results is not None  # _evaluate gives the results or the reason it has none
        for value, tensor in zip(node.outputs, results):
            known[id(value)] = tensor
        folded.append(node)
    if not folded:
        return FoldResult(graph, (), tuple(not_folded))
    return FoldResult(_rebuild(graph, {id(n) for n in folded}, known), tuple(folded), tuple(not_folded))


def _rebuild(graph: Graph, folded: set[int], known: dict[int, torch.Tensor]) -> Graph:
    """A copy of `graph` (same names) without the folded nodes, whose outputs are constants in it now."""
    new = Graph(graph.name)
    new.symbol_ranges = dict(graph.symbol_ranges)
    vmap: dict[int, Value] = {}

    def constant(value: Value) -> None:
        vmap[id(value)] = new.add_constant(known[id(value)], value.name, exact=True)

    for v in graph.inputs:
        vmap[id(v)] = new.add_input(v.name, v.type)
    for v in graph.constants.values():
        constant(v)
    for node in graph.nodes:
        if id(node) in folded:
            for v in node.outputs:
                constant(v)
            continue
        copy = new.create_node(
            node.name,
            node.op,
            [vmap[id(v)] for v in node.inputs],
            dict(node.attrs),
            [(v.name, v.type) for v in node.outputs],
        )
        for old, value in zip(node.outputs, copy.outputs):
            vmap[id(old)] = value
    new.set_outputs([vmap[id(v)] for v in graph.outputs])
    new.erase_unused_constants()  # constants only folded nodes read are gone with them
    return new
