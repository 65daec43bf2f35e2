"""Quantized (Q/DQ) graphs in the engine: every quantize / dequantize runs inside the plan, and the plan computes
the quantized model's numbers (onnxruntime's, within 1e-3 of the largest output), through the builder's passes.

What the passes must keep: constant folding may turn a weight's quantize into an int8 constant and its dequantize
into the exactly dequantized float weight, and nothing else; reduced precision never converts a scale (nor casts a
quantize's float32 input down) in either mode; fusion does not swallow a quantize into a float kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnxruntime.quantization import QuantType

import tensorforge as forge
from helpers import plan_ops
from qdq_models import assert_within, onnxruntime_output, quantized_model
from tensorforge.engine import BuilderConfig
from tensorforge.engine.passes import PassContext, run_passes
from tensorforge.engine.passes.constant_folding import constant_folding
from tensorforge.engine.passes.fuse_quantized_layers import fuse_quantized_layers
from tensorforge.frontends import from_onnx
from tensorforge.ir import Graph, Sym, TensorType, execute

CONFIGS = [
    pytest.param(True, QuantType.QInt8, id="per-channel-int8"),
    pytest.param(False, QuantType.QInt8, id="per-tensor-int8"),
    pytest.param(True, QuantType.QUInt8, id="per-channel-uint8"),
]


@pytest.mark.parametrize("per_channel, activation_type", CONFIGS)
def test_onnxruntime_quantized_model_runs_in_one_plan(tmp_path, per_channel, activation_type):
    path = quantized_model(tmp_path, per_channel, activation_type)
    graph = from_onnx(str(path), strict=True)
    # the activations' pairs (zero points: not fused); the weights' dequantizes stay 8-bit until the engine
    # dequantizes them for their float layers
    imported = sum(n.op in ("quantize", "dequantize") and n.inputs[0].data is None for n in graph.nodes)
    assert any(
        n.op == "dequantize" and n.inputs[0].type.dtype == "int8" and n.inputs[0].data is not None for n in graph.nodes
    )
    partitioned, config = forge.partition_for_tensorforge(graph)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    for node in graph.nodes:
        assert config.report.reason_for(node.name) is None, str(config.report)
    module = forge.build(partitioned, config, device="cpu")
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)).astype(np.float32)
        assert_within(module(torch.from_numpy(x)), onnxruntime_output(path, x))
    ops = plan_ops(module)
    assert ops.count("quantize") + ops.count("dequantize") == imported, ops  # none folded away or fused
    assert ops.count("quantize") > 0


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_an_onnxruntime_model_with_symmetric_activations_runs_8_bit_layers(tmp_path, per_channel):
    """onnxruntime's quantize_static with ActivationSymmetric (zero points 0, TensorRT's convention): the imported
    weights stay int8 constants behind their dequantize, so every conv becomes an 8-bit layer, within 1e-3 of
    onnxruntime and equal to the imported Q/DQ graph's reference."""
    path = quantized_model(tmp_path, per_channel, QuantType.QInt8, activation_symmetric=True)
    graph = from_onnx(str(path), strict=True)
    partitioned, config = forge.partition_for_tensorforge(graph)
    module = forge.build(partitioned, config, device="cpu")
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)).astype(np.float32)
        actual = module(torch.from_numpy(x))
        assert_within(actual, onnxruntime_output(path, x))
        expected = execute(graph, torch.from_numpy(x))[0]
        assert float((actual - expected).norm() / expected.norm()) <= 1e-5
    ops = plan_ops(module)
    convolutions = sum(n.op == "nn.conv2d" for n in graph.nodes)
    assert convolutions > 0 and ops.count("engine.qconv") == convolutions, ops
    assert "engine.conv" not in ops, ops


def _weight_qdq_graph() -> tuple[Graph, torch.Tensor, torch.Tensor]:
    """x -> dense(x, dequantize(quantize(W))) with per-output-channel int8 scales on a float32 constant W."""
    torch.manual_seed(0)
    weight = torch.randn(6, 5)
    scale = weight.abs().amax(dim=1) / 127
    graph = Graph("weight_qdq")
    x = graph.add_input("x", TensorType("float32", (Sym("batch"), 5)))
    w = graph.add_constant(weight, name="w")
    s = graph.add_constant(scale, name="w_scale")
    q = graph.add_node("quantize", [w, s], {"axis": 0, "dtype": "int8"}, name="w_q").output
    dq = graph.add_node("dequantize", [q, s], {"axis": 0}, name="w_dq").output
    y = graph.add_node("nn.dense", [x, dq], {}, name="dense").output
    graph.set_outputs([y])
    graph.verify()
    return graph, weight, scale


def test_a_quantized_weight_stays_8_bit_until_a_float_layer_takes_it_exactly_dequantized():
    """Constant folding makes the weight's quantize an int8 constant and keeps its dequantize (an 8-bit layer could
    take it); this dense layer's data is float, so fuse_quantized_layers gives it the exactly dequantized weight."""
    graph, weight, scale = _weight_qdq_graph()
    ctx = PassContext()
    folded = constant_folding(graph, ctx)
    assert [n.op for n in folded.nodes] == ["dequantize", "nn.dense"]
    assert folded.nodes[0].inputs[0].type.dtype == "int8" and folded.nodes[0].inputs[0].data is not None
    floated = fuse_quantized_layers(folded, ctx)
    assert [n.op for n in floated.nodes] == ["nn.dense"]
    assert ctx.counters["fuse_quantized_layers.float_weights"] == 1
    dense_weight = floated.nodes[0].inputs[1].data
    exact = torch.clamp(torch.round(weight / scale[:, None]), -128, 127) * scale[:, None]
    assert torch.equal(dense_weight, exact)
    assert not torch.equal(dense_weight, weight)  # the quantization really changed the weight
    x = torch.randn(3, 5)
    assert torch.equal(execute(floated, x)[0], execute(graph, x)[0])


def _activation_qdq_graph() -> Graph:
    """x -> quantize -> dequantize -> relu -> add 1 -> quantize -> dequantize (per-tensor int8)."""
    graph = Graph("activation_qdq")
    x = graph.add_input("x", TensorType("float32", (Sym("batch"), 8)))
    s1 = graph.add_constant(torch.tensor(0.0123), name="s1")  # not a float16 number: rounding it would show
    s2 = graph.add_constant(torch.tensor(0.0371), name="s2")
    q1 = graph.add_node("quantize", [x, s1], {"dtype": "int8"}, name="q1").output
    d1 = graph.add_node("dequantize", [q1, s1], {}, name="d1").output
    r = graph.add_node("nn.relu", [d1], {}, name="relu").output
    one = graph.add_constant(torch.tensor(1.0), name="one")
    a = graph.add_node("add", [r, one], {}, name="add").output
    q2 = graph.add_node("quantize", [a, s2], {"dtype": "int8"}, name="q2").output
    d2 = graph.add_node("dequantize", [q2, s2], {}, name="d2").output
    graph.set_outputs([d2])
    graph.verify()
    return graph


@pytest.mark.parametrize("strict", [False, True], ids=["fp16", "fp16-strict"])
def test_reduced_precision_keeps_scales_and_quantize_inputs(strict):
    graph = _activation_qdq_graph()
    out = run_passes(graph, PassContext(config=BuilderConfig(fp16=True, strict_types=strict)), verify_each=True)
    quantizes = [n for n in out.nodes if n.op == "quantize"]
    dequantizes = [n for n in out.nodes if n.op == "dequantize"]
    assert len(quantizes) == 2 and len(dequantizes) == 2, [n.op for n in out.nodes]
    for node in quantizes + dequantizes:
        assert node.inputs[1].type.dtype == "float32", f"{node.name}'s scale became {node.inputs[1].type.dtype}"
        assert node.inputs[1].data is not None and node.inputs[1].data.item() in (
            np.float32(0.0123),
            np.float32(0.0371),
        )
    # the graph input reaches the first quantize in float32, not cast down to be quantized
    assert quantizes[0].inputs[0] is out.inputs[0]


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_activation_qdq_plan_matches_reference(fp16):
    """Through partition, passes and plan: equal to the IR reference in float32; in fp16, the first quantize
    still sees the float32 input (equal int8 codes), and the result stays on the quantized grid."""
    graph = _activation_qdq_graph()
    partitioned, config = forge.partition_for_tensorforge(graph)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    module = forge.build(partitioned, config, device="cpu", fp16=fp16)
    x = torch.randn(4, 8) * 2
    x[0, :4] = torch.tensor([0.5, 1.5, 2.5, -0.5]) * 0.0123  # ties of the first quantize
    actual, expected = module(x), execute(graph, x)[0]
    if fp16:
        codes = actual / np.float32(0.0371)
        assert torch.allclose(codes, codes.round(), atol=1e-3), "a result off the quantized grid"
        assert (actual - expected).abs().max() <= 0.0371 + 1e-6  # at most one step, from float16 add/relu
    else:
        assert torch.equal(actual, expected)
    assert {"quantize", "dequantize"} <= set(plan_ops(module))
