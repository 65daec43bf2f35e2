"""dense_from_matmul: a matmul by a constant matrix becomes `nn.dense`, and a vector added to a dense layer's
output becomes its `nn.bias_add`.

Why: a linear layer written as `x @ W + b` (GPT-2's Conv1D, `torch.addmm`, an imported MatMul + Add whose weight is
quantized) is the layer the engine fuses and quantizes best, but only as `nn.dense`: `fuse_bias_activation` takes a
dense layer's bias, residual and activation into its epilogue, and `fuse_quantized_layers` makes 8-bit layers of
dense layers. Left a matmul, every such layer runs its bias add as a pass of its own over the output (and, in a
quantized graph, the quantize after it too). The ONNX frontend already writes a MatMul by a constant as a dense layer
(`onnx_ops/linalg.py`); this pass does it for every graph, at the IR level:

    matmul(x, W)                  ->  nn.dense(x, W^T)                      W a constant [K, N]
    matmul(x, dequantize(Wq, s))  ->  nn.dense(x, dequantize(Wq^T, s))      Wq 8-bit [K, N], s per column or tensor
    add(dense(x, ...), b)         ->  nn.bias_add(dense(x, ...), b, -1)     b a constant [N] of the output's type

The transposed constant is made once for every matmul reading the same matrix (an exact copy; `dead_code` drops the
original when nothing else reads it), and a per-column scale becomes the transposed weight's per-row (output
channel) scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Graph, Node, Value, copy_graph
from ...ir.types import FLOAT_DTYPES
from ._edit import erase_and_rename
from ._qdq import dequantized_matmul_weight

if TYPE_CHECKING:
    from . import PassContext

NAME = "dense_from_matmul"


class _Transposed:
    """The [N, K] weights made for matmuls' [K, N] ones, each made once: float constants, and dequantizes of
    transposed 8-bit constants."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.made: dict[Value, Value] = {}

    def constant(self, weight: Value) -> Value:
        if weight not in self.made:
            data = weight.data
            assert data is not None  # a constant
            self.made[weight] = self.graph.add_constant(data.t().contiguous(), f"{weight.name}.t")
        return self.made[weight]

    def dequantized(self, weight: Value, before: Node) -> Value | None:
        """dequantize(Wq^T, s) for `weight` = dequantize(Wq, s) of an 8-bit constant [K, N], per column or per
        tensor; None for any other value."""
        found = dequantized_matmul_weight(weight)
        if found is None:
            return None
        if weight not in self.made:
            node = found.node
            source = self.constant(found.source)
            # a per-column scale (axis 1 of [K, N]) is per row of [N, K]; a per-tensor one stays as it is
            attrs = dict(node.attrs, axis=0 if found.scale.numel() > 1 else node.attrs["axis"])
            made = self.graph.add_node(
                "dequantize", [source, *node.inputs[1:]], attrs, name=f"{node.name}.t", before=before
            )
            self.made[weight] = made.output
        return self.made[weight]


def _weight(matmul: Node, transposed: _Transposed) -> Value | None:
    """The [N, K] weight of the dense layer `matmul` is, or None when it is no matmul by a constant matrix."""
    x, w = matmul.inputs
    if x.type.rank < 2 or w.type.rank != 2 or x.type.dtype not in FLOAT_DTYPES:
        return None
    if w.data is not None:
        return transposed.constant(w)
    return transposed.dequantized(w, before=matmul)


def _bias(graph: Graph, dense: Node) -> tuple[Node, Value] | None:
    """(the add that is the sole reader of `dense`'s output, the constant vector it adds), when that vector is a
    [N] of the output's type (a bias over the output channels, the last axis), else None."""
    out = dense.output
    add = graph.sole_user(out)
    if add is None or add.op != "add" or len(add.inputs) != 2 or add.output.type != out.type:
        return None
    a, b = add.inputs
    bias = b if a is out else a
    if bias is out or bias.data is None or bias.type.dtype != out.type.dtype:
        return None
    return (add, bias) if bias.type.shape == (out.type.shape[-1],) else None


def dense_from_matmul(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    transposed = _Transposed(graph)
    made = biases = 0
    for matmul in [n for n in graph.nodes if n.op == "matmul"]:
        weight = _weight(matmul, transposed)
        if weight is None:
            continue
        dense = graph.add_node("nn.dense", [matmul.inputs[0], weight], {}, name=matmul.name, before=matmul)
        graph.replace_all_uses(matmul.output, dense.output)
        erase_and_rename(graph, [matmul], [(dense, matmul.name), (dense.output, matmul.output.name)])
        made += 1
    for dense in [n for n in graph.nodes if n.op == "nn.dense"]:
        found = _bias(graph, dense)
        if found is None:
            continue
        add, bias = found
        bias_add = graph.add_node("nn.bias_add", [dense.output, bias], {"axis": -1}, name=add.name, before=add)
        graph.replace_all_uses(add.output, bias_add.output)
        erase_and_rename(graph, [add], [(bias_add, add.name), (bias_add.output, add.output.name)])
        biases += 1
    ctx.count(NAME, made)
    if biases:  # a sub-counter only where there was something to count, as other passes' are
        ctx.count(f"{NAME}.bias", biases)
    return graph
