"""partition_for_tensorforge: mark what the engine takes, group it into regions, cut them out.

A short sequence of steps, each in its own module:
fold what is computed from constants alone (fold.py) ->
annotate every node with `support_reason` (rules.py) -> form cycle-free regions (regions.py) ->
prune regions (regions.py) -> rebuild the graph with one `subgraph` node per region (here) -> report.

The input graph is never modified: the result is a new `ir.Graph` whose nodes and values are fresh
objects (constant tensors are shared, not copied).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch

from ..ir.graph import Graph, Node, Value
from ..ir.ops.opaque import encode_output_type
from ..ir.registry import get_op
from . import fold
from .config import PartitionConfig
from .regions import form_regions, prune_regions, region_macs
from .report import Fallback, Folded, OpCount, PartitionReport, RegionSummary
from .rules import ENGINE_VERSION, SupportContext, support_reason

REGION_PREFIX = "tensorforge"
TARGET = "tensorforge"


def _resolve_capability(device_capability) -> tuple[int, int] | None:
    if device_capability == "auto":
        return torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    return device_capability


def partition_for_tensorforge(
    graph: Graph,
    version: Sequence[int] | None = None,
    use_implicit_batch: bool = True,
    min_block_size: int = 1,
    remove_no_mac_subgraphs: bool = False,
    max_workspace_size: int = 1 << 30,
    torch_executed_ops: Iterable[str] = (),
    device_capability: Sequence[int] | str | None = None,
    fold_constants: bool = True,
    fold_limit_bytes: int = fold.DEFAULT_LIMIT_BYTES,
) -> tuple[Graph, PartitionConfig]:
    """Offload every node the engine supports; return the partitioned graph and the config (with its report).

    - `version`: engine version to target, (major, minor, patch); default the newest (`ENGINE_VERSION`).
      An older version keeps ops added later out, so the plan runs on an older runtime.
    - `use_implicit_batch`: keep ops that change, reduce or mix the batch dimension (axis 0) in PyTorch.
    - `min_block_size`: regions with fewer nodes go back to PyTorch.
    - `remove_no_mac_subgraphs`: regions with no multiply-accumulate go back to PyTorch.
    - `max_workspace_size`: bytes of scratch memory each region's plan may use (read by the builder).
    - `torch_executed_ops`: IR op names that always run through PyTorch.
    - `device_capability`: (major, minor) of the target GPU, gating ops and dtypes that need newer GPUs;
      None applies no capability gate; "auto" asks torch.cuda (None without a GPU).
    - `fold_constants`: first compute what depends on constants only (masks, index tables), once, on the CPU, so
      it becomes weights instead of PyTorch islands between regions (see fold.py); the report lists what folded.
    - `fold_limit_bytes`: no folded result is larger than this (nor, above 1 MiB, larger than what it is
      computed from); such nodes stay, with the reason in `report.not_folded`.

    Each region becomes a `subgraph` node (callee "tensorforge_<i>", target "tensorforge") whose graph is in
    `result.subgraphs`; everything else stays as ordinary nodes. The input graph is not modified. Constants
    move to the graphs that use them (a region's into its subgraph); constants nothing uses are dropped.
    """
    # PartitionConfig checks and normalizes what the caller gives (a list, one op name as a str, ...)
    options = PartitionConfig(
        version=cast(Any, version) if version is not None else ENGINE_VERSION,
        use_implicit_batch=use_implicit_batch,
        min_block_size=min_block_size,
        remove_no_mac_subgraphs=remove_no_mac_subgraphs,
        max_workspace_size=max_workspace_size,
        torch_executed_ops=cast(Any, torch_executed_ops),
        device_capability=_resolve_capability(device_capability),
        fold_constants=fold_constants,
        fold_limit_bytes=fold_limit_bytes,
    )
    if graph.subgraphs or any(n.op == "subgraph" for n in graph.nodes):
        raise ValueError(f"graph {graph.name!r} is already partitioned (it has subgraph nodes)")
    folding = (
        fold.fold_constants(graph, options.fold_limit_bytes)
        if options.fold_constants
        else fold.FoldResult(graph, (), ())
    )
    graph = folding.graph

    ctx = SupportContext(
        graph=graph,
        version=options.version,
        use_implicit_batch=options.use_implicit_batch,
        device_capability=options.device_capability,
        torch_executed_ops=frozenset(options.torch_executed_ops),
    )
    reasons: list[str | None] = [support_reason(node, ctx) for node in graph.nodes]
    regions = form_regions(graph, [r is None for r in reasons])
    regions, pruned = prune_regions(
        graph, regions, min_block_size=options.min_block_size, remove_no_mac_subgraphs=options.remove_no_mac_subgraphs
    )
    for p in pruned:
        for i in p.nodes:
            reasons[i] = p.reason

    new_graph, names = _rebuild(graph, regions)
    report = _report(graph, new_graph, regions, names, reasons, folding)
    return new_graph, dataclasses.replace(options, report=report)


# ---------------------------------------------------------------------------------------------
# Rebuilding the graph
# ---------------------------------------------------------------------------------------------


def _order_clusters(graph: Graph, cluster_of: list[int]) -> list[int]:
    """Clusters (regions and single PyTorch nodes) in a topological order close to the original one."""
    position = {node: i for i, node in enumerate(graph.nodes)}
    succ: dict[int, set[int]] = {}
    indegree: Counter = Counter()
    first: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        c = cluster_of[i]
        first.setdefault(c, i)
        succ.setdefault(c, set())
        for v in node.inputs:
            p = position.get(v.producer) if v.producer is not None else None
            if p is not None and cluster_of[p] != c and c not in succ[cluster_of[p]]:
                succ[cluster_of[p]].add(c)
                indegree[c] += 1
    ready = [(first[c], c) for c in succ if indegree[c] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, c = heapq.heappop(ready)
        order.append(c)
        for s in succ[c]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, (first[s], s))
    if len(order) != len(succ):  # regions.py guarantees this never happens
        raise RuntimeError("internal error: the engine regions form a cycle")
    return order


def _copy_node(graph: Graph, node: Node, vmap: dict[int, Value]) -> Node:
    copy = graph.create_node(
        node.name,
        node.op,
        [vmap[id(v)] for v in node.inputs],
        dict(node.attrs),
        [(v.name, v.type) for v in node.outputs],
    )
    for old, new in zip(node.outputs, copy.outputs):
        vmap[id(old)] = new
    return copy


def _copy_constant(graph: Graph, value: Value) -> Value:
    assert value.data is not None, f"{value.name} is not a constant"
    return graph.add_constant(value.data, value.name, exact=True)


def _region_graph(name: str, nodes: list[Node], used_outside: set[int]) -> tuple[Graph, list[Value], list[Value]]:
    """The region as a graph of its own (its inputs, the constants it uses, its nodes, its outputs), with
    the outer values that feed its inputs and the original values its outputs stand for."""
    sub = Graph(name)
    inside = {id(v) for n in nodes for v in n.outputs}
    vmap: dict[int, Value] = {}
    feeds: list[Value] = []
    for node in nodes:
        for v in node.inputs:
            if id(v) in vmap or id(v) in inside:
                continue
            if v.data is not None:
                vmap[id(v)] = _copy_constant(sub, v)
            else:
                vmap[id(v)] = sub.add_input(v.name, v.type)
                feeds.append(v)
        _copy_node(sub, node, vmap)
    results = [v for n in nodes for v in n.outputs if id(v) in used_outside]
    if not results:  # nothing uses the region: keep its dead values as outputs rather than lose them
        results = [v for n in nodes for v in n.outputs]
    sub.set_outputs([vmap[id(v)] for v in results])
    return sub, feeds, results


def _rebuild(graph: Graph, regions: list[list[int]]) -> tuple[Graph, dict[int, str]]:
    """The partitioned graph, and the name of each kept region (keyed by its first node index, in the
    order the regions appear in the new graph)."""
    cluster_of = list(range(len(graph.nodes)))
    for region in regions:
        for i in region:
            cluster_of[i] = region[0]
    members: dict[int, list[int]] = {}
    for i, c in enumerate(cluster_of):
        members.setdefault(c, []).append(i)
    region_roots = {region[0] for region in regions}

    # values needed outside their region: by another cluster or as graph outputs
    position = {node: i for i, node in enumerate(graph.nodes)}
    used_outside = {
        id(v)
        for i, node in enumerate(graph.nodes)
        for v in node.outputs
        if graph.is_output(v) or any(cluster_of[position[u]] != cluster_of[i] for u in graph.users_of(v))
    }

    new = Graph(graph.name)
    new.symbol_ranges = dict(graph.symbol_ranges)  # the model's declared size ranges bound the profiles built later
    original_names = {n.name for n in graph.nodes}  # region nodes get names no original node has
    vmap: dict[int, Value] = {}
    for v in graph.inputs:
        vmap[id(v)] = new.add_input(v.name, v.type)
    # constants the top level still uses (by a PyTorch node, or as a graph output)
    outer_uses = [v for i, n in enumerate(graph.nodes) if cluster_of[i] not in region_roots for v in n.inputs]
    for v in outer_uses + list(graph.outputs):
        if v.data is not None and id(v) not in vmap:
            vmap[id(v)] = _copy_constant(new, v)

    names: dict[int, str] = {}
    for c in _order_clusters(graph, cluster_of):
        if c not in region_roots:
            _copy_node(new, graph.nodes[c], vmap)
            continue
        name = f"{REGION_PREFIX}_{len(names)}"
        names[c] = name
        sub, feeds, results = _region_graph(name, [graph.nodes[i] for i in members[c]], used_outside)
        new.subgraphs[name] = sub
        attrs = get_op("subgraph").normalize_attrs(
            {"callee": name, "target": TARGET, "output_types": tuple(encode_output_type(v.type) for v in results)}
        )
        call = new.create_node(
            new.fresh_node_name(name, avoid=original_names),
            "subgraph",
            [vmap[id(v)] for v in feeds],
            attrs,
            [(v.name, v.type) for v in results],
        )  # named as in the original graph
        for old, value in zip(results, call.outputs):
            vmap[id(old)] = value
    new.set_outputs([vmap[id(v)] for v in graph.outputs])
    return new, names


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _report(
    graph: Graph,
    new_graph: Graph,
    regions: list[list[int]],
    names: dict[int, str],
    reasons: list[str | None],
    folding: fold.FoldResult,
) -> PartitionReport:
    """`graph` is the graph the regions were formed on (after folding); folded nodes are counted apart."""
    offloaded = {i for region in regions for i in region}
    totals = Counter(n.op for n in graph.nodes)
    done = Counter(graph.nodes[i].op for i in offloaded)
    total_macs = region_macs(graph, range(len(graph.nodes)))
    by_root = {region[0]: region for region in regions}
    summaries = []
    for root, name in names.items():
        region, sub = by_root[root], new_graph.subgraphs[name]
        summaries.append(
            RegionSummary(
                name=sub.name,
                num_nodes=len(region),
                macs=region_macs(graph, region),
                inputs=tuple((v.name, str(v.type)) for v in sub.inputs),
                outputs=tuple((v.name, str(v.type)) for v in sub.outputs),
            )
        )
    grouped: dict[tuple[str, str], list[str]] = {}
    for i, node in enumerate(graph.nodes):
        if i not in offloaded:
            grouped.setdefault((node.op, reasons[i] or "not in any region"), []).append(node.name)
    folded: dict[str, list[str]] = {}
    for node in folding.folded:
        folded.setdefault(node.op, []).append(node.name)
    not_folded: dict[tuple[str, str], list[str]] = {}
    for node, reason in folding.not_folded:
        not_folded.setdefault((node.op, reason), []).append(node.name)
    return PartitionReport(
        graph=graph.name,
        op_counts=tuple(OpCount(op, totals[op], done[op]) for op in sorted(totals)),
        total_macs=total_macs,
        offloaded_macs=region_macs(graph, offloaded),
        regions=tuple(summaries),
        fallbacks=tuple(Fallback(op, reason, tuple(nodes)) for (op, reason), nodes in sorted(grouped.items())),
        folded=tuple(Folded(op, tuple(nodes)) for op, nodes in sorted(folded.items())),
        not_folded=tuple(Fallback(op, reason, tuple(nodes)) for (op, reason), nodes in sorted(not_folded.items())),
    )
