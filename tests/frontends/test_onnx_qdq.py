"""ONNX models quantized by onnxruntime's `quantize_static` (QDQ format) import with their scales and compute what
onnxruntime computes on the quantized model: through `ir.execute` and through the engine (`forge.build` on CPU).

The float model is a small conv net (conv -> relu -> conv -> global pool -> flatten -> dense) written with
onnx.helper; onnxruntime calibrates it on a few random batches (MinMax) and inserts QuantizeLinear /
DequantizeLinear pairs, with per-tensor or per-output-channel weight scales, int8 (symmetric weights, as TensorRT
wants) or uint8 activations with a zero point.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import tensorforge as forge
from tensorforge.frontends import from_onnx
from tensorforge.ir import execute

RTOL_OF_MAX = 1e-3  # the target: within 1e-3 of onnxruntime, relative to the output's largest magnitude


def float_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1),
    ]
    inits = [
        init("w1", 8, 3, 3, 3),
        init("b1", 8),
        init("w2", 16, 8, 3, 3),
        init("b2", 16),
        init("wd", 5, 16),
        init("bd", 5),
    ]
    graph = helper.make_graph(
        nodes,
        "small_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class RandomBatches(CalibrationDataReader):
    def __init__(self, batches: int = 4, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.batches = iter([{"x": rng.standard_normal((2, 3, 12, 12)).astype(np.float32)} for _ in range(batches)])

    def get_next(self):
        return next(self.batches, None)


def quantized_model(tmp_path: Path, per_channel: bool, activation_type: QuantType) -> Path:
    source, target = tmp_path / "float.onnx", tmp_path / "quantized.onnx"
    onnx.save(float_model(), str(source))
    quantize_static(
        str(source),
        str(target),
        RandomBatches(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=activation_type,
        weight_type=QuantType.QInt8,
    )
    return target


def onnxruntime_output(path: Path, x: np.ndarray) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x})[0])


def assert_within(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    error = (actual - expected).abs().max().item()
    assert error <= RTOL_OF_MAX * expected.abs().max().item(), f"max error {error}, max |out| {expected.abs().max()}"


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


def test_quantize_linear_with_runtime_scale_is_refused_with_a_reason():
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
    with pytest.raises(Exception, match="scale is computed at run time"):
        from_onnx(model, strict=True)


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
