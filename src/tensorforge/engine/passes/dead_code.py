"""dead_code: remove nodes whose outputs nothing uses, and constants nothing uses.

Why: the other passes leave leftovers — batch-norm statistics after folding, inputs of folded constants —
and partitioned regions can hold nodes whose results only fed ops that went elsewhere. A plan should not
compute or store what it never returns. The counter counts removed nodes (dropped constants are not
counted: they are the normal residue of folding). Graph inputs always stay: they are the plan's signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Graph, copy_graph

if TYPE_CHECKING:
    from . import PassContext

NAME = "dead_code"


def dead_code(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    ctx.count(NAME, graph.erase_unread_nodes())
    return graph
