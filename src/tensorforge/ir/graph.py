"""Graph, Node and Value: the one typed IR every stage of tensorforge works on.

A `Graph` holds its inputs, its constants (weights), its nodes in topological order and its outputs.
Every `Value` is produced exactly once: by being a graph input, a constant, or the output of a node.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Iterable, Mapping, Sequence

import torch

from .registry import OpDef, get_op
from .types import TensorType


class Value:
    __slots__ = ("name", "type", "producer", "data")

    def __init__(self, name: str, type: TensorType, producer: "Node | None" = None,
                 data: torch.Tensor | None = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.data = data  # set for constants only

    @property
    def kind(self) -> str:
        if self.data is not None:
            return "const"
        return "input" if self.producer is None else "node"

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.type})"


class Node:
    __slots__ = ("name", "op", "inputs", "outputs", "attrs")

    def __init__(self, name: str, op: str, inputs: list[Value], attrs: dict[str, Any]):
        self.name = name
        self.op = op
        self.inputs = inputs
        self.outputs: list[Value] = []
        self.attrs = attrs

    @property
    def opdef(self) -> OpDef:
        return get_op(self.op)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.name!r} ({self.op}) has {len(self.outputs)} outputs")
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.name}: {self.op})"


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, Value] = {}
        # graphs called by `subgraph` nodes (engine regions after partitioning), by name
        self.subgraphs: dict[str, "Graph"] = {}
        self._taken: set[str] = set()  # value names
        self._node_names: set[str] = set()
        self._counter = itertools.count()

    # -- construction -------------------------------------------------------------------------

    def fresh_name(self, base: str = "v", taken: set[str] | None = None) -> str:
        """A name starting with `base` that no value (or, with `taken`, no name in that set) has yet."""
        taken = self._taken if taken is None else taken
        base = base or "v"
        name = base
        while name in taken:
            name = f"{base}_{next(self._counter)}"
        taken.add(name)
        return name

    def add_input(self, name: str, type: TensorType) -> Value:
        if name in self._taken:
            raise ValueError(f"graph {self.name!r} already has a value named {name!r}")
        self._taken.add(name)
        value = Value(name, type)
        self.inputs.append(value)
        return value

    def add_constant(self, tensor: torch.Tensor, name: str = "const") -> Value:
        tensor = tensor.detach()
        value = Value(self.fresh_name(name), TensorType.of(tensor), data=tensor)
        self.constants[value.name] = value
        return value

    def add_node(self, op: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
                 name: str | None = None, output_types: Sequence[TensorType] | None = None) -> Node:
        """Append a node; its output types are inferred by the op registry unless given."""
        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs or {})
        types = list(output_types) if output_types is not None else opdef.infer_types([v.type for v in inputs], attrs)
        # default names: "conv2d" for nn.conv2d, "logcumsumexp" for the opaque torch.aten.logcumsumexp.default
        default = op.split(".")[2] if opdef.opaque and op.count(".") >= 3 else op.rsplit(".", 1)[-1]
        node = Node(self.fresh_name(name or default, self._node_names), op, list(inputs), attrs)
        node.outputs = [Value(self.fresh_name(node.name if len(types) == 1 else f"{node.name}.{i}"), t, node)
                        for i, t in enumerate(types)]
        self.nodes.append(node)
        return node

    def call(self, op: str, *inputs: Value, name: str | None = None, **attrs):
        """Add a node and return its output value (a tuple of values for multi-output ops)."""
        node = self.add_node(op, inputs, attrs, name=name)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def set_outputs(self, values: Iterable[Value]) -> None:
        self.outputs = list(values)

    # -- queries -------------------------------------------------------------------------------

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = collections.defaultdict(list)
        for node in self.nodes:
            for v in node.inputs:
                out[v].append(node)
        return out

    def op_counts(self) -> collections.Counter:
        return collections.Counter(node.op for node in self.nodes)

    def opaque_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.opdef.opaque]

    def macs(self, env: Mapping[str, int] | None = None) -> int:
        """Multiply-accumulates of one run; symbols not in `env` count as 1 (batch 1)."""
        return sum(n.opdef.count_macs([v.type for v in n.inputs], [v.type for v in n.outputs], n.attrs, env or {})
                   for n in self.nodes)

    def parameter_bytes(self) -> int:
        return sum(v.data.numel() * v.data.element_size() for v in self.constants.values())

    def summary(self) -> str:
        from .printer import summary
        return summary(self)

    def verify(self) -> "Graph":
        from .verify import verify
        verify(self)
        return self

    def __str__(self) -> str:
        from .printer import print_graph
        return print_graph(self)
