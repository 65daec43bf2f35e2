"""fuse_horizontal_dense: dense layers that read the same input become one wider GEMM and a split.

Why: attention's Q, K and V projections (and any other fan-out of linear layers) each read the whole input
and launch their own GEMM; at small batch each of those GEMMs is too small to fill the GPU. One GEMM
with the weights stacked ([Wq; Wk; Wv]) reads the input once and runs at a shape the GPU likes; the
`split` that follows is free (its pieces are views of the wide result).

Fused: two or more `engine.dense` nodes with the same data input, constant weights (and constant biases
when they have one), the same epilogue (bias or not, activation and its attributes) and no residual.
"""

from __future__ import annotations

import torch

from ...ir import Graph
from ._edit import copy_graph

NAME = "fuse_horizontal_dense"


def _key(node):
    a = node.attrs
    if node.op != "engine.dense" or a["has_residual"] or node.inputs[1].data is None:
        return None
    if a["has_bias"] and node.inputs[2].data is None:
        return None
    return (
        id(node.inputs[0]),
        node.inputs[1].type.dtype,
        node.inputs[1].type.shape[1:],
        a["has_bias"],
        a["activation"],
        a["activation_attrs"],
    )


def fuse_horizontal_dense(graph: Graph, ctx) -> Graph:
    graph = copy_graph(graph)
    groups: dict[tuple, list] = {}
    for node in graph.nodes:
        key = _key(node)
        if key is not None:
            groups.setdefault(key, []).append(node)
    fused = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        widths = [int(n.inputs[1].type.shape[0]) for n in members]
        weight = graph.add_constant(torch.cat([n.inputs[1].data for n in members]), f"{first.name}.hweight")
        inputs = [first.inputs[0], weight]
        if first.attrs["has_bias"]:
            inputs.append(graph.add_constant(torch.cat([n.inputs[2].data for n in members]), f"{first.name}.hbias"))
        # the wide GEMM goes where the first member was: its only input is defined by then
        wide = graph.add_node("engine.dense", inputs, first.attrs, name=f"{first.name}.wide", before=first)
        points = tuple(sum(widths[: i + 1]) for i in range(len(widths) - 1))
        split = graph.add_node(
            "split",
            [wide.output],
            {"indices_or_sections": points, "axis": -1},
            name=f"{first.name}.split",
            output_names=[f"{n.output.name}.part" for n in members],
            before=first,
        )
        for member, part in zip(members, split.outputs):
            graph.replace_all_uses(member.output, part)
        graph.erase_nodes(members)
        fused += len(members)
    ctx.count(NAME, fused)
    return graph
