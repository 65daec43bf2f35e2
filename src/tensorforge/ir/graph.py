"""Graph, Node and Value: the one typed IR every stage of tensorforge works on.

A `Graph` holds its inputs, its constants (weights), its nodes in topological order and its outputs.
Every `Value` is produced exactly once: by being a graph input, a constant, or the output of a node.

The graph owns every structural edit, as torch.fx's Graph does: values and nodes are created, renamed,
inserted, rewired and erased through its methods, and each method keeps three invariants at the cost of the
edit alone (no rescan of the graph):
- names are unique: value names among the graph's values, node names among its nodes; an exact name that is
  taken is an error naming what holds it, and `fresh_name` / `fresh_node_name` give free variants;
- `nodes` is a topological order: a node goes only where its inputs are already defined, and a use is moved
  only to a value defined before its reader (`set_order` checks a whole new order);
- the def-use index says who reads each value (`users_of`, `use_count`, `sole_user`, `is_output`).
Structure is therefore read-only from outside: `inputs`, `nodes` and `outputs` are tuples, `constants` a
read-only mapping, names are properties. Assigning `node.inputs` (or `graph.outputs`) goes through the graph
like any other edit. `Node.attrs`, `Value.type` and `Value.data` are plain data that no invariant depends on.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import types
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch

from .registry import OpDef, get_op
from .types import TensorType

# gap between the order keys of neighbouring nodes: about 16 insertions at one spot before a renumbering
_ORDER_GAP = 1 << 16
_Key = TypeVar("_Key")


class Value:
    """A tensor of a graph: an input, a constant (`data` set) or a node's output (`producer` set).
    Made by the graph (`add_input`, `add_constant`, `add_node`); renamed only through `Graph.rename_value`."""

    __slots__ = ("_name", "type", "producer", "data")

    def __init__(
        self, name: str, tensor_type: TensorType, producer: Node | None = None, data: torch.Tensor | None = None
    ) -> None:
        self._name = name
        self.type = tensor_type
        self.producer = producer
        self.data = data  # set for constants only

    @property
    def name(self) -> str:
        return self._name

    @property
    def tensor(self) -> torch.Tensor:
        """The data of a constant (ValueError for a graph input or a node's output, which hold none)."""
        if self.data is None:
            raise ValueError(f"%{self._name} is not a constant: it holds no data")
        return self.data

    @property
    def kind(self) -> str:
        if self.data is not None:
            return "const"
        return "input" if self.producer is None else "node"

    def __repr__(self) -> str:
        return f"Value(%{self._name}: {self.type})"


class Node:
    """One op applied to values. Made by the graph (`add_node`, `create_node`); its inputs may be reassigned
    (`node.inputs = [...]`, `replace_input`), which the graph checks and records in its def-use index."""

    __slots__ = ("_name", "op", "_inputs", "_outputs", "attrs", "_graph", "_order")

    def __init__(self, name: str, op: str, inputs: Sequence[Value], attrs: dict[str, Any]):
        self._name = name
        self.op = op
        self._inputs: tuple[Value, ...] = tuple(inputs)
        self._outputs: tuple[Value, ...] = ()
        self.attrs = attrs
        self._graph: Graph | None = None  # the graph whose node list holds this node
        self._order = 0  # increasing along the graph's node list (compares positions in O(1))

    @property
    def name(self) -> str:
        return self._name

    @property
    def inputs(self) -> tuple[Value, ...]:
        return self._inputs

    @inputs.setter
    def inputs(self, values: Iterable[Value]) -> None:
        self._owner().set_node_inputs(self, values)

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self._outputs

    @property
    def graph(self) -> Graph | None:
        """The graph that holds this node (None once erased)."""
        return self._graph

    def replace_input(self, old: Value, new: Value) -> int:
        """Read `new` wherever this node read `old`; how many input slots changed."""
        count = sum(v is old for v in self._inputs)
        if count:
            self.inputs = [new if v is old else v for v in self._inputs]
        return count

    def replace_input_at(self, index: int, new: Value) -> None:
        inputs = list(self._inputs)
        inputs[index] = new
        self.inputs = inputs

    @property
    def opdef(self) -> OpDef:
        return get_op(self.op)

    @property
    def output(self) -> Value:
        if len(self._outputs) != 1:
            raise ValueError(f"node {self._name!r} ({self.op}) has {len(self._outputs)} outputs")
        return self._outputs[0]

    def _owner(self) -> Graph:
        if self._graph is None:
            raise ValueError(f"node {self._name!r} ({self.op}) is in no graph (erased, or never added)")
        return self._graph

    def __repr__(self) -> str:
        return f"Node({self._name}: {self.op})"


def _order_of(node: Node) -> int:
    return node._order


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        # graphs called by `subgraph` nodes (engine regions after partitioning), by name
        self.subgraphs: dict[str, Graph] = {}
        # the sizes each symbol may take, as the model declares them (torch.export's range constraints):
        # symbol -> (min, max), max None where unbounded. A default for profiles, not a constraint the graph checks.
        self.symbol_ranges: dict[str, tuple[int, int | None]] = {}
        self._inputs: list[Value] = []
        self._outputs: tuple[Value, ...] = ()
        self._nodes: list[Node] = []  # sorted by Node._order
        self._nodes_view: tuple[Node, ...] | None = ()  # `nodes`, built again after an edit of the list
        self._constants: dict[str, Value] = {}
        self._constants_view = types.MappingProxyType(self._constants)
        self._values: dict[str, Value] = {}  # every value of the graph, by name
        self._nodes_by_name: dict[str, Node] = {}
        # the def-use index: for each value read by a node, each reader and how many of its input slots read it;
        # for each value the graph returns, at how many output positions
        self._readers: dict[Value, dict[Node, int]] = {}
        self._returned: dict[Value, int] = {}
        self._counter = itertools.count()

    # -- reading the structure -----------------------------------------------------------------

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(self._inputs)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes in topological order (a snapshot: edits made while iterating it do not change it)."""
        if self._nodes_view is None:
            self._nodes_view = tuple(self._nodes)
        return self._nodes_view

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self._outputs

    @outputs.setter
    def outputs(self, values: Iterable[Value]) -> None:
        self.set_outputs(values)

    @property
    def constants(self) -> Mapping[str, Value]:
        """The constants by name (read-only: `add_constant`, `erase_constant`, `rename_value` change it)."""
        return self._constants_view

    def value_named(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no value named {name!r}") from None

    def node_named(self, name: str) -> Node:
        try:
            return self._nodes_by_name[name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no node named {name!r}") from None

    def owns(self, value: Value) -> bool:
        """Whether `value` is one of this graph's values (an input, a constant or the output of one of its nodes)."""
        return self._values.get(value._name) is value

    # -- names ---------------------------------------------------------------------------------

    def fresh_name(self, base: str = "v", avoid: Collection[str] = ()) -> str:
        """`base`, or a variant of it, that no value of the graph has (nor any name in `avoid`). Nothing is
        reserved: the name is free until a value takes it."""
        return self._fresh(base or "v", self._values, avoid)

    def fresh_node_name(self, base: str = "node", avoid: Collection[str] = ()) -> str:
        """`base`, or a variant of it, that no node of the graph has (nor any name in `avoid`)."""
        return self._fresh(base or "node", self._nodes_by_name, avoid)

    def _fresh(self, base: str, taken: Collection[str], avoid: Collection[str]) -> str:
        name = base
        while name in taken or name in avoid:
            name = f"{base}_{next(self._counter)}"
        return name

    def _value_holder(self, name: str) -> str:
        """What holds value name `name`, in words (for errors)."""
        value = self._values[name]
        if value.data is not None:
            return f"constant @{name}"
        if value.producer is None:
            return f"input %{name}"
        return f"the output %{name} of node {value.producer._name!r} ({value.producer.op})"

    def _check_value_names(self, names: Sequence[str]) -> None:
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise TypeError(f"graph {self.name!r}: a value name must be a string, got {name!r}")
            if name in self._values:
                raise ValueError(f"graph {self.name!r} already has a value named {name!r}: {self._value_holder(name)}")
            if name in names[:i]:
                raise ValueError(f"graph {self.name!r}: value name {name!r} is given twice")

    def _check_node_name(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"graph {self.name!r}: a node name must be a string, got {name!r}")
        if name in self._nodes_by_name:
            holder = self._nodes_by_name[name]
            raise ValueError(f"graph {self.name!r} already has a node named {name!r} ({holder.op})")

    def rename_value(self, value: Value, name: str) -> Value:
        """Give `value` the name `name` exactly (ValueError naming the value that holds it already)."""
        self._check_owned(value, "rename")
        if value._name == name:
            return value
        self._check_value_names([name])
        del self._values[value._name]
        if value.data is not None:
            del self._constants[value._name]
            self._constants[name] = value
        value._name = name
        self._values[name] = value
        return value

    def rename_node(self, node: Node, name: str) -> Node:
        """Give `node` the name `name` exactly (ValueError naming the node that holds it already)."""
        self._check_member(node)
        if node._name == name:
            return node
        self._check_node_name(name)
        del self._nodes_by_name[node._name]
        node._name = name
        self._nodes_by_name[name] = node
        return node

    def rename_output(self, index: int, name: str) -> Value:
        """Give graph output `index` the name `name`; returns the value the graph now returns there.

        The position gets a value of its own, a `copy` of what it returned, when that was a graph input or a
        constant (their names stay: they name the model's inputs and weights) or a value returned at an earlier
        position too (a model that returns one tensor twice: each position keeps its own name). An intermediate
        value that holds `name` gives it up (it takes a fresh variant): the model's output names are its
        interface. Only when a graph input, a constant or another output holds `name` does the output get a
        fresh variant of it.
        """
        value = self._outputs[index]
        needs_copy = value.kind != "node" or any(v is value for v in self._outputs[:index])
        if not needs_copy and value._name == name:
            return value
        holder = self._values.get(name)
        if holder is not None and holder is not value and holder.kind == "node" and holder not in self._returned:
            self.rename_value(holder, self.fresh_name(name))  # an intermediate value steps aside
        elif holder is not None:
            name = self.fresh_name(name)
        if needs_copy:
            value = self.add_node("copy", [value], name=name, output_names=[name]).output
            self.set_outputs([value if i == index else v for i, v in enumerate(self._outputs)])
            return value
        return self.rename_value(value, name)

    # -- creating values and nodes ---------------------------------------------------------------

    def add_input(self, name: str, tensor_type: TensorType) -> Value:
        """A graph input named exactly `name` (ValueError naming the value that holds it already)."""
        self._check_value_names([name])
        value = Value(name, tensor_type)
        self._inputs.append(value)
        self._values[name] = value
        return value

    def add_constant(self, tensor: torch.Tensor, name: str = "const", *, exact: bool = False) -> Value:
        """A constant holding `tensor` (the same tensor object unless it tracks gradients, so weights that regions
        share stay shared), named `name` or, unless `exact`, a fresh variant of it."""
        if tensor.requires_grad or type(tensor) is not torch.Tensor:
            tensor = tensor.detach()
        name = name if exact else self.fresh_name(name or "const")
        self._check_value_names([name])
        value = Value(name, TensorType.of(tensor), data=tensor)
        self._constants[name] = value
        self._values[name] = value
        return value

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        output_types: Sequence[TensorType] | None = None,
        *,
        output_names: Sequence[str] | None = None,
        exact: bool = False,
        before: Node | None = None,
        after: Node | None = None,
    ) -> Node:
        """Add a node of registered op `op`: attributes normalized, output types inferred unless given.

        Names: the node is named `name` (default: after the op) and its outputs `output_names` (default: the
        node's name, `<name>.<i>` for several outputs) — exactly with `exact` (ValueError naming any clash),
        else fresh variants. Position: just before `before` or just after `after`, else at the end; every input
        must be defined before that position.
        """
        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs or {})
        types = list(output_types) if output_types is not None else opdef.infer_types([v.type for v in inputs], attrs)
        # default names: "conv2d" for nn.conv2d, "logcumsumexp" for the opaque torch.aten.logcumsumexp.default
        default = op.split(".")[2] if opdef.opaque and op.count(".") >= 3 else op.rsplit(".", 1)[-1]
        node_name = (name or default) if exact else self.fresh_node_name(name or default)
        if output_names is None:
            output_names = [node_name] if len(types) == 1 else [f"{node_name}.{i}" for i in range(len(types))]
        elif len(output_names) != len(types):
            raise ValueError(f"{op} has {len(types)} outputs, {len(output_names)} names were given")
        if not exact:
            fresh: list[str] = []
            for base in output_names:
                fresh.append(self.fresh_name(base, avoid=fresh))
            output_names = fresh
        return self.create_node(
            node_name, op, inputs, attrs, list(zip(output_names, types)), before=before, after=after
        )

    def create_node(
        self,
        name: str,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any],
        outputs: Sequence[tuple[str, TensorType]],
        *,
        before: Node | None = None,
        after: Node | None = None,
    ) -> Node:
        """Add a node exactly as described: names taken exactly (ValueError naming any clash), attributes and
        output types as given, not checked against the op registry (the verifier does that) — for copying a
        graph and reading a saved one. Position as in `add_node`."""
        self._check_node_name(name)
        self._check_value_names([n for n, _ in outputs])
        node = Node(name, op, inputs, attrs)
        node._outputs = tuple(Value(n, t, node) for n, t in outputs)
        index, order = self._slot(before, after)
        self._check_reads(node, node._inputs, order, "cannot go there")
        node._order = order
        node._graph = self
        self._nodes.insert(index, node)
        self._nodes_view = None
        self._nodes_by_name[name] = node
        for value in node._outputs:
            self._values[value._name] = value
        for value in node._inputs:
            self._add_use(value, node)
        return node

    def call(self, op: str, *inputs: Value, name: str | None = None, **attrs: Any) -> Any:
        """Add a node and return its output value (a tuple of values for multi-output ops: which one is known only
        from the op, hence `Any` for type checkers)."""
        node = self.add_node(op, inputs, attrs, name=name)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def set_outputs(self, values: Iterable[Value]) -> None:
        values = tuple(values)
        for v in values:
            if not self.owns(v):
                raise ValueError(f"graph {self.name!r}: output %{v.name} is not a value of this graph")
        for v in self._outputs:
            self._drop(self._returned, v)
        for v in values:
            self._returned[v] = self._returned.get(v, 0) + 1
        self._outputs = values

    # -- rewiring --------------------------------------------------------------------------------

    def set_node_inputs(self, node: Node, values: Iterable[Value]) -> None:
        """`node` reads `values` from now on (each defined before it)."""
        self._check_member(node)
        values = tuple(values)
        self._check_reads(node, values, node._order, "cannot read it")
        for v in node._inputs:
            self._drop_use(v, node)
        node._inputs = values
        for v in values:
            self._add_use(v, node)

    def replace_all_uses(self, old: Value, new: Value, *, skip: Collection[Node] = ()) -> int:
        """Every use of `old` — node input slots and graph outputs — becomes a use of `new`, except by the nodes in
        `skip`; returns how many uses moved. Every moved reader must come after `new`'s producer."""
        self._check_owned(old, "replace")
        self._check_owned(new, "use")
        if old is new:
            return 0
        readers = [n for n in self._readers.get(old, ()) if n not in skip]
        for node in readers:
            self._check_reads(node, (new,), node._order, "cannot read it instead of %" + old._name)
        moved = 0
        for node in readers:
            count = self._readers[old][node]
            node._inputs = tuple(new if v is old else v for v in node._inputs)
            for _ in range(count):
                self._drop_use(old, node)
                self._add_use(new, node)
            moved += count
        if old in self._returned:
            moved += self._returned[old]
            self.set_outputs(new if v is old else v for v in self._outputs)
        return moved

    def set_order(self, nodes: Sequence[Node]) -> None:
        """Put the graph's nodes in the order `nodes` (the same nodes, a topological order: ValueError otherwise)."""
        nodes = list(nodes)
        position = {node: i for i, node in enumerate(nodes)}
        if len(position) != len(nodes) or len(nodes) != len(self._nodes) or any(n._graph is not self for n in nodes):
            raise ValueError(f"graph {self.name!r}: set_order takes each of the graph's {len(self._nodes)} nodes once")
        for i, node in enumerate(nodes):
            for v in node._inputs:
                if v.producer is not None and position[v.producer] >= i:
                    raise ValueError(
                        f"graph {self.name!r}: in the new order node {node._name!r} ({node.op}) reads "
                        f"%{v._name} before node {v.producer._name!r} ({v.producer.op}) makes it"
                    )
        self._nodes[:] = nodes
        self._renumber()

    # -- erasing ---------------------------------------------------------------------------------

    def erase_node(self, node: Node) -> None:
        """Remove `node`; its outputs must be unused (ValueError naming a reader). Their names become free."""
        self.erase_nodes([node])

    def erase_nodes(self, nodes: Iterable[Node]) -> None:
        """Remove several nodes at once; their outputs may be read only among them (ValueError naming a reader
        outside). The names of the nodes and their outputs become free."""
        group = list(dict.fromkeys(nodes))
        for node in group:
            self._check_member(node)
        members = set(group)
        for node in group:
            for v in node._outputs:
                if v in self._returned:
                    raise ValueError(
                        f"graph {self.name!r}: cannot erase node {node._name!r} ({node.op}): its output "
                        f"%{v._name} is a graph output"
                    )
                for reader in self._readers.get(v, ()):
                    if reader not in members:
                        raise ValueError(
                            f"graph {self.name!r}: cannot erase node {node._name!r} ({node.op}): its "
                            f"output %{v._name} is still read by node {reader._name!r} ({reader.op})"
                        )
        for node in group:
            for v in node._inputs:
                self._drop_use(v, node)
        for node in group:
            for v in node._outputs:
                del self._values[v._name]
            del self._nodes_by_name[node._name]
            node._graph = None
        if len(group) == 1:
            del self._nodes[self._index(group[0])]
        else:
            self._nodes[:] = [n for n in self._nodes if n not in members]
        self._nodes_view = None

    def erase_constant(self, value: Value) -> None:
        """Remove constant `value`; nothing may use it (ValueError naming a reader)."""
        if value.data is None or self._constants.get(value._name) is not value:
            raise ValueError(f"graph {self.name!r}: %{value._name} is not a constant of this graph")
        if value in self._returned:
            raise ValueError(f"graph {self.name!r}: cannot erase constant @{value._name}: it is a graph output")
        for reader in self._readers.get(value, ()):
            raise ValueError(
                f"graph {self.name!r}: cannot erase constant @{value._name}: node {reader._name!r} "
                f"({reader.op}) reads it"
            )
        del self._constants[value._name]
        del self._values[value._name]

    def erase_unused_constants(self) -> int:
        """Remove every constant nothing uses; how many went."""
        unused = [v for v in self._constants.values() if v not in self._readers and v not in self._returned]
        for v in unused:
            self.erase_constant(v)
        return len(unused)

    def erase_unread_nodes(self, keep: Callable[[Node], bool] | None = None) -> int:
        """Remove every node no graph output depends on (but those `keep` says to keep, and what they read), then
        the constants left unused; how many nodes went. Graph inputs always stay: they are the signature."""
        dead: set[Node] = set()
        for node in reversed(self.nodes):  # readers come later: each is decided before the nodes it reads
            if keep is not None and keep(node):
                continue
            if not any(self.is_output(v) or any(u not in dead for u in self.users_of(v)) for v in node.outputs):
                dead.add(node)
        if dead:
            self.erase_nodes(dead)
        self.erase_unused_constants()
        return len(dead)

    # -- the def-use index -----------------------------------------------------------------------

    def users_of(self, value: Value) -> list[Node]:
        """The nodes that read `value`, each once, in graph order (graph outputs are not nodes: see `is_output`)."""
        return sorted(self._readers.get(value, ()), key=_order_of)

    def use_count(self, value: Value) -> int:
        """How many times `value` is used: once per node input slot that reads it and once per output position."""
        return sum(self._readers.get(value, {}).values()) + self._returned.get(value, 0)

    def is_output(self, value: Value) -> bool:
        return value in self._returned

    def sole_user(self, value: Value) -> Node | None:
        """The node that reads `value` in one input slot when that is its only use (no other reader, not a graph
        output): a value a rewrite may absorb into its reader. None otherwise."""
        readers = self._readers.get(value)
        if not readers or len(readers) != 1 or value in self._returned:
            return None
        ((node, count),) = readers.items()
        return node if count == 1 else None

    def users(self) -> dict[Value, list[Node]]:
        """Every value that nodes read, with its readers in graph order, a node once per input slot."""
        out: dict[Value, list[Node]] = collections.defaultdict(list)
        for value, readers in self._readers.items():
            out[value] = [n for n in sorted(readers, key=_order_of) for _ in range(readers[n])]
        return out

    def defined_before(self, value: Value, node: Node) -> bool:
        """Whether `value` exists at `node`'s position: an input, a constant, or made by an earlier node."""
        self._check_member(node)
        return self.owns(value) and (value.producer is None or value.producer._order < node._order)

    def index_problems(self) -> list[str]:
        """Where the graph's own indexes (names, def-use, order) disagree with a recount from its lists: empty
        unless something changed the graph behind its methods. The verifier reports these."""
        problems = []
        values = [*self._inputs, *self._constants.values(), *(v for n in self._nodes for v in n._outputs)]
        if {v._name: v for v in values} != self._values or len(values) != len(self._values):
            problems.append("the value-name index differs from the graph's values")
        if {n._name: n for n in self._nodes} != self._nodes_by_name or len(self._nodes) != len(self._nodes_by_name):
            problems.append("the node-name index differs from the graph's nodes")
        if any(key != v._name for key, v in self._constants.items()):
            problems.append("a constant is stored under another name than its own")
        readers: dict[Value, dict[Node, int]] = {}
        for node in self._nodes:
            for v in node._inputs:
                readers.setdefault(v, {})
                readers[v][node] = readers[v].get(node, 0) + 1
        if readers != self._readers:
            problems.append("the def-use index differs from the nodes' inputs")
        if collections.Counter(self._outputs) != collections.Counter(self._returned):
            problems.append("the output index differs from the graph's outputs")
        if any(n._graph is not self for n in self._nodes):
            problems.append("a node in the node list does not belong to this graph")
        if any(a._order >= b._order for a, b in zip(self._nodes, self._nodes[1:])):
            problems.append("the nodes' order keys are not increasing")
        return problems

    # -- queries -------------------------------------------------------------------------------

    def op_counts(self) -> collections.Counter[str]:
        return collections.Counter(node.op for node in self._nodes)

    def opaque_nodes(self) -> list[Node]:
        return [n for n in self._nodes if n.opdef.opaque]

    def macs(self, env: Mapping[str, int] | None = None) -> int:
        """Multiply-accumulates of one run; symbols not in `env` count as 1 (batch 1)."""
        return sum(
            n.opdef.count_macs([v.type for v in n.inputs], [v.type for v in n.outputs], n.attrs, env or {})
            for n in self._nodes
        )

    def parameter_bytes(self) -> int:
        tensors = [v.data for v in self._constants.values() if v.data is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def summary(self) -> str:
        from .printer import summary

        return summary(self)

    def verify(self) -> Graph:
        from .verify import verify

        verify(self)
        return self

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    # -- internals -------------------------------------------------------------------------------

    def _check_owned(self, value: Value, what: str) -> None:
        if not self.owns(value):
            raise ValueError(f"graph {self.name!r}: cannot {what} %{value._name}: not a value of this graph")

    def _check_member(self, node: Node) -> None:
        if node._graph is not self:
            raise ValueError(f"graph {self.name!r}: node {node._name!r} ({node.op}) is not in this graph")

    def _check_reads(self, node: Node, values: Iterable[Value], order: int, outcome: str) -> None:
        """Each of `values` must be this graph's and defined before position `order` (where `node` is or goes)."""
        for v in values:
            if not self.owns(v):
                raise ValueError(
                    f"graph {self.name!r}: node {node._name!r} ({node.op}) cannot read %{v._name}: "
                    f"not a value of this graph"
                )
            if v.producer is not None and v.producer._order >= order:
                raise ValueError(
                    f"graph {self.name!r}: node {node._name!r} ({node.op}) {outcome}: it would read "
                    f"%{v._name} before node {v.producer._name!r} ({v.producer.op}) makes it"
                )

    def _index(self, node: Node) -> int:
        i = bisect.bisect_left(self._nodes, node._order, key=_order_of)
        assert self._nodes[i] is node
        return i

    def _slot(self, before: Node | None, after: Node | None) -> tuple[int, int]:
        """(list index, order key) of a node to go just before `before`, just after `after`, or at the end."""
        if before is not None and after is not None:
            raise ValueError("a node goes before one node or after one, not both")
        anchor = before if before is not None else after
        if anchor is None:
            index = len(self._nodes)
        else:
            self._check_member(anchor)
            index = self._index(anchor) + (after is not None)
        for _ in range(2):
            low = self._nodes[index - 1]._order if index > 0 else 0
            high = self._nodes[index]._order if index < len(self._nodes) else low + 2 * _ORDER_GAP
            if high - low >= 2:
                return index, (low + high) // 2
            self._renumber()  # no key left between the neighbours: spread all keys out again
        raise AssertionError("unreachable: renumbered keys leave room between neighbours")

    def _renumber(self) -> None:
        for i, node in enumerate(self._nodes):
            node._order = (i + 1) * _ORDER_GAP
        self._nodes_view = None

    def _add_use(self, value: Value, node: Node) -> None:
        readers = self._readers.setdefault(value, {})
        readers[node] = readers.get(node, 0) + 1

    def _drop_use(self, value: Value, node: Node) -> None:
        readers = self._readers[value]
        self._drop(readers, node)
        if not readers:
            del self._readers[value]

    @staticmethod
    def _drop(counts: dict[_Key, int], key: _Key) -> None:
        if counts[key] == 1:
            del counts[key]
        else:
            counts[key] -= 1
