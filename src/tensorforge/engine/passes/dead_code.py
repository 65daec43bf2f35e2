"""dead_code: remove nodes whose outputs nothing uses, and constants nothing uses.

Why: the other passes leave leftovers — batch-norm statistics after folding, inputs of folded constants —
and partitioned regions can hold nodes whose results only fed ops that went elsewhere. A plan should not
compute or store what it never returns. The counter counts removed nodes (dropped constants are not
counted: they are the normal residue of folding). Graph inputs always stay: they are the plan's signature.
"""

from __future__ import annotations

from ...ir import Graph
from ._edit import copy_graph, drop_unused_constants

NAME = "dead_code"


def dead_code(graph: Graph, ctx) -> Graph:
    graph = copy_graph(graph)
    live = {id(v) for v in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            kept.append(node)
            live.update(id(v) for v in node.inputs)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    drop_unused_constants(graph)
    ctx.count(NAME, removed)
    return graph
