"""hoist_attention_masks: a boolean attention mask becomes an additive one, made once for every layer.

Why: attention kernels add a mask to the scores; given a boolean mask, PyTorch's scaled_dot_product_attention
first converts it (zeros, then a masked fill with -inf) on EVERY call. A BERT encoder passes the same
[B, 1, S, S] mask to all twelve layers, so the conversion runs twelve times per forward (on an H100 at batch
32, about 5% of the whole model). Here the conversion is one `where(mask, 0, -inf)` in the attention's
dtype, placed before the first attention that reads the mask and shared by every attention reading it;
the kernels then take the float mask as it is. It sits before elementwise fusion, so the `where` joins the
kernel that builds the mask.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ...ir import Graph, Value, copy_graph
from ...ir.types import torch_dtype

if TYPE_CHECKING:
    from . import PassContext

NAME = "hoist_attention_masks"
ATTENTION = "nn.scaled_dot_product_attention"


def hoist_attention_masks(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    additive: dict[tuple[int, str], Value] = {}
    rewritten = 0
    for node in graph.nodes:
        if node.op != ATTENTION or len(node.inputs) < 4 or node.inputs[3].type.dtype != "bool":
            continue
        mask, dtype = node.inputs[3], node.inputs[0].type.dtype
        key = (id(mask), dtype)
        if key not in additive:
            keep = graph.add_constant(torch.zeros((), dtype=torch_dtype(dtype)), f"{mask.name}.keep")
            drop = graph.add_constant(torch.full((), -math.inf, dtype=torch_dtype(dtype)), f"{mask.name}.drop")
            additive[key] = graph.add_node(
                "where", [mask, keep, drop], name=f"{mask.name}.additive", before=node
            ).output
        node.replace_input_at(3, additive[key])
        rewritten += 1
    ctx.count(NAME, rewritten)
    return graph
