"""fuse_quantized_layers: dequantize -> conv/dense (+ epilogue) -> quantize becomes one 8-bit layer.

Why: a quantized graph (tensorforge.quantize, or an imported Q/DQ model) says which tensors may be 8-bit, but run
as written it computes every layer in floating point between a dequantize and a quantize: more work than the
float model, not less. TensorRT's explicit quantization fuses the pairs into the layers: the layer multiplies the
8-bit values themselves and writes 8 bits for the next one. This pass does that, making the `engine.qconv` /
`engine.qdense` layers of `engine/quantized_ops.py`:

    dequantize(x_q, s_x) --+
                           +--> engine.conv / engine.dense (bias, residual, activation) --> quantize(s_y)
    dequantize(W_q, s_w) --+

becomes `engine.qconv(x_q, W_q, s_x * s_w, bias, residual, out_dtype=int8, out_scale=s_y)`: the scales fold into
one per-channel factor, the 8-bit weight is stored as it is (a quarter of its float32 size), and the quantize is
taken into the layer's epilogue when the layer's result has no other reader. A residual that is itself a
dequantized 8-bit tensor (the add's Q/DQ pair the quantizer places) is read in 8 bits too (`residual_scale`).

Matched: an `engine.conv` / `engine.dense` (after `fuse_bias_activation`; or a bare `nn.dense`) whose data is a
symmetric per-tensor dequantize of an 8-bit tensor and whose weight is a symmetric dequantize of an 8-bit constant
of the same type, per output channel or per tensor (`_qdq.py`); a matmul by such a constant [K, N] (GPT-2's Conv1D,
an addmm) is a dense layer by then (`dense_from_matmul`). A zero point is not fused (its correction term
varies at a padded border), nor a layer whose scales or folded scales are subnormal float32 numbers (the folded
factor would underflow where the graph's dequantized operands do not); those layers, and layers whose data is not
dequantized, stay in floating point with their weights dequantized once here, as constant folding does for other
constants.

Counters: `fuse_quantized_layers` (layers made), `.requantize` (quantizes taken into a layer's epilogue),
`.residual` (8-bit residuals), `.float_weights` (weights dequantized for layers left in floating point); the
last three only for a graph that has a dequantize.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...ir import Graph, Node, Value, copy_graph
from ..epilogue import Epilogue
from ._edit import erase_and_rename
from ._qdq import Dequantized, channel_scales, dequantized_weight, per_tensor_dequantized, per_tensor_quantize_scale
from .constant_folding import fold_node

if TYPE_CHECKING:
    from . import PassContext

NAME = "fuse_quantized_layers"
# a dense layer with nothing to fuse stays nn.dense (fuse_bias_activation): an 8-bit one with no epilogue
QUANTIZED_OPS = {"engine.conv": "engine.qconv", "engine.dense": "engine.qdense", "nn.dense": "engine.qdense"}


def _requantize(graph: Graph, value: Value, dtype: str) -> tuple[Node, float] | None:
    """(the quantize that is the only reader of `value` (not a graph output), per tensor, symmetric, to `dtype`
    (the layer's own 8-bit type); its scale), else None."""
    user = graph.sole_user(value)
    scale = per_tensor_quantize_scale(user) if user is not None else None
    if user is None or scale is None or user.attrs["dtype"] != dtype:
        return None
    return user, scale


def _normal(scales: torch.Tensor) -> bool:
    """Whether every float32 scale is 0 or a normal number (not subnormal)."""
    return bool(((scales == 0) | (scales.abs() >= torch.finfo(torch.float32).tiny)).all())


def _normal_scales(data: Dequantized, weight: Dequantized) -> bool:
    """Whether the input scale, the weight's scales and their products (the layer's folded float32 factors) are all
    0 or normal float32 numbers, no product of nonzero scales 0. A subnormal scale (a tensor calibrated on values
    near 0, a scale an imported model gives) has too few bits, and the product of two small ones underflows: the
    Q/DQ graph, which dequantizes each operand first, and the fused layer, which scales the 8-bit sum once, would
    compute different numbers (all zeros against the graph's small ones)."""
    weight_scales = channel_scales(weight)
    folded = data.scale.reshape(()) * weight_scales  # float32, as `_fuse` stores it
    underflow = (folded == 0) & (weight_scales != 0) & (data.scale != 0)
    return _normal(data.scale) and _normal(weight_scales) and _normal(folded) and not bool(underflow.any())


def _fuse(graph: Graph, layer: Node, data: Dequantized, weight: Dequantized, ctx: PassContext) -> None:
    bare = layer.op == "nn.dense"
    epilogue = Epilogue() if bare else Epilogue.of(layer)
    bias, residual = epilogue.split(layer.inputs)
    scale = (data.scale.reshape(()) * channel_scales(weight)).float()
    inputs = [data.source, weight.source, graph.add_constant(scale, f"{layer.name}.scale")]
    if bias is not None:
        inputs.append(bias)
    attrs: dict[str, Any] = epilogue.to_attrs() if bare else dict(layer.attrs)
    attrs.update(out_dtype=layer.output.type.dtype, out_scale=None, residual_scale=None)
    if residual is not None:
        quantized_residual = per_tensor_dequantized(residual)
        if quantized_residual is not None:
            residual = quantized_residual.source
            attrs["residual_scale"] = float(quantized_residual.scale.reshape(()))
            ctx.count(f"{NAME}.residual")
        inputs.append(residual)
    last = layer.output
    gone = [layer]
    found = _requantize(graph, layer.output, data.dtype)
    if found is not None:
        requantize, out_scale = found
        attrs.update(out_dtype=requantize.attrs["dtype"], out_scale=out_scale)
        last = requantize.output
        gone.append(requantize)
        ctx.count(f"{NAME}.requantize")
    fused = graph.add_node(QUANTIZED_OPS[layer.op], inputs, attrs, name=layer.name, before=layer)
    graph.replace_all_uses(last, fused.output)
    erase_and_rename(graph, gone, [(fused, layer.name), (fused.output, last.name)])
    ctx.count(NAME)


def _fold_float_weights(graph: Graph, ctx: PassContext) -> None:
    """Dequantize the 8-bit constants no quantized layer took (constant folding left them): unused ones go, the
    rest become float constants."""
    for node in [n for n in graph.nodes if n.op == "dequantize" and all(v.data is not None for v in n.inputs)]:
        if graph.use_count(node.output) == 0 and not graph.is_output(node.output):
            graph.erase_nodes([node])
        elif fold_node(graph, node):
            ctx.count(f"{NAME}.float_weights")


def fuse_quantized_layers(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    ctx.counters.setdefault(NAME, 0)
    if not any(n.op == "dequantize" for n in graph.nodes):
        return graph  # not a quantized graph: no sub-counters to report
    for counter in ("requantize", "residual", "float_weights"):
        ctx.counters.setdefault(f"{NAME}.{counter}", 0)
    for layer in [n for n in graph.nodes if n.op in QUANTIZED_OPS]:
        data = per_tensor_dequantized(layer.inputs[0])
        weight = dequantized_weight(layer.inputs[1])
        if data is not None and weight is not None and data.dtype == weight.dtype and _normal_scales(data, weight):
            _fuse(graph, layer, data, weight, ctx)
    _fold_float_weights(graph, ctx)
    return graph
