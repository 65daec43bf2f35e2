"""constant_folding: nodes whose inputs are all constants become constants.

Why: models compute things at run time that never change — BERT's position ids (arange → slice →
broadcast), masks built from shapes, reshaped or transposed weights. Computing them once at build time
removes layers from every run and lets later passes see plain weights (batch-norm folding needs its
statistics as constants). Not folded: opaque ops (they may have side effects or randomness), anything
whose shape depends on the batch symbol, outputs above `ctx.fold_limit_bytes` (64 MiB by default), so
a broadcast never turns into a huge weight, and the dequantize of an 8-bit constant: a quantized weight stays
quantized, so that `fuse_quantized_layers` can give its layer 8-bit kernels (it folds the ones no quantized layer
takes). The quantize before it folds: a float weight's Q/DQ pair becomes the int8 constant and its dequantize.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir import Graph, Node, TensorType, copy_graph
from ...ir.types import contains_sym
from ..quantized_ops import LAYER_DTYPES
from ._edit import constant_data, erase_and_rename

if TYPE_CHECKING:
    from . import PassContext

NAME = "constant_folding"


def _foldable(node: Node, limit: int) -> bool:
    if node.opdef.opaque or node.op == "subgraph":
        return False
    if not all(v.data is not None for v in node.inputs):
        return False
    if node.op == "dequantize" and node.inputs[0].type.dtype in LAYER_DTYPES:
        return False  # a quantized weight: the module docstring
    if any(contains_sym(v) for v in node.attrs.values()):
        return False
    return all(v.type.is_static and v.type.nbytes() <= limit for v in node.outputs)


def fold_node(graph: Graph, node: Node) -> bool:
    """Replace `node` (every input a constant) by constants of its results, computed by its reference; False, the
    graph unchanged, when the reference fails or gives other types (the node then runs at plan time and reports
    its own error there)."""
    inputs = [constant_data(v) for v in node.inputs]
    device = inputs[0].device if inputs else torch.device("cpu")
    try:
        with torch.no_grad():
            results = node.opdef.run(inputs, node.attrs, {}, device)
    except Exception:  # noqa: BLE001 - see the docstring
        return False
    if len(results) != len(node.outputs) or any(TensorType.of(t) != v.type for t, v in zip(results, node.outputs)):
        return False
    # fresh contiguous tensors: results may be views of (or broadcasts over) other weights
    consts = [
        graph.add_constant(t.clone(memory_format=torch.contiguous_format), v.name)
        for t, v in zip(results, node.outputs)
    ]
    for value, const in zip(node.outputs, consts):
        graph.replace_all_uses(value, const)
    erase_and_rename(graph, [node], [(c, v.name) for c, v in zip(consts, node.outputs)])
    return True


def constant_folding(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    folded = sum(fold_node(graph, node) for node in graph.nodes if _foldable(node, ctx.fold_limit_bytes))
    ctx.count(NAME, folded)
    return graph
