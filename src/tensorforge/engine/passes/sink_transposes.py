"""sink_transposes: move a transpose below the cast or row-wise dense layer that reads it.

Why: a GEMM reads its input as rows, so a transposed input must first be copied into row order; a cast
of a transposed tensor writes a copy too. Both commute with a transpose that keeps the last axis in place:

    cast(transpose(x, p))          ->  transpose(cast(x), p)
    engine.dense(transpose(x, p))  ->  transpose(engine.dense(x), p)      (p[-1] is the last axis)

The GEMM then reads `x` as it is, and the transpose lands after it, where it is a free view — often the head
of a chain of views that `fold_view_chains` turns into one strided view (nn.MultiheadAttention transposes
its input to (L, B, E) before the packed Q/K/V projection). Only a transpose read by that one layer moves
(otherwise the copy would stay for its other readers), and only a dense layer without a residual input (the
residual would have to move too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Graph, Node, copy_graph
from ..epilogue import Epilogue
from ._edit import erase_and_rename

if TYPE_CHECKING:
    from . import PassContext

NAME = "sink_transposes"


def _movable(graph: Graph, node: Node, transpose: Node) -> bool:
    """Whether `transpose`, which makes `node`'s first input, can move below `node`."""
    if graph.use_count(transpose.outputs[0]) != 1:
        return False
    axes = transpose.attrs["axes"]
    if node.op == "cast":
        return True
    return (
        node.op == "engine.dense"
        and not Epilogue.of(node).has_residual
        and axes is not None
        and axes[-1] == len(axes) - 1
    )


def sink_transposes(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    moved = 0
    for node in graph.nodes:
        transpose = node.inputs[0].producer if node.inputs else None
        if node.op not in ("cast", "engine.dense") or transpose is None or transpose.op != "transpose":
            continue
        if not _movable(graph, node, transpose):
            continue
        out = node.outputs[0]
        inner = graph.add_node(
            node.op,
            [transpose.inputs[0], *node.inputs[1:]],
            node.attrs,
            name=node.name,
            output_names=[f"{out.name}.untransposed"],
            before=node,
        )
        outer = graph.add_node("transpose", inner.outputs, transpose.attrs, name=transpose.name, before=node)
        graph.replace_all_uses(out, outer.outputs[0])
        erase_and_rename(
            graph, [transpose, node], [(inner, node.name), (outer, transpose.name), (outer.outputs[0], out.name)]
        )
        moved += 1
    ctx.count(NAME, moved)
    return graph
