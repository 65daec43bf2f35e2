"""The verifier: rejects malformed graphs with a message that names the offending node or value.

Run it after every pass in tests; a graph that passes can be printed, saved, executed and partitioned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from .registry import UnknownOpError, get_op

if TYPE_CHECKING:
    from .graph import Graph, Node, Value


class VerificationError(ValueError):
    pass


def verify(graph: Graph) -> None:
    _verify(graph, ())


def _verify(graph: Graph, callers: tuple[int, ...]) -> None:
    """`callers`: the graphs whose subgraph nodes led here (a graph that calls itself would never finish)."""

    def fail(msg: str) -> NoReturn:
        raise VerificationError(f"graph {graph.name!r}: {msg}")

    if id(graph) in callers:
        fail("calls itself through its subgraphs")
    defined: set[int] = set()
    names: dict[str, str] = {}

    def define(value: Value, where: str) -> None:
        if id(value) in defined:
            fail(f"{where}: value %{value.name} is defined twice")
        if value.name in names:
            fail(f"{where}: value name %{value.name} is already used by {names[value.name]}")
        names[value.name] = where
        defined.add(id(value))

    for v in graph.inputs:
        if v.producer is not None or v.data is not None:
            fail(f"graph input %{v.name} must not have a producer or data")
        define(v, f"input %{v.name}")
    for key, v in graph.constants.items():
        if v.data is None:
            fail(f"constant @{key} has no data")
        if key != v.name:
            fail(f"constant @{v.name} is stored under the key {key!r}")
        if tuple(v.data.shape) != v.type.shape or str(v.data.dtype).removeprefix("torch.") != v.type.dtype:
            fail(
                f"constant @{v.name}: its data ({v.data.dtype}, {tuple(v.data.shape)}) does not match its type {v.type}"
            )
        define(v, f"constant @{v.name}")

    node_names: set[str] = set()
    for node in graph.nodes:
        where = f"node {node.name!r} ({node.op})"
        if node.name in node_names:
            fail(f"{where}: another node has the same name")
        node_names.add(node.name)
        if not isinstance(node.op, str):
            fail(f"{where}: the op name must be a string")
        try:
            opdef = get_op(node.op)
        except UnknownOpError as exc:
            fail(f"{where}: {exc}")
        problem = opdef.check_arity(len(node.inputs))
        if problem:
            fail(f"{where}: {problem}")
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                fail(f"{where}: input {i} %{v.name} is used before it is defined (or is not in the graph)")
        try:
            attrs = opdef.normalize_attrs(node.attrs)
        except (ValueError, TypeError) as exc:
            fail(f"{where}: {exc}")
        if attrs != node.attrs:
            fail(f"{where}: attributes {node.attrs} are not in canonical form ({attrs})")
        if not node.outputs:
            fail(f"{where}: has no outputs")
        for v in node.outputs:
            if v.producer is not node:
                fail(f"{where}: output %{v.name} does not name this node as its producer")
            define(v, where)
        try:
            expected = opdef.infer_types([v.type for v in node.inputs], node.attrs)
        except Exception as exc:  # noqa: BLE001 - an op's inference is its own code: any failure is this node's
            fail(f"{where}: shape inference failed: {exc}")
        actual = [v.type for v in node.outputs]
        if expected != actual:
            fail(
                f"{where}: output types {', '.join(map(str, actual))} differ from the inferred "
                f"{', '.join(map(str, expected))}"
            )

        if node.op == "subgraph":
            _verify_call(graph, node, fail, (*callers, id(graph)))

    if not graph.outputs:
        fail("has no outputs")
    for v in graph.outputs:
        if id(v) not in defined:
            fail(f"graph output %{v.name} is not defined in the graph")
    for problem in graph.index_problems():  # an edit behind the graph's methods
        fail(problem)


def _verify_call(graph: Graph, node: Node, fail: Callable[[str], NoReturn], callers: tuple[int, ...]) -> None:
    """A subgraph node must name a subgraph whose signature matches the call, and the callee must verify."""
    where = f"node {node.name!r} (subgraph)"
    name = node.attrs["callee"]
    callee = graph.subgraphs.get(name) if isinstance(name, str) else None
    if callee is None:
        fail(f"{where}: calls subgraph {node.attrs['callee']!r}, which the graph does not hold")
    if [v.type for v in callee.inputs] != [v.type for v in node.inputs]:
        fail(f"{where}: argument types differ from the inputs of subgraph {callee.name!r}")
    if [v.type for v in callee.outputs] != [v.type for v in node.outputs]:
        fail(f"{where}: output types differ from the outputs of subgraph {callee.name!r}")
    _verify(callee, callers)
