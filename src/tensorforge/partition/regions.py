"""Engine regions: supported nodes merged into maximal groups that never create a cycle.

A region becomes one `subgraph` node, so it must be convex: no path may leave it and come back in
(through a PyTorch node or through another region), or the region node would depend on itself.

Two steps, both over node indices in the graph's topological order:

1. **Levels** (linear time). Each node gets a level: the most engine/PyTorch boundaries on any path
   into it. Supported nodes joined by an edge and on the same level form one group. Any path that leaves
   a group crosses into PyTorch and back, which costs two levels, so it can never re-enter its group:
   the groups are acyclic by construction. This merges almost everything in common models.
2. **Greedy merging** on the condensed graph (groups and PyTorch nodes). Levels are conservative (a node
   fed by a late PyTorch node starts a new level even where no cycle could form), so each edge between
   two engine groups is tried: the merge happens unless another path joins them (through some third
   cluster), which a depth-first search on the small condensed graph decides. Repeat until nothing merges.

Pruning (`prune_regions`) then hands regions back to PyTorch: too small for `min_block_size`, no
multiply-accumulate with `remove_no_mac_subgraphs`, no inputs (constants only), or inputs that do not
carry a symbolic size the region uses. Dissolving a
whole region can never create a cycle among the others (any path through its nodes was a path through it).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ir.symbolic import SymExpr

if TYPE_CHECKING:
    from ..ir.graph import Graph, Value


def node_edges(graph: Graph) -> tuple[list[set[int]], list[set[int]]]:
    """Successor and predecessor sets of every node, by index in `graph.nodes` (from the graph's def-use index)."""
    position = {node: i for i, node in enumerate(graph.nodes)}
    succ: list[set[int]] = [{position[u] for v in node.outputs for u in graph.users_of(v)} for node in graph.nodes]
    pred: list[set[int]] = [set() for _ in graph.nodes]
    for i, targets in enumerate(succ):
        for t in targets:
            pred[t].add(i)
    return succ, pred


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the root is the earliest node
        return min(a, b)


class _Condensed:
    """The graph of clusters (engine groups and single PyTorch nodes), kept in a topological order.

    `pos` is a topological numbering, so a search for a path to b never needs to look past pos[b]. A merge
    reorders only the clusters between the two merged ones (the dynamic topological sort of Pearce and
    Kelly): what a reaches goes after the merged cluster, what reaches b goes before it.
    """

    def __init__(self, groups: _UnionFind, node_succ: list[set[int]], supported: Sequence[bool]):
        self.groups = groups
        self.supported = supported  # by cluster root (the root is one of the cluster's nodes)
        self.blocked: set[tuple[int, int]] = set()
        self.succ: dict[int, set[int]] = {}
        self.pred: dict[int, set[int]] = {}
        for i, targets in enumerate(node_succ):
            ci = groups.find(i)
            self.succ.setdefault(ci, set())
            self.pred.setdefault(ci, set())
            for t in targets:
                ct = groups.find(t)
                if ct != ci:
                    self.succ[ci].add(ct)
                    self.pred.setdefault(ct, set()).add(ci)
        # a topological order of the clusters (Kahn, ties by first node)
        indegree = {c: len(p) for c, p in self.pred.items()}
        ready = sorted(c for c, d in indegree.items() if d == 0)
        self.pos: dict[int, int] = {}
        while ready:
            c = heapq.heappop(ready)
            self.pos[c] = len(self.pos)
            for s in self.succ[c]:
                indegree[s] -= 1
                if indegree[s] == 0:
                    heapq.heappush(ready, s)

    def in_order(self) -> list[int]:
        return sorted(self.succ, key=self.pos.__getitem__)

    def _search(self, start: Iterable[int], edges: dict[int, set[int]], inside) -> set[int]:
        seen = set()
        stack = [c for c in start if inside(c)]
        while stack:
            c = stack.pop()
            if c not in seen:
                seen.add(c)
                stack.extend(x for x in edges[c] if x not in seen and inside(x))
        return seen

    def try_merge(self, a: int, b: int) -> bool:
        """Merge clusters a and b (an edge a -> b) unless another path joins them; say whether it did."""
        if (a, b) in self.blocked:
            return False
        lo, hi = self.pos[a], self.pos[b]
        between = lambda c: lo < self.pos[c] <= hi  # noqa: E731
        after_a = self._search(self.succ[a] - {b}, self.succ, between)
        if b in after_a:  # a -> ... -> b through a third cluster: merging would close a cycle
            # through a PyTorch node, that path stays whatever merges later: never try this pair again
            if b in self._search([c for c in after_a if not self.supported[c]], self.succ, between):
                self.blocked.add((a, b))
            return False
        before_b = self._search(self.pred[b] - {a}, self.pred, lambda c: lo < self.pos[c] < hi)
        slots = sorted([lo, hi] + [self.pos[c] for c in after_a | before_b])
        by_pos = self.pos.__getitem__
        keep = self.groups.union(a, b)
        gone = b if keep == a else a
        order = sorted(before_b, key=by_pos) + [keep]
        for c, slot in zip(order, slots):
            self.pos[c] = slot
        for c, slot in zip(sorted(after_a, key=by_pos), slots[len(order) + 1 :]):
            self.pos[c] = slot
        del self.pos[gone]
        for c in self.succ.pop(gone):
            self.pred[c].discard(gone)
            if c != keep:
                self.pred[c].add(keep)
                self.succ[keep].add(c)
        for c in self.pred.pop(gone):
            self.succ[c].discard(gone)
            if c != keep:
                self.succ[c].add(keep)
                self.pred[keep].add(c)
        self.succ[keep].discard(keep)
        self.pred[keep].discard(keep)
        return True


def form_regions(graph: Graph, supported: Sequence[bool]) -> list[list[int]]:
    """Maximal cycle-free groups of supported nodes, each a sorted list of node indices."""
    n = len(graph.nodes)
    succ, pred = node_edges(graph)
    groups = _UnionFind(n)

    # step 1: levels
    level = [0] * n
    for i in range(n):
        for p in pred[i]:
            level[i] = max(level[i], level[p] + (supported[p] != supported[i]))
    for i in range(n):
        if supported[i]:
            for p in pred[i]:
                if supported[p] and level[p] == level[i]:
                    groups.union(p, i)

    # step 2: greedy merging on the condensed graph
    condensed = _Condensed(groups, succ, supported)
    changed = True
    while changed:
        changed = False
        for a in condensed.in_order():
            if a not in condensed.succ or not supported[a]:
                continue
            for b in sorted(condensed.succ[a], key=condensed.pos.__getitem__):
                if supported[b] and condensed.try_merge(a, b):
                    changed = True
                    break  # a's successors changed; it is revisited on the next sweep

    regions: dict[int, list[int]] = {}
    for i in range(n):
        if supported[i]:
            regions.setdefault(groups.find(i), []).append(i)
    return [regions[root] for root in sorted(regions)]


@dataclass(frozen=True)
class Pruned:
    nodes: tuple[int, ...]
    reason: str


def region_macs(graph: Graph, region: Iterable[int]) -> int:
    total = 0
    for i in region:
        node = graph.nodes[i]
        total += node.opdef.count_macs([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs, {})
    return total


def region_inputs(graph: Graph, region: Iterable[int]) -> list[Value]:
    """Values a region reads from outside (graph inputs, other nodes' outputs; not constants), in first use."""
    nodes = [graph.nodes[i] for i in region]
    inside = {id(v) for n in nodes for v in n.outputs}
    found: dict[int, Value] = {}
    for n in nodes:
        for v in n.inputs:
            if v.data is None and id(v) not in inside:
                found.setdefault(id(v), v)
    return list(found.values())


def symbols_in(value) -> set[str]:
    """The symbols an attribute value names (opaque nodes nest them in tuples and dicts)."""
    if isinstance(value, SymExpr):
        return set(value.free_symbols)
    if isinstance(value, (tuple, list)):
        return set().union(*map(symbols_in, value)) if value else set()
    if isinstance(value, dict):
        return symbols_in(tuple(value.values()))
    return set()


def prune_regions(
    graph: Graph, regions: list[list[int]], *, min_block_size: int, remove_no_mac_subgraphs: bool
) -> tuple[list[list[int]], list[Pruned]]:
    """Split regions into the kept and the ones handed back to PyTorch (with the reason for each).

    Besides the two options, a region must read something from outside (a region of constants only is
    PyTorch's to compute once), and its inputs must carry every symbolic size its nodes use: a region cannot
    learn the batch size from nothing.
    """
    kept, pruned = [], []
    for region in regions:
        size = len(region)
        inputs = region_inputs(graph, region)
        bound = set().union(*(v.type.symbols for v in inputs)) if inputs else set()
        used = set()
        for i in region:
            node = graph.nodes[i]
            used |= symbols_in(tuple(node.attrs.values())) | set().union(*(v.type.symbols for v in node.outputs))
        if size < min_block_size:
            pruned.append(
                Pruned(
                    tuple(region),
                    f"its region has {size} node{'s' * (size != 1)}, fewer than min_block_size={min_block_size}",
                )
            )
        elif remove_no_mac_subgraphs and region_macs(graph, region) == 0:
            pruned.append(Pruned(tuple(region), "its region has no multiply-accumulate (remove_no_mac_subgraphs)"))
        elif used - bound:
            missing = ", ".join(sorted(used - bound))
            pruned.append(
                Pruned(tuple(region), f"its region uses the size {missing}, which none of its inputs carries")
            )
        elif not inputs:
            pruned.append(Pruned(tuple(region), "its region has no inputs (it computes from constants only)"))
        else:
            kept.append(region)
    return kept, pruned
