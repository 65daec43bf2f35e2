"""fuse_horizontal_dense: dense layers that read the same input become one wider GEMM and a split.

Why: attention's Q, K and V projections (and any other fan-out of linear layers) each read the whole input
and launch their own GEMM; at small batch each of those GEMMs is too small to fill the GPU. One GEMM
with the weights stacked ([Wq; Wk; Wv]) reads the input once and runs at a shape the GPU likes; the
`split` that follows is free (its pieces are views of the wide result).

Fused: two or more `engine.dense` nodes with the same data input, constant weights (and constant biases
when they have one), the same epilogue (bias or not, activation and its attributes) and no residual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir import Graph, Node, copy_graph
from ..epilogue import Epilogue
from ._edit import constant_data

if TYPE_CHECKING:
    from ...ir.types import Dim
    from . import PassContext

NAME = "fuse_horizontal_dense"

# what dense layers must share to be one wide GEMM: their data input (by identity), the weight's dtype and the
# shape of a weight row, and the epilogue
GroupKey = tuple[int, str, tuple["Dim", ...], Epilogue]


def _key(node: Node) -> GroupKey | None:
    if node.op != "engine.dense":
        return None
    epilogue = Epilogue.of(node)
    weight = node.inputs[1]
    if epilogue.has_residual or weight.data is None:
        return None
    if epilogue.bias_index is not None and node.inputs[epilogue.bias_index].data is None:
        return None
    return id(node.inputs[0]), weight.type.dtype, weight.type.shape[1:], epilogue


def _stacked(members: list[Node], index: int) -> torch.Tensor:
    """The members' constant inputs at `index` (weights or biases; `_key` checked they are constants), stacked."""
    return torch.cat([constant_data(n.inputs[index]) for n in members])


def fuse_horizontal_dense(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    groups: dict[GroupKey, list[Node]] = {}
    for node in graph.nodes:
        key = _key(node)
        if key is not None:
            groups.setdefault(key, []).append(node)
    fused = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        bias_index = Epilogue.of(first).bias_index  # the members' epilogues are one (the group's key)
        widths = [n.inputs[1].type.concrete_shape()[0] for n in members]  # constant weights: static shapes
        inputs = [first.inputs[0], graph.add_constant(_stacked(members, 1), f"{first.name}.hweight")]
        if bias_index is not None:
            inputs.append(graph.add_constant(_stacked(members, bias_index), f"{first.name}.hbias"))
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
