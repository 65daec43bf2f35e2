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
multiply-accumulate with `remove_no_mac_subgraphs`, or nothing but constants as inputs. Dissolving a
whole region can never create a cycle among the others (any path through its nodes was a path through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from ..ir.graph import Graph


def node_edges(graph: "Graph") -> tuple[list[set[int]], list[set[int]]]:
    """Successor and predecessor sets of every node, by index in `graph.nodes`."""
    producer = {id(v): i for i, node in enumerate(graph.nodes) for v in node.outputs}
    succ: list[set[int]] = [set() for _ in graph.nodes]
    pred: list[set[int]] = [set() for _ in graph.nodes]
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            p = producer.get(id(v))
            if p is not None:
                succ[p].add(i)
                pred[i].add(p)
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


def form_regions(graph: "Graph", supported: Sequence[bool]) -> list[list[int]]:
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
    csucc: dict[int, set[int]] = {}
    cpred: dict[int, set[int]] = {}
    for i in range(n):
        ci = groups.find(i)
        csucc.setdefault(ci, set())
        cpred.setdefault(ci, set())
        for s in succ[i]:
            cs = groups.find(s)
            if cs != ci:
                csucc[ci].add(cs)
                cpred.setdefault(cs, set()).add(ci)

    def other_path(a: int, b: int) -> bool:
        """Is b reachable from a other than by the edge a -> b?"""
        stack = [c for c in csucc[a] if c != b]
        seen = set(stack)
        while stack:
            c = stack.pop()
            if c == b:
                return True
            for s in csucc[c]:
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def merge(a: int, b: int) -> int:
        keep = groups.union(a, b)
        gone = b if keep == a else a
        for c in csucc.pop(gone):
            cpred[c].discard(gone)
            if c != keep:
                cpred[c].add(keep)
                csucc[keep].add(c)
        for c in cpred.pop(gone):
            csucc[c].discard(gone)
            if c != keep:
                csucc[c].add(keep)
                cpred[keep].add(c)
        csucc[keep].discard(keep)
        cpred[keep].discard(keep)
        return keep

    changed = True
    while changed:
        changed = False
        for a in sorted(csucc):
            if a not in csucc or not supported[a]:
                continue
            for b in sorted(csucc[a]):
                if supported[b] and not other_path(a, b):
                    a = merge(a, b)
                    changed = True
                    break  # a's successors changed; revisit it on the next sweep

    regions: dict[int, list[int]] = {}
    for i in range(n):
        if supported[i]:
            regions.setdefault(groups.find(i), []).append(i)
    return [regions[root] for root in sorted(regions)]


@dataclass(frozen=True)
class Pruned:
    nodes: tuple[int, ...]
    reason: str


def region_macs(graph: "Graph", region: Iterable[int]) -> int:
    total = 0
    for i in region:
        node = graph.nodes[i]
        total += node.opdef.count_macs([v.type for v in node.inputs], [v.type for v in node.outputs],
                                       node.attrs, {})
    return total


def prune_regions(graph: "Graph", regions: list[list[int]], *, min_block_size: int,
                  remove_no_mac_subgraphs: bool, static: Mapping[int, bool]) -> tuple[list[list[int]], list[Pruned]]:
    """Split regions into the kept and the ones handed back to PyTorch (with the reason for each).

    `static[i]` says whether node i computes from constants only.
    """
    kept, pruned = [], []
    for region in regions:
        size = len(region)
        if size < min_block_size:
            pruned.append(Pruned(tuple(region), f"its region has {size} node{'s' * (size != 1)}, fewer than "
                                                f"min_block_size={min_block_size}"))
        elif remove_no_mac_subgraphs and region_macs(graph, region) == 0:
            pruned.append(Pruned(tuple(region), "its region has no multiply-accumulate "
                                                "(remove_no_mac_subgraphs)"))
        elif all(static[i] for i in region):
            pruned.append(Pruned(tuple(region), "its region computes from constants only (no activation "
                                                "inputs); PyTorch computes it"))
        else:
            kept.append(region)
    return kept, pruned
