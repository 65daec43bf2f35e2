"""assign_precision: with `fp16` / `bf16`, run every precision-safe layer in the reduced type.

Why: half-precision layers move half the bytes and run on tensor cores at several times the float32 rate, and
their weights take half the memory. TensorRT's flags mean "the builder *may* run a layer in that precision";
this pass is where that permission becomes the graph's types, so every later stage (fusion, tactics, memory
planning, the plan's `LayerInfo.precision`) simply follows the IR. The rules:

1. **Which type.** `reduced_dtype(config)`: float16 when `fp16` is set (also when `bf16` is set too: float16
   keeps 10 mantissa bits to bfloat16's 7 at the same tensor-core rate, and every CUDA GPU the engine targets
   has it), else bfloat16 with `bf16`, else nothing changes (a float32 build; TF32 is a tactic-time switch,
   see `engine/precision.py`). Only float32 values are converted (and, in strict mode, the other 16-bit type
   too); float64, integers and bool are never touched. A graph that is already float16 (a `.half()` model)
   therefore comes out unchanged unless strict mode asks for more.
2. **Which layers.** A layer runs reduced when it has a float32 output, its op is not in `SENSITIVE_OPS`, and
   its output types follow its inputs (the registry's own type inference decides, so `cast(dtype=float32)`,
   `arange`, `full` keep the type the model asked for). Sensitive ops stay in float32: their reduced inputs are
   cast back up. Cheap elementwise and data-movement ops (`FOLLOWER_FAMILIES`) whose every float activation
   input comes from a layer kept in float32 stay in float32 too, so the tail of a hand-written norm
   (`rsqrt(mean(x*x) + eps)`) is float32 end to end instead of bouncing through float16 between two casts.
   Compute-heavy layers (conv, dense, matmul, attention) always run reduced when allowed: that is the point.
3. **Weights.** float32 constants a reduced layer reads are converted once, at build time, to the reduced type
   (finite values saturate at the type's range, as TensorRT clamps weights; infinities stay infinite). A
   constant that float32 layers read too keeps its float32 copy beside the reduced one. One exception outside
   strict mode: a depthwise convolution (`engine.conv` with one filter per channel) keeps its float32 weight
   and bias, and runs on reduced activations with float32 arithmetic (`tactics/conv_triton.py`). Batch norm
   folded into those few weights gives each channel its own scale, and rounding the products to float16 was
   the largest error of a MobileNetV2 FP16 plan (twice eager FP16's, and top-1 flips); the weights are a few
   KiB per layer, the activations stay float16.
4. **Casts only at boundaries.** A `cast` node is inserted where a value produced in one precision is read in
   the other: at the region's float32 inputs (entry), around sensitive layers, and before the region's outputs
   (exit), because the region keeps its own input and output types, as TensorRT keeps I/O types unless asked.
   A chain of reduced layers passes the reduced type along; one cast serves every reader of a value. A layer
   kept in its source type reads a reduced value directly when that cannot change its output type (a
   comparison, `cast`, `argmax`): PyTorch's type promotion already computes in the output's type.
5. **Quantization scales stay as calibrated.** The scale and zero point of a `quantize` / `dequantize` are never
   converted, strict mode included: a scale rounded to float16 moves every quantization step (x / scale lands
   on the other side of a .5 for some x) and the numbers would no longer be the quantized model's. Their
   arithmetic is float32 whatever the data's type (ir/ops/quantize.py); a quantize reads its data as the
   producer made it (never cast down to be quantized: a float32 input is quantized from its float32 values,
   strict mode included), a dequantize writes float32 (strict: the reduced type, rounded once from the float32
   product) and the reduced layer after it reads it through one cast: dequantize -> FP16 kernel. A quantized
   layer (`engine.qconv` / `engine.qdense`) keeps its per-channel scale and its bias in float32 (its epilogue
   computes in float32) and, where its output is a float type, writes the reduced type (`out_dtype`).
6. **Strict mode** (`strict_types=True`): the requested type is a requirement. Every float layer runs in it,
   sensitive or not, casts and constant generators included (their `dtype` attribute is rewritten); only the
   region's I/O types stay.

layer_norm and softmax stay float32 outside strict mode, although PyTorch's CUDA kernels for them accumulate
in float32 even on half inputs: what overflows in float16 is not only the accumulator but the layer's input
and output (TensorRT warns about LayerNorm in FP16 for the same reason). Keeping them float32 in the IR costs
only the boundary casts, and for layer norms over the last axis `fuse_layer_norm` takes those casts (and the
residual add before the norm) into one `engine.layer_norm` kernel that reads float16, computes in float32 and
writes float16, which removes that cost too. The IR says what the numbers mean; fusion decides how many bytes
move.

Counters: `assign_precision` counts layers moved to the reduced type; with fp16/bf16 requested, also `.casts`
(inserted casts), `.weights` (constants converted), `.weights_clamped` (converted constants that had finite
values outside the reduced range) and `.float32_weights` (reduced layers that keep float32 weights: rule 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ...ir import Graph, Node, Value, copy_graph
from ...ir.types import HALF_DTYPES, TensorType, torch_dtype
from ..config import BuilderConfig
from ..epilogue import Epilogue
from ..ops import is_depthwise
from ._edit import constant_data

if TYPE_CHECKING:
    from . import PassContext

NAME = "assign_precision"
FLOAT32 = "float32"
_SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}

# Ops that stay in float32 unless strict_types: op -> why (reported by `inspect`, asserted by the tests).
SENSITIVE_OPS: Mapping[str, str] = {
    "nn.softmax": "exp of the logits and their normalizing sum: large logits overflow float16, small terms vanish",
    "nn.log_softmax": "as softmax, and the log of a rounded normalizer shifts every output",
    "nn.layer_norm": "a mean and variance over a whole row: squares overflow float16, E[x²] - E[x]² cancels",
    "nn.group_norm": "statistics over a group of channels, with the same overflow and cancellation as layer_norm",
    "nn.batch_norm": "rsqrt(var + eps) with an eps (1e-5) near float16's resolution; unfolded ones are rare anyway",
    "mean": "the core of hand-written norms: its result feeds cancellation-prone x - mean and variance arithmetic",
    "sum": "a sum over many activations passes float16's maximum (65504)",
    "cumsum": "as sum, and every partial sum rounds: a position count past 2048 skips integers in float16",
    "variance": "squared deviations overflow float16 and their mean cancels",
    "prod": "a product of many factors overflows or underflows float16 after a few terms",
    "exp": "overflows float16 for x > 11",
    "log": "the log of a value that rounded (or flushed) to zero in float16 is -inf",
    "power": "x**2 overflows float16 for |x| > 256 (the mean of squares in RMSNorm)",
}

# Op families (ir/ops/<family>.py) of cheap ops that stay float32 when all their float activation inputs come
# from layers kept in float32: elementwise math (the add-eps and rsqrt after a reduction) and pure data
# movement (reshape/transpose/take of a float32 result). Everything else that is safe runs reduced.
FOLLOWER_FAMILIES = frozenset({"elementwise", "shape", "indexing"})
FOLLOWER_OPS = frozenset({"nn.bias_add", "nn.pad"})
# ops whose inputs after the data (scale, zero point) keep their type: rule 5
QUANTIZATION_OPS = frozenset({"quantize", "dequantize"})
# quantized layers: their scale and bias keep float32, a float output follows the reduced type (rule 5)
QUANTIZED_LAYERS = frozenset({"engine.qconv", "engine.qdense"})


def reduced_dtype(config: BuilderConfig) -> str | None:
    """The type reduced layers run in under `config` (None: a float32 build). float16 wins when both flags are
    set; see the module docstring for why."""
    if config.fp16:
        return "float16"
    if config.bf16:
        return "bfloat16"
    return None


@dataclass
class _Layer:
    """What the pass decided for one node: the dtype each input must arrive in, and its new attrs/types."""

    reduced: bool
    input_dtypes: list[str]
    attrs: dict[str, Any]
    output_types: list[TensorType]


class _Planner:
    """Phase 1: decide every node's precision in topological order, tracking each value's dtype afterwards."""

    def __init__(self, graph: Graph, reduced: str, strict: bool) -> None:
        self.graph, self.reduced, self.strict = graph, reduced, strict
        self.convertible = {FLOAT32} | ({t for t in HALF_DTYPES if t != reduced} if strict else set())
        self.dtype_of: dict[int, str] = {id(v): v.type.dtype for v in (*graph.inputs, *graph.constants.values())}
        self.kept_float32: set[int] = set()  # ids of values made by layers kept in float32 by choice
        self.layers: dict[int, _Layer] = {}

    def plan(self) -> dict[int, _Layer]:
        for node in self.graph.nodes:
            layer = self._decide(node)
            self.layers[id(node)] = layer
            for value, t in zip(node.outputs, layer.output_types):
                self.dtype_of[id(value)] = t.dtype
        return self.layers

    def _is_float(self, value: Value) -> bool:
        return value.type.dtype in self.convertible

    def _decide(self, node: Node) -> _Layer:
        tentative = self._try_reduce(node) if self._may_reduce(node) else None
        if tentative is not None:
            return tentative
        if node.op in SENSITIVE_OPS or self._follows_float32(node):
            self.kept_float32.update(id(v) for v in node.outputs if self._is_float(v))
        return self._keep(node)

    def _may_reduce(self, node: Node) -> bool:
        if node.opdef.opaque or node.op == "subgraph" or node.op == "quantize":  # rule 5: quantize has no float output
            return False
        if self.strict:
            return any(self._is_float(v) for v in (*node.inputs, *node.outputs))
        if node.op in SENSITIVE_OPS or self._follows_float32(node):
            return False
        return any(self._is_float(v) for v in node.outputs)

    def _follows_float32(self, node: Node) -> bool:
        if node.opdef.family not in FOLLOWER_FAMILIES and node.op not in FOLLOWER_OPS:
            return False
        activations = [v for v in node.inputs if v.data is None and self._is_float(v)]
        return bool(activations) and all(id(v) in self.kept_float32 for v in activations)

    def _try_reduce(self, node: Node) -> _Layer | None:
        """The node in the reduced type, or None when its op does not carry the type through (per the registry)."""
        want = [self.reduced if self._is_float(v) else v.type.dtype for v in node.inputs]
        if not self.strict and is_depthwise(node):  # rule 3's exception: float32 weight and bias
            for i in (1, Epilogue.of(node).bias_index):
                if i is not None and node.inputs[i].data is not None:
                    want[i] = node.inputs[i].type.dtype
        if node.op in QUANTIZATION_OPS:  # rule 5: the scale and zero point stay as calibrated
            want[1:] = [v.type.dtype for v in node.inputs[1:]]
        attrs = dict(node.attrs)
        if node.op in QUANTIZED_LAYERS:  # rule 5: constants in float32, a float output in the reduced type
            want = [v.type.dtype if v.data is not None else w for v, w in zip(node.inputs, want)]
            if attrs["out_dtype"] in self.convertible:
                attrs["out_dtype"] = self.reduced
        if self.strict and attrs.get("dtype") in self.convertible:
            attrs["dtype"] = self.reduced  # strict: cast/arange/full make the requested type too
        expected = [TensorType(self.reduced if self._is_float(v) else v.type.dtype, v.type.shape) for v in node.outputs]
        if self._infer(node, want, attrs) != expected:
            return None
        return _Layer(True, want, attrs, expected)

    def _keep(self, node: Node) -> _Layer:
        """The node in its source types; it reads values as they come when that cannot change its output types."""
        source = [v.type for v in node.outputs]
        as_they_come = [self.dtype_of[id(v)] if v.data is None else v.type.dtype for v in node.inputs]
        if self._infer(node, as_they_come, node.attrs) == source:
            return _Layer(False, as_they_come, dict(node.attrs), source)
        return _Layer(False, [v.type.dtype for v in node.inputs], dict(node.attrs), source)

    @staticmethod
    def _infer(node: Node, dtypes: Sequence[str], attrs: Mapping[str, Any]) -> list[TensorType] | None:
        types = [TensorType(d, v.type.shape) for d, v in zip(dtypes, node.inputs)]
        if types == [v.type for v in node.inputs] and attrs == node.attrs:
            return [v.type for v in node.outputs]
        try:
            return node.opdef.infer_types(types, attrs)
        except Exception:  # noqa: BLE001 - the op refuses these types: the caller keeps the node as it is
            return None


def _to_reduced(tensor: torch.Tensor, dtype: str) -> tuple[torch.Tensor, bool]:
    """`tensor` in `dtype`, finite values saturated at its range (infinities and NaN stay); and whether any was."""
    target = torch_dtype(dtype)
    info = torch.finfo(target)
    finite = torch.isfinite(tensor)
    outside = finite & (tensor.abs() > info.max)
    clamped = bool(outside.any())
    if clamped:
        tensor = torch.where(outside, tensor.clamp(info.min, info.max), tensor)
    return tensor.to(target).contiguous(), clamped


class _Rewriter:
    """Phase 2: give each node its inputs in the decided dtypes, converting constants and inserting casts."""

    def __init__(self, graph: Graph, layers: dict[int, _Layer], ctx: PassContext) -> None:
        self.graph, self.layers, self.ctx = graph, layers, ctx
        self.casts: dict[tuple[int, str], Value] = {}
        self.converted: dict[tuple[int, str], Value] = {}
        self.exits: dict[int, Value] = {}
        self.in_place = self._constants_to_convert_in_place()

    def _constants_to_convert_in_place(self) -> set[int]:
        """Constants whose every reader wants one other dtype: converted under their own name, no float32 copy."""
        wants: dict[int, set[str]] = {id(v): set() for v in self.graph.constants.values()}
        for node in self.graph.nodes:
            for v, d in zip(node.inputs, self.layers[id(node)].input_dtypes):
                if v.data is not None:
                    wants[id(v)].add(d)
        for v in self.graph.outputs:
            if v.data is not None:
                wants[id(v)].add(v.type.dtype)
        return {
            id(v) for v in self.graph.constants.values() if len(wants[id(v)]) == 1 and v.type.dtype not in wants[id(v)]
        }

    def rewrite(self) -> None:
        source_dtypes = {id(v): v.type.dtype for n in self.graph.nodes for v in n.outputs}
        for node in self.graph.nodes:
            layer = self.layers[id(node)]
            # the casts `_as` makes for the node's inputs go just before it
            node.inputs = [self._as(v, d, node) for v, d in zip(node.inputs, layer.input_dtypes)]
            node.attrs = layer.attrs
            for value, t in zip(node.outputs, layer.output_types):
                value.type = t
            if layer.reduced:
                self.ctx.count(NAME)
                if any(v.data is not None and v.type.dtype == FLOAT32 for v in node.inputs):
                    self.ctx.count(f"{NAME}.float32_weights")
        self.graph.outputs = [self._exit(v, source_dtypes.get(id(v), v.type.dtype)) for v in self.graph.outputs]
        self.graph.erase_unused_constants()

    def _as(self, value: Value, dtype: str, reader: Node | None = None) -> Value:
        """`value` in `dtype`: itself, a converted constant, or a cast (made once, before `reader`, else at the end)."""
        if value.type.dtype == dtype:
            return value
        if value.data is not None:
            return self._constant(value, dtype)
        key = (id(value), dtype)
        if key not in self.casts:
            name = f"{value.name}.to_{_SHORT.get(dtype, dtype)}"
            self.casts[key] = self.graph.add_node("cast", [value], {"dtype": dtype}, name=name, before=reader).output
            self.ctx.count(f"{NAME}.casts")
        return self.casts[key]

    def _constant(self, value: Value, dtype: str) -> Value:
        """The constant `value` in `dtype` (converted once)."""
        key = (id(value), dtype)
        if key not in self.converted:
            tensor, clamped = _to_reduced(constant_data(value), dtype)
            self.ctx.count(f"{NAME}.weights")
            self.ctx.count(f"{NAME}.weights_clamped", int(clamped))
            if id(value) in self.in_place:
                value.data, value.type = tensor, TensorType.of(tensor)
                self.converted[key] = value
            else:
                self.converted[key] = self.graph.add_constant(tensor, f"{value.name}.{_SHORT.get(dtype, dtype)}")
        return self.converted[key]

    def _exit(self, value: Value, dtype: str) -> Value:
        """A region output back in its source type; the exit cast takes over the output's name, so the plan's
        outputs keep their names and the reduced value inside is `<name>.<f16|bf16>`."""
        if value.type.dtype == dtype:
            return value
        if value.data is not None:
            return self._constant(value, dtype)
        if id(value) not in self.exits:
            cast = self._as(value, dtype)
            original, short = value.name, _SHORT.get(value.type.dtype, value.type.dtype)
            self.graph.rename_value(value, self.graph.fresh_name(f"{original}.{short}"))
            self.graph.rename_value(cast, original)
            self.exits[id(value)] = cast
        return self.exits[id(value)]


def assign_precision(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    ctx.counters.setdefault(NAME, 0)
    reduced = reduced_dtype(ctx.config)
    if reduced is None:  # a float32 build: nothing to assign, and no sub-counters to report
        return graph
    for counter in ("casts", "weights", "weights_clamped", "float32_weights"):
        ctx.counters.setdefault(f"{NAME}.{counter}", 0)
    layers = _Planner(graph, reduced, ctx.config.strict_types).plan()
    _Rewriter(graph, layers, ctx).rewrite()
    return graph
