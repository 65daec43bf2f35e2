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

from ...ir import Graph
from ..pointwise import FUSED_OPS, POINTWISE_DTYPES, broadcast_dims
from ._edit import copy_graph, make_node

NAME = "fuse_pointwise"


class _Groups:
    """Union-find over node indices, with each group's members and a convexity check on the grouped graph."""

    def __init__(self, graph: Graph, candidate: list[bool]):
        self.nodes = graph.nodes
        self.candidate = candidate
        index = {id(v): i for i, n in enumerate(graph.nodes) for v in n.outputs}
        self.producer = index
        self.value_users: dict[int, list[int]] = {}
        self.succ: list[set[int]] = [set() for _ in graph.nodes]
        for i, node in enumerate(graph.nodes):
            for v in node.inputs:
                self.value_users.setdefault(id(v), []).append(i)
                if id(v) in index:
                    self.succ[index[id(v)]].add(i)
        self.graph_outputs = {id(v) for v in graph.outputs}
        self.parent = list(range(len(graph.nodes)))
        self.members = {i: [i] for i in range(len(graph.nodes))}

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def outputs(self, group: set[int]) -> list:
        """Values made in `group` that something outside it reads (or that the graph returns), in node order."""
        return [self.nodes[i].output for i in sorted(group)
                if id(self.nodes[i].output) in self.graph_outputs
                or any(u not in group for u in self.value_users.get(id(self.nodes[i].output), ()))]

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
        if any(self.nodes[i].op == "nn.bias_add" and self.producer.get(id(self.nodes[i].inputs[1])) in group
               for i in group):
            return False
        if self._closes_cycle(group):
            return False
        keep, gone = min(ra, rb), max(ra, rb)
        self.parent[gone] = keep
        self.members[keep] = sorted(group)
        del self.members[gone]
        return True


def _fusable(node, live: set[int]) -> bool:
    return (node.op in FUSED_OPS and len(node.outputs) == 1 and id(node.output) in live
            and all(v.type.dtype in POINTWISE_DTYPES for v in (*node.inputs, node.output)))


def group_layer(nodes: list, outputs: list):
    """The engine.pointwise node computing `nodes` (in order) and returning `outputs`, or None without inputs."""
    ssa: dict[int, int] = {}
    program: list[tuple] = []
    inputs: list = []

    def operand(v) -> int:
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
        return None  # only literals: constant folding's business
    attrs = {"program": tuple(program), "outputs": tuple(ssa[id(v)] for v in outputs)}
    layer = make_node("engine.pointwise", inputs, attrs, name=nodes[-1].name, output_names=[v.name for v in outputs])
    if [v.type for v in layer.outputs] != [v.type for v in outputs]:
        raise RuntimeError(f"{NAME}: the program of {nodes[-1].name!r} infers {[str(v.type) for v in layer.outputs]}, "
                           f"the nodes it replaces made {[str(v.type) for v in outputs]}")
    return layer


def _reorder(nodes: list, cluster: list[int], layers: dict[int, object]) -> list:
    """Nodes in a topological order with each fused group as one node (Kahn; ties by earliest original node)."""
    clusters = sorted(set(cluster))
    producer = {id(v): cluster[i] for i, n in enumerate(nodes) for v in n.outputs}
    preds: dict[int, set[int]] = {c: set() for c in clusters}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            p = producer.get(id(v))
            if p is not None and p != cluster[i]:
                preds[cluster[i]].add(p)
    succs: dict[int, list[int]] = {c: [] for c in clusters}
    for c, ps in preds.items():
        for p in ps:
            succs[p].append(c)
    waiting = {c: len(ps) for c, ps in preds.items()}
    ready = [c for c in clusters if not waiting[c]]
    heapq.heapify(ready)
    order = []
    while ready:
        c = heapq.heappop(ready)
        order.append(layers.get(c, nodes[c]))
        for s in succs[c]:
            waiting[s] -= 1
            if not waiting[s]:
                heapq.heappush(ready, s)
    if len(order) != len(clusters):
        raise RuntimeError(f"{NAME}: the fused groups form a cycle (an internal error of the convexity check)")
    return order


def fuse_pointwise(graph: Graph, ctx) -> Graph:
    graph = copy_graph(graph)
    live = {id(v) for n in graph.nodes for v in n.inputs} | {id(v) for v in graph.outputs}
    candidate = [_fusable(n, live) for n in graph.nodes]
    groups = _Groups(graph, candidate)
    changed = True
    while changed:  # a merge can make another possible (a path through a third node joins the group)
        changed = False
        for i, node in enumerate(graph.nodes):
            if not candidate[i]:
                continue
            for v in node.inputs:
                p = groups.producer.get(id(v))
                if p is not None and candidate[p] and groups.find(p) != groups.find(i) and groups.try_merge(p, i):
                    changed = True

    layers: dict[int, object] = {}
    replaced: dict[int, object] = {}
    for root, members in groups.members.items():
        if len(members) < 2:
            continue
        outputs = groups.outputs(set(members))
        layer = group_layer([graph.nodes[i] for i in members], outputs)
        if layer is None:
            continue
        layers[root] = layer
        replaced.update({id(old): new for old, new in zip(outputs, layer.outputs)})
    if not layers:
        ctx.count(NAME, 0)
        return graph
    cluster = [groups.find(i) if groups.find(i) in layers else i for i in range(len(graph.nodes))]
    graph.nodes = _reorder(graph.nodes, cluster, layers)
    for node in graph.nodes:
        node.inputs = [replaced.get(id(v), v) for v in node.inputs]
    graph.outputs = [replaced.get(id(v), v) for v in graph.outputs]
    ctx.count(NAME, len(layers))
    return graph
