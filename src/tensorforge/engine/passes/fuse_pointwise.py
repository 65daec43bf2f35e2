"""fuse_pointwise: maximal connected groups of elementwise nodes become one `engine.pointwise` layer each.

Why: an elementwise op does almost no arithmetic per byte, so unfused each one is a full read and write of
its tensor plus a kernel launch — BERT's embedding sums, scale and mask arithmetic, activation chains that
no conv/dense epilogue took. One generated kernel per group (`tactics/pointwise_triton.py`) reads every
input once and writes every output once; intermediate values stay in registers.

What joins a group (after `fuse_bias_activation`, which already took the epilogues of engine.conv/dense):
- nodes whose op is in `pointwise.FUSED_OPS`, whose types are in `POINTWISE_DTYPES` and whose result is
  used (dead nodes are left to `dead_code`);
- joined along producer -> consumer edges, greedily, until nothing merges, where a merge keeps the group
  **convex** (no path leaves the group and comes back, through another node or another group, or the fused
  node would depend on itself) and **one-domain**: the group's outputs — values used outside it or graph
  outputs — broadcast to one shape, the domain the kernel iterates over (smaller outputs are written once,
  inputs and intermediates broadcast into it);
- an `nn.bias_add`'s bias comes from outside the group (kernels map a bias onto its axis only at a load).

Groups of one node stay as they are (nothing to save). 1-element constants become literals of the program.
The fused node keeps the names of the values it produces; the counter counts fused groups.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...ir import Graph, Node, Value, copy_graph
from ..pointwise import FUSED_OPS, POINTWISE_DTYPES, broadcast_dims
from ._edit import erase_and_rename

if TYPE_CHECKING:
    from . import PassContext

NAME = "fuse_pointwise"


class _Groups:
    """Union-find over node indices, with each group's members and a convexity check on the grouped graph."""

    def __init__(self, graph: Graph, candidate: list[bool]):
        self.graph = graph
        self.nodes = graph.nodes
        self.candidate = candidate
        self.index = {node: i for i, node in enumerate(self.nodes)}
        # successors by index, from the graph's def-use index
        self.succ: list[set[int]] = [{self.index[u] for v in n.outputs for u in graph.users_of(v)} for n in self.nodes]
        self.parent = list(range(len(self.nodes)))
        self.members = {i: [i] for i in range(len(self.nodes))}

    def producer(self, value: Value) -> int | None:
        """The index of the node that makes `value` (None for inputs and constants)."""
        return self.index.get(value.producer) if value.producer is not None else None

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def outputs(self, group: set[int]) -> list[Value]:
        """Values made in `group` that something outside it reads (or that the graph returns), in node order."""
        made = [self.nodes[i].output for i in sorted(group)]
        return [
            v
            for v in made
            if self.graph.is_output(v) or any(self.index[u] not in group for u in self.graph.users_of(v))
        ]

    def _closes_cycle(self, group: set[int]) -> bool:
        """Whether some path leaves `group` and comes back; a path that enters another group may leave it from
        any of its members (the fused node depends on all of their inputs)."""
        stack = [s for i in group for s in self.succ[i] if s not in group]
        seen: set[int] = set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            for m in self.members[self.find(n)]:
                seen.add(m)
                for s in self.succ[m]:
                    if s in group:
                        return True
                    if s not in seen:
                        stack.append(s)
        return False

    def try_merge(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        group = set(self.members[ra]) | set(self.members[rb])
        if broadcast_dims([v.type.shape for v in self.outputs(group)]) is None:
            return False  # no one domain for all outputs
        if any(self.nodes[i].op == "nn.bias_add" and self.producer(self.nodes[i].inputs[1]) in group for i in group):
            return False
        if self._closes_cycle(group):
            return False
        keep, gone = min(ra, rb), max(ra, rb)
        self.parent[gone] = keep
        self.members[keep] = sorted(group)
        del self.members[gone]
        return True


def _fusable(node: Node, live: set[int]) -> bool:
    return (
        node.op in FUSED_OPS
        and len(node.outputs) == 1
        and id(node.output) in live
        and all(v.type.dtype in POINTWISE_DTYPES for v in (*node.inputs, node.output))
    )


def group_program(nodes: Sequence[Node], outputs: Sequence[Value]) -> tuple[list[Value], dict[str, Any]] | None:
    """(inputs, attributes) of the engine.pointwise node computing `nodes` (in order) and returning `outputs`, or
    None when the group reads no tensor (only literals: constant folding's business)."""
    ssa: dict[int, int] = {}
    program: list[tuple[Any, ...]] = []  # one instruction per SSA slot
    inputs: list[Value] = []

    def operand(v: Value) -> int:
        if id(v) not in ssa:
            if v.data is not None and v.data.numel() == 1:
                program.append(("const", v.data.item(), v.type.dtype, v.type.shape))
            else:
                program.append(("load", len(inputs)))
                inputs.append(v)
            ssa[id(v)] = len(program) - 1
        return ssa[id(v)]

    for node in nodes:
        args = tuple(operand(v) for v in node.inputs)
        program.append((node.op, args, tuple(node.attrs.items())))
        ssa[id(node.output)] = len(program) - 1
    if not inputs:
        return None
    return inputs, {"program": tuple(program), "outputs": tuple(ssa[id(v)] for v in outputs)}


def _add_layer(graph: Graph, nodes: list[Node], outputs: list[Value]) -> Node | None:
    """The group's engine.pointwise node, added at the end of the graph (every input is defined by then)."""
    found = group_program(nodes, outputs)
    if found is None:
        return None
    inputs, attrs = found
    layer = graph.add_node(
        "engine.pointwise", inputs, attrs, name=nodes[-1].name, output_names=[v.name for v in outputs]
    )
    if [v.type for v in layer.outputs] != [v.type for v in outputs]:
        raise RuntimeError(
            f"{NAME}: the program of {nodes[-1].name!r} infers {[str(v.type) for v in layer.outputs]}, "
            f"the nodes it replaces made {[str(v.type) for v in outputs]}"
        )
    return layer


def _reorder(nodes: Sequence[Node], cluster: list[int], layers: dict[int, Node]) -> list[Node]:
    """Every node in a topological order with each fused group together: its members (in their order) and then its
    layer, where the group as one node goes (Kahn over the groups; ties by earliest original node)."""
    clusters = sorted(set(cluster))
    cluster_of = {node: cluster[i] for i, node in enumerate(nodes)}
    members: dict[int, list[Node]] = {}
    preds: dict[int, set[int]] = {c: set() for c in clusters}
    for i, node in enumerate(nodes):
        members.setdefault(cluster[i], []).append(node)
        for v in node.inputs:
            p = cluster_of.get(v.producer) if v.producer is not None else None
            if p is not None and p != cluster[i]:
                preds[cluster[i]].add(p)
    succs: dict[int, list[int]] = {c: [] for c in clusters}
    for c, ps in preds.items():
        for p in ps:
            succs[p].append(c)
    waiting = {c: len(ps) for c, ps in preds.items()}
    ready = [c for c in clusters if not waiting[c]]
    heapq.heapify(ready)
    order: list[Node] = []
    placed = 0
    while ready:
        c = heapq.heappop(ready)
        placed += 1
        order += members[c] + ([layers[c]] if c in layers else [])
        for s in succs[c]:
            waiting[s] -= 1
            if not waiting[s]:
                heapq.heappush(ready, s)
    if placed != len(clusters):
        raise RuntimeError(f"{NAME}: the fused groups form a cycle (an internal error of the convexity check)")
    return order


def fuse_pointwise(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    nodes = graph.nodes
    live = {id(v) for n in nodes for v in n.outputs if graph.use_count(v)}
    candidate = [_fusable(n, live) for n in nodes]
    groups = _Groups(graph, candidate)
    changed = True
    while changed:  # a merge can make another possible (a path through a third node joins the group)
        changed = False
        for i, node in enumerate(nodes):
            if not candidate[i]:
                continue
            for v in node.inputs:
                p = groups.producer(v)
                if p is not None and candidate[p] and groups.find(p) != groups.find(i) and groups.try_merge(p, i):
                    changed = True

    # every group's outputs first: a layer added to the graph reads values of other groups
    outputs_of = {root: groups.outputs(set(members)) for root, members in groups.members.items() if len(members) > 1}
    fused: dict[int, tuple[Node, list[Node], list[Value]]] = {}  # group root -> (layer, members, outputs)
    for root, outputs in outputs_of.items():
        members = groups.members[root]
        layer = _add_layer(graph, [nodes[i] for i in members], outputs)
        if layer is not None:
            fused[root] = layer, [nodes[i] for i in members], outputs
    if not fused:
        ctx.count(NAME, 0)
        return graph
    cluster = [groups.find(i) if groups.find(i) in fused else i for i in range(len(nodes))]
    graph.set_order(_reorder(nodes, cluster, {root: layer for root, (layer, _, _) in fused.items()}))
    for layer, replaced, outputs in fused.values():
        for old, new in zip(outputs, layer.outputs):
            graph.replace_all_uses(old, new, skip=replaced)
        erase_and_rename(graph, replaced, [(layer, replaced[-1].name), *zip(layer.outputs, (v.name for v in outputs))])
    ctx.count(NAME, len(fused))
    return graph
