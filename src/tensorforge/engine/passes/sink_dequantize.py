"""sink_dequantize: a dequantize moves below the ops that commute with it, and quantize(dequantize(x)) is x.

Why: an 8-bit layer (`fuse_quantized_layers`) needs its data to arrive through a dequantize. Between the Q/DQ pair
a model's quantizer placed and the layer there are often ops that only move values (a reshape or transpose
before a projection, a flatten before a classifier, a max pool after a stem: onnxruntime's quantizer wraps each
in its own DQ -> op -> Q). Those ops compute the same on the 8-bit values as on the dequantized ones, since a
per-tensor dequantize is one increasing affine map applied to every element:

    op(dequantize(x, s)) == dequantize(op(x), s)     op: reshape, transpose, squeeze, expand_dims, flatten,
                                                      strided_slice, max pool (a maximum is one of its inputs)
    concatenate(dequantize(x_i, s)) == dequantize(concatenate(x_i), s)     every input at the same scale

so the op runs on the 8-bit tensor (a quarter of the bytes) and the dequantize moves below it, next to the layer.
A quantize of a dequantized tensor at the same type and scale is then the 8-bit tensor itself: a pair that
re-quantizes what was just dequantized goes away (onnxruntime's DQ -> MaxPool -> Q keeps one scale).

Only symmetric per-tensor dequantizes move (a per-channel scale would have to follow the channel axis through
the op). A dequantize with other readers stays for them. The counter counts moved ops and removed pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Graph, Node, TensorType, copy_graph
from ._edit import erase_and_rename
from ._qdq import per_tensor_dequantized, per_tensor_quantize_scale

if TYPE_CHECKING:
    from . import PassContext

NAME = "sink_dequantize"
# ops whose first input is their only activation and that compute the same on the 8-bit values (module docstring)
MOVES_VALUES = frozenset(
    {
        "reshape",
        "transpose",
        "squeeze",
        "expand_dims",
        "nn.batch_flatten",
        "strided_slice",
        "nn.max_pool1d",
        "nn.max_pool2d",
        "nn.max_pool3d",
    }
)


def _sink(graph: Graph, node: Node) -> bool:
    """Run `node` on the 8-bit tensors behind its dequantized inputs and dequantize its result; False when it is
    not such an op, or its inputs are not dequantized alike."""
    if node.op == "concatenate":
        activations = list(node.inputs)
    elif node.op in MOVES_VALUES and all(v.data is not None for v in node.inputs[1:]):
        activations = [node.inputs[0]]
    else:
        return False
    found = [per_tensor_dequantized(v) for v in activations]
    first = found[0]
    if first is None or any(
        d is None or d.dtype != first.dtype or float(d.scale.reshape(())) != float(first.scale.reshape(()))
        for d in found
    ):
        return False
    sources = [d.source for d in found if d is not None]
    inputs = sources + list(node.inputs[len(activations) :])
    try:  # the registry's type inference decides whether the op takes the 8-bit type
        (moved_type,) = node.opdef.infer_types([v.type for v in inputs], node.attrs)
    except Exception:  # noqa: BLE001 - the op refuses 8-bit data: it stays where it is
        return False
    if moved_type != TensorType(first.dtype, node.output.type.shape):
        return False
    moved = graph.add_node(node.op, inputs, node.attrs, name=f"{node.name}.8bit", before=node)
    dequantize = first.node
    restored = graph.add_node(
        "dequantize", [moved.output, *dequantize.inputs[1:]], dequantize.attrs, name=f"{node.name}.dq", before=node
    )
    graph.replace_all_uses(node.output, restored.output)
    erase_and_rename(graph, [node], [(moved, node.name), (restored.output, node.output.name)])
    return True


def _requantized(graph: Graph, node: Node) -> bool:
    """Replace quantize(dequantize(x)) by x where the type and the scale are the same; False otherwise."""
    scale = per_tensor_quantize_scale(node)
    found = per_tensor_dequantized(node.inputs[0]) if scale is not None else None
    if found is None or found.dtype != node.attrs["dtype"] or float(found.scale.reshape(())) != scale:
        return False
    graph.replace_all_uses(node.output, found.source)
    graph.erase_nodes([node])
    return True


def sink_dequantize(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    changed = 0
    for node in list(graph.nodes):  # a moved dequantize comes after its op: the next op in line sees it
        changed += _requantized(graph, node) if node.op == "quantize" else _sink(graph, node)
    ctx.count(NAME, changed)
    return graph
