"""fuse_bias_activation: conv/dense + bias + residual add + activation become one `engine.conv`/`engine.dense`.

Why: each of these epilogue ops is a full read and write of the activation, for almost no arithmetic.
One fused layer reads the input once and writes the result once — on a GPU that is cuDNN's fused
convolution or a cuBLASLt epilogue, and even the reference saves the intermediate tensors.

Matched, starting at nn.conv{1,2,3}d or nn.dense, along values with exactly one user (and not graph outputs):

    [nn.bias_add on the channel axis] → [add(·, residual)] → [activation] → [add(·, residual)]

with at most one residual add, either before the activation (ResNet: conv → bn → add → relu; MobileNet: no
activation at all) or after it; `residual_position` records which, so the fused layer computes exactly
what the source did. The residual must have the layer output's exact type (no broadcasting). Activations:
`engine.epilogue.FUSABLE_ACTIVATIONS` (relu, clip = relu6, gelu, silu, sigmoid, tanh, hardswish, leaky_relu),
with their attributes carried along. A dense with nothing to fuse stays as it is; a convolution with nothing to
fuse still becomes an `engine.conv` (counted too), so every convolution has the engine's layout-aware
tactics (channels-last cuDNN) and none falls to a generic tactic that would convert layouts around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...ir import Graph, Node, Value, copy_graph
from ..epilogue import FUSABLE_ACTIVATIONS, Epilogue, ResidualPosition
from ._edit import erase_and_rename

if TYPE_CHECKING:
    from . import PassContext

NAME = "fuse_bias_activation"
CONVOLUTIONS = {"nn.conv1d": 1, "nn.conv2d": 2, "nn.conv3d": 3}


def _residual(node: Node, value: Value) -> Value | None:
    """The other operand when `node` is add(value, other) or add(other, value) without broadcasting."""
    if node.op != "add" or len(node.inputs) != 2 or node.output.type != value.type:
        return None
    a, b = node.inputs
    other = b if a is value else a if b is value else None
    return other if other is not None and other is not value and other.type == value.type else None


def _layer_inputs(epilogue: Epilogue, anchor: Node, bias: Value | None, residual: Value | None) -> list[Value]:
    """The fused layer's inputs: the anchor's data and weight, then the bias and the residual where `epilogue`
    reads them."""
    placed = dict(enumerate(anchor.inputs[:2]))
    for index, value in ((epilogue.bias_index, bias), (epilogue.residual_index, residual)):
        if index is not None and value is not None:
            placed[index] = value
    return [placed[index] for index in range(epilogue.num_inputs)]


def _match(graph: Graph, anchor: Node) -> tuple[str, list[Value], dict[str, Any], list[Node]] | None:
    """The fused node's (op, inputs, attrs, absorbed nodes) for the chain starting at `anchor`, or None."""
    value = anchor.output
    absorbed = [anchor]
    bias: Value | None = None
    residual: Value | None = None
    residual_position: ResidualPosition = "pre_activation"
    activation: str | None = None
    activation_attrs: tuple[tuple[str, Any], ...] = ()
    channel_axis = 1 if anchor.op in CONVOLUTIONS else value.type.rank - 1

    def next_user() -> Node | None:
        return graph.sole_user(value)  # None: several users, or a graph output

    user = next_user()
    if (
        user is not None
        and user.op == "nn.bias_add"
        and user.inputs[0] is value
        and user.attrs["axis"] % value.type.rank == channel_axis
        and user.output.type == value.type
        and user.inputs[1].type.shape == (value.type.shape[channel_axis],)
    ):
        bias, value = user.inputs[1], user.output
        absorbed.append(user)
        user = next_user()
    if user is not None and (other := _residual(user, value)) is not None:
        residual, value = other, user.output
        absorbed.append(user)
        user = next_user()
    if (
        user is not None
        and user.op in FUSABLE_ACTIVATIONS
        and user.inputs[0] is value
        and len(user.outputs) == 1
        and user.output.type == value.type
    ):
        activation, activation_attrs = user.op, tuple(user.attrs.items())
        value = user.output
        absorbed.append(user)
        user = next_user()
        if residual is None and user is not None and (other := _residual(user, value)) is not None:
            residual, value = other, user.output
            absorbed.append(user)
            residual_position = "post_activation"
    if len(absorbed) == 1 and anchor.op not in CONVOLUTIONS:
        return None  # a bare convolution still becomes engine.conv: its tactics keep the plan's layout
    epilogue = Epilogue(
        has_bias=bias is not None,
        has_residual=residual is not None,
        activation=activation,
        activation_attrs=activation_attrs,
        residual_position=residual_position,
    )
    inputs = _layer_inputs(epilogue, anchor, bias, residual)
    if anchor.op in CONVOLUTIONS:
        return "engine.conv", inputs, {"ndim": CONVOLUTIONS[anchor.op], **anchor.attrs, **epilogue.to_attrs()}, absorbed
    return "engine.dense", inputs, epilogue.to_attrs(), absorbed


def fuse_bias_activation(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    fused = 0
    for anchor in [n for n in graph.nodes if n.op in CONVOLUTIONS or n.op == "nn.dense"]:
        match = _match(graph, anchor)
        if match is None:
            continue
        op, inputs, attrs, absorbed = match
        last = absorbed[-1].output
        # the fused layer sits where the chain ended: every input (the residual too) is defined by then
        layer = graph.add_node(op, inputs, attrs, name=anchor.name, after=absorbed[-1])
        graph.replace_all_uses(last, layer.output)
        erase_and_rename(graph, absorbed, [(layer, anchor.name), (layer.output, last.name)])
        fused += 1
    ctx.count(NAME, fused)
    return graph
