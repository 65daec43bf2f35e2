"""Where Q/DQ pairs go (TensorRT's explicit-quantization placement) and the rewrite that puts them there.

TensorRT runs a layer in int8/fp8 when both its inputs arrive through a quantize -> dequantize pair: it fuses the
DQs into the layer and the Q of the next layer into its output. So, as its Q/DQ placement guide recommends:

- the data input of every quantizable layer (conv, dense, matmul, batch_matmul) gets a per-tensor pair (a
  calibrated activation scale); both operands of an activation x activation product (attention's QK^T) do;
- its constant operand (the weight) gets a per-output-channel pair, scales from the weight's own max |w| per
  channel: axis 0 of a conv weight (O, I/groups, k...) and of a dense weight (units, in_features), the N axis of
  a matmul/batch_matmul constant;
- a residual add that feeds a quantized layer (directly or through an activation) gets a pair on its *other* input,
  the one not coming from a layer, so the engine can fuse the add into the producing layer's int8 epilogue.

Sensitive layers stay in floating point unless asked (`include_first_last=True`, or not excluded): the first
convolution (it sees raw pixels, few channels, little compute) and the final classifier (a dense layer whose output
reaches a graph output through bias, softmax or reshapes only: its logits decide the answer). Softmax and the
norms are never quantized here, since none of them is a quantizable layer and their inputs are left alone. `exclude`
keeps more layers in floating point, by node name ("convolution_3") or by op kind ("matmul"); excluding "add"
drops the residual pairs.

A value read by several quantized layers gets one pair, shared (one scale per tensor, as the cache stores it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ..ir import Graph, Node, Value, copy_graph, registered_ops
from ..ir.types import FLOAT_DTYPES
from .calibrators import QMAX, SMALLEST_SCALE

CONV_OPS = frozenset({"nn.conv1d", "nn.conv2d", "nn.conv3d"})
LAYER_OPS = CONV_OPS | {"nn.dense", "matmul", "nn.batch_matmul"}
# ops between a layer and what it produces that the engine folds into the layer (its bias, a batch norm)
LAYER_EPILOGUE = frozenset({"nn.bias_add", "nn.batch_norm"})
# ops between a residual add and the layer it feeds that keep the add's quantization meaningful (pointwise)
ACTIVATIONS = frozenset({"nn.relu", "clip", "nn.leaky_relu", "nn.gelu", "nn.silu", "sigmoid", "tanh"})
# what may follow a classifier before the graph output without making it an inner layer
CLASSIFIER_TAIL = frozenset(
    {"nn.bias_add", "nn.softmax", "nn.log_softmax", "reshape", "nn.batch_flatten", "squeeze", "copy", "cast"}
)
RESIDUAL_OP = "add"
PRECISION_DTYPES = {"int8": "int8", "fp8": "float8_e4m3fn"}


@dataclass(frozen=True)
class Site:
    """One tensor to quantize: a value of the graph and the (node, input slot) pairs that read it through the pair.
    `axis` is None for a per-tensor (calibrated) scale, the channel axis for a weight's per-channel scales."""

    value: str
    readers: tuple[tuple[str, int], ...]
    axis: int | None = None


@dataclass
class Placement:
    """Where the pairs go: `activations` need calibrated scales, `weights` get theirs from the weight itself.
    `kept` says, for each quantizable layer left in floating point, why."""

    activations: list[Site] = field(default_factory=list)
    weights: list[Site] = field(default_factory=list)
    quantized_layers: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def activation_names(self) -> list[str]:
        return [site.value for site in self.activations]


def _weight_axis(node: Node, slot: int, weight: Value) -> int | None:
    """The output-channel axis of a layer's constant operand (None: a per-tensor scale)."""
    if node.op in CONV_OPS or node.op == "nn.dense":
        return 0 if slot == 1 else None
    if slot == 0:  # a constant left operand of a product: its rows are not output channels of one scale each
        return None
    if node.op == "nn.batch_matmul":
        return 1 if node.attrs["transpose_b"] else 2
    return weight.type.rank - 1 if weight.type.rank >= 2 else None  # matmul: b is (..., K, N)


def _through(graph: Graph, value: Value, ops: frozenset[str]) -> Node | None:
    """The producer of `value` after walking up through single-input-chain ops in `ops` (their first input)."""
    node = value.producer
    while node is not None and node.op in ops:
        node = node.inputs[0].producer
    return node


def _first_conv(graph: Graph) -> Node | None:
    return next((n for n in graph.nodes if n.op in CONV_OPS), None)


def _classifier(graph: Graph) -> Node | None:
    """The last dense layer whose output reaches a graph output through classifier-tail ops only."""
    for node in reversed(graph.nodes):
        if node.op != "nn.dense":
            continue
        frontier, reaches_output = [node.output], False
        while frontier:
            value = frontier.pop()
            reaches_output |= graph.is_output(value)
            users = graph.users_of(value)
            if any(user.op not in CLASSIFIER_TAIL for user in users):
                reaches_output = False
                break
            frontier.extend(user.output for user in users if len(user.outputs) == 1)
        return node if reaches_output else None
    return None


def _check_exclude(graph: Graph, exclude: Iterable[str]) -> frozenset[str]:
    names = frozenset(exclude)
    ops = set(registered_ops())
    unknown = sorted(n for n in names if n not in ops and n not in {node.name for node in graph.nodes})
    if unknown:
        raise ValueError(
            f"exclude names neither a node of graph {graph.name!r} nor an op: {unknown}; name a layer node "
            f"(e.g. {next((n.name for n in graph.nodes if n.op in LAYER_OPS), 'convolution')!r}) or an op kind "
            f"(e.g. 'nn.dense')"
        )
    return names


def plan_placement(graph: Graph, exclude: Iterable[str] = (), include_first_last: bool = False) -> Placement:
    """Where TensorRT would put Q/DQ pairs in `graph` (see the module docstring), as value and node names."""
    excluded = _check_exclude(graph, exclude)
    sensitive: dict[Node, str] = {}
    if not include_first_last:
        first, classifier = _first_conv(graph), _classifier(graph)
        if first is not None:
            sensitive[first] = "the first convolution stays in floating point (include_first_last=True quantizes it)"
        if classifier is not None:
            sensitive[classifier] = "the classifier stays in floating point (include_first_last=True quantizes it)"
    placement = Placement()
    activation_readers: dict[Value, list[tuple[str, int]]] = {}
    weight_sites: dict[tuple[Value, int | None], list[tuple[str, int]]] = {}
    quantized: set[Node] = set()
    for node in graph.nodes:
        if node.op not in LAYER_OPS:
            continue
        if node.name in excluded or node.op in excluded:
            placement.kept[node.name] = f"excluded ({node.name if node.name in excluded else node.op})"
            continue
        if node in sensitive:
            placement.kept[node.name] = sensitive[node]
            continue
        if any(v.type.dtype not in FLOAT_DTYPES for v in node.inputs[:2]):
            placement.kept[node.name] = "its inputs are not floating point"
            continue
        quantized.add(node)
        placement.quantized_layers.append(node.name)
        for slot, value in enumerate(node.inputs[:2]):
            if value.kind == "const":
                weight_sites.setdefault((value, _weight_axis(node, slot, value)), []).append((node.name, slot))
            else:
                activation_readers.setdefault(value, []).append((node.name, slot))
    if RESIDUAL_OP not in excluded:
        for node in graph.nodes:
            if node.op == RESIDUAL_OP:
                residual = _residual_slot(graph, node, quantized)
                if residual is not None:
                    activation_readers.setdefault(node.inputs[residual], []).append((node.name, residual))
    placement.activations = [Site(v.name, tuple(readers)) for v, readers in activation_readers.items()]
    placement.weights = [Site(v.name, tuple(readers), axis) for (v, axis), readers in weight_sites.items()]
    return placement


def _residual_slot(graph: Graph, add: Node, quantized: set[Node]) -> int | None:
    """The input slot of a residual add to quantize, or None when the add is not one that feeds a quantized layer.

    A residual add sums a layer's output (through its bias or batch norm) and another activation; when its sum
    reaches a quantized layer (directly or through one activation), the other input is quantized. Where both
    inputs come from layers, the earlier layer's output is the residual (the later one is the layer the add
    fuses into)."""
    if len(add.inputs) != 2 or any(v.kind == "const" or v.type.dtype not in FLOAT_DTYPES for v in add.inputs):
        return None
    readers = graph.users_of(add.output)
    feeds = any(r in quantized and add.output in r.inputs[:2] for r in readers) or any(
        r.op in ACTIVATIONS and any(q in quantized for q in graph.users_of(r.output)) for r in readers
    )
    if not feeds:
        return None
    layers = [_through(graph, v, LAYER_EPILOGUE) for v in add.inputs]
    from_layer = [layer is not None and layer.op in LAYER_OPS for layer in layers]
    if from_layer == [True, False]:
        return 1
    if from_layer == [False, True]:
        return 0
    if all(from_layer):
        order = {n: i for i, n in enumerate(graph.nodes)}
        first, second = layers
        assert first is not None and second is not None
        return 0 if order[first] < order[second] else 1
    return None


def channel_max_abs(weight: torch.Tensor, axis: int | None) -> torch.Tensor:
    """max |w| over everything but `axis` (a 0-d tensor for a per-tensor scale)."""
    magnitudes = weight.detach().abs().float()
    if axis is None:
        return magnitudes.max()
    return magnitudes.movedim(axis, 0).reshape(weight.shape[axis], -1).amax(1)


def weight_scales(weight: torch.Tensor, axis: int | None, dtype: str) -> torch.Tensor:
    """Symmetric scales of a weight: max |w| per output channel (or for the whole tensor) over the type's largest
    level; a channel of zeros gets scale 1 (it quantizes exactly with any), and so does one whose scale would be
    subnormal in float32 (too few bits; calibrators.scale_for)."""
    scales = channel_max_abs(weight, axis) / QMAX[dtype]
    return torch.where(scales >= SMALLEST_SCALE, scales, torch.ones_like(scales))


def insert_qdq(graph: Graph, placement: Placement, scales: Mapping[str, float], precision: str = "int8") -> Graph:
    """A copy of `graph` with a quantize -> dequantize pair at every site of `placement`: activations with the
    per-tensor scales in `scales` (value name -> scale), weights with per-channel scales from their data."""
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"precision must be one of {sorted(PRECISION_DTYPES)}, got {precision!r}")
    dtype = PRECISION_DTYPES[precision]
    missing = [name for name in placement.activation_names if name not in scales]
    if missing:
        raise ValueError(f"no scale for the activations {missing}: calibrate them (or use a cache that has them)")
    out = copy_graph(graph)
    order = {node.name: i for i, node in enumerate(out.nodes)}
    for site in placement.activations:
        scale = torch.tensor(scales[site.value], dtype=torch.float32)
        _insert_pair(out, site, scale, dtype, order)
    for site in placement.weights:
        scale = weight_scales(out.value_named(site.value).tensor, site.axis, dtype)
        _insert_pair(out, site, scale, dtype, order)
    return out


def _insert_pair(graph: Graph, site: Site, scale: torch.Tensor, dtype: str, order: Mapping[str, int]) -> None:
    value = graph.value_named(site.value)
    first_reader = graph.node_named(min((name for name, _ in site.readers), key=order.__getitem__))
    scale_value = graph.add_constant(scale, f"{value.name}_scale")
    quantized = graph.add_node(
        "quantize",
        [value, scale_value],
        {"axis": site.axis, "dtype": dtype},
        name=f"{value.name}_quantize",
        before=first_reader,
    ).output
    restored = graph.add_node(
        "dequantize",
        [quantized, scale_value],
        {"axis": site.axis, "dtype": value.type.dtype},
        name=f"{value.name}_dequantize",
        before=first_reader,
    ).output
    for node_name, slot in site.readers:
        graph.node_named(node_name).replace_input_at(slot, restored)
