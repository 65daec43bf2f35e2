"""A small conv net quantized by onnxruntime's `quantize_static` (QDQ format), and how close a result must be to
onnxruntime's: shared by the ONNX import tests (tests/frontends/test_onnx_qdq.py) and the engine's
(tests/engine/test_quantized_plans.py).

The float model is conv -> relu -> conv -> global pool -> flatten -> dense, written with onnx.helper; onnxruntime
calibrates it on a few random batches (MinMax) and inserts QuantizeLinear / DequantizeLinear pairs, with
per-tensor or per-output-channel weight scales, int8 (symmetric) or uint8 activations with a zero point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

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


def quantized_model(
    tmp_path: Path, per_channel: bool, activation_type: QuantType, activation_symmetric: bool = False
) -> Path:
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
        extra_options={"ActivationSymmetric": activation_symmetric},
    )
    return target


def onnxruntime_output(path: Path, x: np.ndarray) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x})[0])


def assert_within(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    error = (actual - expected).abs().max().item()
    assert error <= RTOL_OF_MAX * expected.abs().max().item(), f"max error {error}, max |out| {expected.abs().max()}"
