"""ONNX models quantized by onnxruntime's `quantize_static` (QDQ format) import with their scales and compute what
onnxruntime computes on the quantized model: through `ir.execute` and through the engine (`forge.build` on CPU).

The model is tests/qdq_models.py's small conv net, quantized per tensor and per channel, int8 and uint8.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType

import tensorforge as forge
from qdq_models import RTOL_OF_MAX, assert_within, onnxruntime_output, quantized_model
from tensorforge.frontends import from_onnx
from tensorforge.ir import execute

CONFIGS = [
    pytest.param(True, QuantType.QInt8, id="per-channel-int8"),
    pytest.param(False, QuantType.QInt8, id="per-tensor-int8"),
    pytest.param(True, QuantType.QUInt8, id="per-channel-uint8-zero-point"),
]


@pytest.mark.parametrize("per_channel, activation_type", CONFIGS)
def test_quantize_static_model_matches_onnxruntime(tmp_path, caplog, per_channel, activation_type):
    path = quantized_model(tmp_path, per_channel, activation_type)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops
    with caplog.at_level(logging.WARNING, logger="tensorforge"):
        graph = from_onnx(str(path), strict=True)
    assert not [n.op for n in graph.nodes if n.opdef.opaque]
    quantizes = [n for n in graph.nodes if n.op == "quantize"]
    assert quantizes and all(
        n.attrs["dtype"] == ("int8" if activation_type == QuantType.QInt8 else "uint8") for n in quantizes
    )
    assert any(n.op == "dequantize" for n in graph.nodes)

    for batch in (1, 3):
        x = np.random.default_rng(batch + 10).standard_normal((batch, 3, 12, 12)).astype(np.float32)
        expected = onnxruntime_output(path, x)
        (actual,) = execute(graph, torch.from_numpy(x))
        assert_within(actual, expected)
        # the float model differs clearly from the quantized one: the comparison tells them apart
        float_path = tmp_path / "float.onnx"
        assert (onnxruntime_output(float_path, x) - expected).abs().max() > 10 * RTOL_OF_MAX * expected.abs().max()

    partitioned, config = forge.partition_for_tensorforge(graph)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    module = forge.build(partitioned, config, device="cpu")
    x = np.random.default_rng(7).standard_normal((2, 3, 12, 12)).astype(np.float32)
    assert_within(module(torch.from_numpy(x)), onnxruntime_output(path, x))


def test_quantize_linear_with_a_runtime_scale_imports_and_stays_in_pytorch_with_a_reason():
    """A scale the model computes (here: a graph input) imports and runs like onnxruntime; the engine takes only
    constant scales, so the pair stays in PyTorch, and the partition report says why."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "runtime_scale",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    imported = from_onnx(model, strict=True)
    x, s = np.array([[0.1, -2.5, 3.0], [7.25, -0.05, 1.0]], np.float32), np.array(0.5, np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x, "s": s})
    (actual,) = execute(imported, torch.from_numpy(x), torch.from_numpy(s))
    np.testing.assert_array_equal(actual.numpy(), expected)
    _, config = forge.partition_for_tensorforge(imported, use_implicit_batch=False)
    assert config.report.offloaded_nodes == 0 and "constant" in str(config.report), config.report


def test_blocked_quantization_is_refused_with_a_reason():
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["y"], axis=1, block_size=2)]
    graph = helper.make_graph(
        nodes,
        "blocked",
        [helper.make_tensor_value_info("q", TensorProto.INT8, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones((2, 2), np.float32), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(Exception, match="block_size=2"):
        from_onnx(model, strict=True)


def test_float8_qdq_model_matches_onnxruntime():
    """A float8 Q/DQ pair (opset 19) around a MatMul with a float8 weight initializer."""
    rng = np.random.default_rng(3)
    w8 = torch.from_numpy((rng.standard_normal((6, 4)) * 40).astype(np.float32)).to(torch.float8_e4m3fn)
    w_init = helper.make_tensor(
        "w8", TensorProto.FLOAT8E4M3FN, [6, 4], w8.view(torch.uint8).numpy().tobytes(), raw=True
    )
    zero = helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], bytes([0]), raw=True)
    inits = [
        w_init,
        zero,
        numpy_helper.from_array(np.array(0.02, np.float32), "sx"),
        numpy_helper.from_array(np.array(0.01, np.float32), "sw"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w8", "sw", "z"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fp8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    imported = from_onnx(model, strict=True)
    assert [n.attrs["dtype"] for n in imported.nodes if n.op == "quantize"] == ["float8_e4m3fn"]
    x = (rng.standard_normal((3, 6)) * 4).astype(np.float32)
    x[0, :2] = [20.0, -100.0]  # beyond 448 * 0.02: saturates
    expected = torch.from_numpy(session.run(None, {"x": x})[0])
    (actual,) = execute(imported, torch.from_numpy(x))
    assert_within(actual, expected)
