"""fuse_horizontal_dense: dense layers that read the same input become one wider GEMM and a split.

Why: attention's Q, K and V projections (and any other fan-out of linear layers) each read the whole input
and launch their own GEMM; at small batch each of those GEMMs is too small to fill the GPU. One GEMM
with the weights stacked ([Wq; Wk; Wv]) reads the input once and runs at a shape the GPU likes; the
`split` that follows is free (its pieces are views of the wide result).

Fused: two or more `engine.dense` nodes with the same data input, constant weights (and constant biases
when they have one), the same epilogue (bias or not, activation and its attributes) and no residual; likewise
two or more `engine.qdense` (8-bit) layers, whose per-channel scales stack with their weights, when they also
write the same output type (and, for an 8-bit output, quantize by the same scale).
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

# what dense layers must share to be one wide GEMM: the op, their data input (by identity), the weight's dtype and
# the shape of a weight row, the epilogue, and an 8-bit layer's output type and scale
GroupKey = tuple[str, int, str, tuple["Dim", ...], Epilogue, tuple[object, object]]
# the 8-bit layer's scale (input 2) stacks with its weight: one per output column
STACKED_PARAMETERS = {"engine.dense": (1,), "engine.qdense": (1, 2)}
STACKED_NAMES = {"engine.dense": ("hweight", "hbias"), "engine.qdense": ("hweight", "hscale", "hbias")}


def _stacked_indices(node: Node) -> tuple[int, ...]:
    """The inputs of `node` that stack along the output columns: weight, an 8-bit layer's scale, the bias."""
    bias_index = Epilogue.of(node).bias_index
    return STACKED_PARAMETERS[node.op] + ((bias_index,) if bias_index is not None else ())


def _key(node: Node) -> GroupKey | None:
    if node.op not in STACKED_PARAMETERS:
        return None
    epilogue = Epilogue.of(node)
    if epilogue.has_residual or any(node.inputs[i].data is None for i in _stacked_indices(node)):
        return None
    output = (node.attrs["out_dtype"], node.attrs["out_scale"]) if node.op == "engine.qdense" else (None, None)
    weight = node.inputs[1]
    return node.op, id(node.inputs[0]), weight.type.dtype, weight.type.shape[1:], epilogue, output


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
        widths = [n.inputs[1].type.concrete_shape()[0] for n in members]  # constant weights: static shapes
        inputs = [first.inputs[0]]  # the members' epilogues are one (the group's key): so are their inputs' places
        for index, label in zip(_stacked_indices(first), STACKED_NAMES[first.op]):
            inputs.append(graph.add_constant(_stacked(members, index), f"{first.name}.{label}"))
        # the wide GEMM goes where the first member was: its only input is defined by then
        wide = graph.add_node(first.op, inputs, first.attrs, name=f"{first.name}.wide", before=first)
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
