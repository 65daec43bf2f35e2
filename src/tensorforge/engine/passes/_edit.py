"""Graph editing for passes (not a pass): copy a graph, make nodes, rewire uses, drop what is gone.

Passes are pure: each starts from `copy_graph(graph)` (new Graph, Node and Value objects; constant tensors
shared, since no pass writes into a tensor) and edits only the copy.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch

from ...ir import Graph, Node, TensorType, Value, get_op, graph_from_json, graph_to_json


def copy_graph(graph: Graph) -> Graph:
    """A structurally independent copy with the same names; constant tensors are shared, not copied."""
    doc, tensors = graph_to_json(graph)
    return graph_from_json(doc, tensors)


def make_node(op: str, inputs: Sequence[Value], attrs: Mapping[str, Any], *, name: str,
              output_names: Sequence[str]) -> Node:
    """A node (not yet in any node list) with given node and output names; types are inferred."""
    opdef = get_op(op)
    attrs = opdef.normalize_attrs(attrs)
    types = opdef.infer_types([v.type for v in inputs], attrs)
    if len(types) != len(output_names):
        raise ValueError(f"{op} has {len(types)} outputs, {len(output_names)} names were given")
    node = Node(name, op, list(inputs), attrs)
    node.outputs = [Value(n, t, node) for n, t in zip(output_names, types)]
    return node


def add_constant_named(graph: Graph, name: str, tensor: torch.Tensor) -> Value:
    """A constant under exactly `name` (a name the graph's value being replaced had), or a fresh variant."""
    tensor = tensor.detach()
    if name in graph.constants or any(name == v.name for v in graph.inputs):
        return graph.add_constant(tensor, name)
    value = Value(name, TensorType.of(tensor), data=tensor)
    graph.constants[name] = value
    return value


def replace_uses(graph: Graph, old: Value, new: Value, *, skip: Iterable[Node] = ()) -> None:
    """Every use of `old` (node inputs and graph outputs) becomes a use of `new`."""
    skipped = {id(n) for n in skip}
    for node in graph.nodes:
        if id(node) not in skipped and any(v is old for v in node.inputs):
            node.inputs = [new if v is old else v for v in node.inputs]
    graph.outputs = [new if v is old else v for v in graph.outputs]


def user_counts(graph: Graph) -> dict[int, int]:
    """How many times each value (by id) is used: once per node input slot and once per graph output."""
    counts: dict[int, int] = {}
    for node in graph.nodes:
        for v in node.inputs:
            counts[id(v)] = counts.get(id(v), 0) + 1
    for v in graph.outputs:
        counts[id(v)] = counts.get(id(v), 0) + 1
    return counts


def drop_unused_constants(graph: Graph) -> int:
    used = {id(v) for n in graph.nodes for v in n.inputs} | {id(v) for v in graph.outputs}
    gone = [k for k, v in graph.constants.items() if id(v) not in used]
    for key in gone:
        del graph.constants[key]
    return len(gone)


class Readers:
    """Who reads each value (a node once per input slot), and which values the graph returns."""

    def __init__(self, graph: Graph):
        self.readers: dict[int, list[Node]] = {}
        for node in graph.nodes:
            for v in node.inputs:
                self.readers.setdefault(id(v), []).append(node)
        self.returned = {id(v) for v in graph.outputs}

    def only_reader(self, value: Value) -> Node | None:
        readers = self.readers.get(id(value), [])
        return readers[0] if len(readers) == 1 and id(value) not in self.returned else None

    def read_beyond(self, value: Value, gone: set[int]) -> bool:
        """Whether anything but the nodes in `gone` reads `value` (a graph output counts)."""
        return id(value) in self.returned or any(id(n) not in gone for n in self.readers.get(id(value), []))
