"""Makes the ModelOpt-quantized ONNX files that tests/frontends/onnx/test_modelopt_models.py imports.

NVIDIA ModelOpt pins its own onnx and onnxruntime-gpu, which do not sit with the test environment's, so the files
are made once and committed (about 30 KiB each), not made at test time:

    python -m venv /tmp/mo && /tmp/mo/bin/pip install "nvidia-modelopt[onnx]" torch
    /tmp/mo/bin/python tests/frontends/onnx/data/make_modelopt_models.py

The float model: conv 3->16 -> relu -> conv 16->32 (stride 2) -> relu -> global pool -> flatten -> dense 32->10,
batch 4, 16x16 images, random weights (seed 0); calibrated on 32 random images (seed 1). Files:
- modelopt_int8.onnx: `quantize_mode="int8"`, max calibration, float32 elsewhere (`high_precision_dtype="fp32"`);
- modelopt_int8_fp16.onnx: the same in ModelOpt's default, the rest of the model in float16.

(`quantize_mode="fp8"` selects no node of this model on a CPU-only machine, even with op_types_to_quantize: ModelOpt's
ONNX FP8 flow is not exercised here.)
"""

from __future__ import annotations

from pathlib import Path

import modelopt
import numpy as np
import onnx
from modelopt.onnx.quantization import quantize
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def float_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
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
    inits = [init("w1", 16, 3, 3, 3), init("b1", 16), init("w2", 32, 16, 3, 3), init("b2", 32)]
    inits += [init("wd", 10, 32), init("bd", 10)]
    graph = helper.make_graph(
        nodes,
        "modelopt_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    source = HERE / "modelopt_float.onnx"
    onnx.save(float_model(), source)
    calibration = {"x": np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32)}
    for name, mode, dtype in (
        ("modelopt_int8.onnx", "int8", "fp32"),
        ("modelopt_int8_fp16.onnx", "int8", "fp16"),
    ):
        quantize(
            str(source),
            quantize_mode=mode,
            calibration_data=calibration,
            calibration_method="max",
            calibration_eps=["cpu"],
            high_precision_dtype=dtype,
            output_path=str(HERE / name),
        )
        model = onnx.load(HERE / name)
        model.doc_string = f"quantized by nvidia-modelopt {modelopt.__version__}: quantize_mode={mode!r}"
        onnx.save(model, HERE / name)
        print(name, [n.op_type for n in model.graph.node])
    source.unlink()


if __name__ == "__main__":
    main()
