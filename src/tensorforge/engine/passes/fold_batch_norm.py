"""fold_batch_norm: an inference batch norm after a conv or dense layer becomes part of its weights and bias.

Why: in inference, batch norm is a per-channel affine map y = (x - mean) * gamma / sqrt(var + eps) + beta.
Right after a convolution (or dense layer) it can be folded into that layer — W' = W * s, b' = (b - mean) * s
+ beta with s = gamma / sqrt(var + eps) — which removes a whole pass over the activation per layer (53 of
them in resnet50) and leaves a conv + bias that `fuse_bias_activation` can fuse further.

Matched: nn.conv{1,2,3}d or nn.dense [→ nn.bias_add] → nn.batch_norm, where the conv/dense weight, bias and
every batch-norm parameter are constants, the batch norm normalizes the layer's output channel axis (axis 1
for convolutions, the last axis for dense), and every intermediate value has no other user. The folded
parameters are computed in float64 and stored in the weight's dtype.

A quantized weight (an 8-bit constant through a symmetric dequantize, per output channel or per tensor, read by
the layer alone) folds too: the batch norm's per-channel factor goes into the dequantize's scales, which become
per channel, and the 8-bit values stay as they are. That is exact (W' = W_q * (scale * s)) and keeps the layer
quantizable by `fuse_quantized_layers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir import Graph, Node, Value, copy_graph
from ._edit import constant_data, erase_and_rename
from ._qdq import Dequantized, channel_scales, dequantized_weight

if TYPE_CHECKING:
    from . import PassContext

NAME = "fold_batch_norm"
CONVOLUTIONS = ("nn.conv1d", "nn.conv2d", "nn.conv3d")
ANCHORS = CONVOLUTIONS + ("nn.dense",)


def _channel_axis(anchor: Node) -> int:
    """The output axis that holds the anchor's output channels."""
    rank = anchor.output.type.rank
    return 1 if anchor.op in CONVOLUTIONS else rank - 1


def _match(graph: Graph, bn: Node) -> tuple[Node, Node | None] | None:
    """(anchor, bias_add or None) when `bn` can be folded into the layer before it, else None."""
    if not all(v.data is not None for v in bn.inputs[1:]):
        return None
    value = bn.inputs[0]
    bias_add = None
    producer = value.producer
    if producer is not None and producer.op == "nn.bias_add":
        bias_add, value = producer, producer.inputs[0]
        if graph.sole_user(bias_add.output) is not bn or bias_add.inputs[1].data is None:
            return None
        producer = value.producer
    if producer is None or producer.op not in ANCHORS or len(producer.outputs) != 1:
        return None
    anchor = producer
    if graph.sole_user(anchor.output) is None:
        return None
    if anchor.inputs[1].data is None and _quantized_weight(graph, anchor) is None:
        return None
    rank, axis = anchor.output.type.rank, _channel_axis(anchor)
    if bn.attrs["axis"] % rank != axis or (bias_add is not None and bias_add.attrs["axis"] % rank != axis):
        return None
    channels = anchor.inputs[1].type.shape[0]
    params = [*bn.inputs[1:], *([bias_add.inputs[1]] if bias_add is not None else [])]
    if any(p.type.shape != (channels,) for p in params):
        return None
    return anchor, bias_add


def _quantized_weight(graph: Graph, anchor: Node) -> Dequantized | None:
    """The anchor's weight as a dequantized 8-bit constant that only the anchor reads, else None."""
    weight = dequantized_weight(anchor.inputs[1])
    return weight if weight is not None and graph.sole_user(anchor.inputs[1]) is anchor else None


def _folded(graph: Graph, anchor: Node, bias_add: Node | None, bn: Node) -> tuple[Value, torch.Tensor]:
    """(the folded weight, added to the graph: a constant, or a dequantize with folded scales; the folded bias)."""
    old_bias = constant_data(bias_add.inputs[1]) if bias_add is not None else None
    gamma, beta, mean, var = (constant_data(v).double() for v in bn.inputs[1:])
    scale = gamma * torch.rsqrt(var + bn.attrs["epsilon"])
    bias = old_bias.double() if old_bias is not None else torch.zeros_like(mean)
    new_bias = (bias - mean) * scale + beta
    weight_dtype = anchor.inputs[1].type.torch_dtype
    new_bias = new_bias.to(old_bias.dtype if old_bias is not None else weight_dtype)
    name = f"{anchor.inputs[1].name}.folded"
    quantized = _quantized_weight(graph, anchor) if anchor.inputs[1].data is None else None
    if quantized is not None:
        scales = graph.add_constant((channel_scales(quantized).double() * scale).float(), f"{name}_scale")
        dequantize = graph.add_node(
            "dequantize",
            [quantized.source, scales],
            {"axis": 0, "dtype": quantized.node.attrs["dtype"]},
            name=name,
            before=anchor,
        )
        return dequantize.output, new_bias
    weight = constant_data(anchor.inputs[1])
    new_weight = weight.double() * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
    return graph.add_constant(new_weight.to(weight.dtype), name), new_bias


def fold_batch_norm(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "nn.batch_norm"]:
        match = _match(graph, bn)
        if match is None:
            continue
        anchor, bias_add = match
        old_weight = anchor.inputs[1].producer  # a quantized weight's dequantize, replaced by a folded one
        weight, new_bias = _folded(graph, anchor, bias_add, bn)
        bias = graph.add_constant(new_bias, f"{anchor.inputs[1].name}.folded_bias")
        new_anchor = graph.add_node(
            anchor.op, [anchor.inputs[0], weight], anchor.attrs, name=anchor.name, before=anchor
        )
        new_bias_add = graph.add_node(
            "nn.bias_add", [new_anchor.output, bias], {"axis": _channel_axis(anchor)}, name=bn.name, before=bn
        )
        graph.replace_all_uses(bn.output, new_bias_add.output)  # the batch norm's users now read the bias_add
        erase_and_rename(
            graph,
            [n for n in (anchor, bias_add, bn, old_weight) if n is not None],
            [
                (new_anchor, anchor.name),
                (new_anchor.output, anchor.output.name),
                (new_bias_add, bn.name),
                (new_bias_add.output, bn.output.name),
            ],
        )
        folded += 1
    ctx.count(NAME, folded)
    return graph
