"""ONNX models quantized by NVIDIA ModelOpt (`modelopt.onnx.quantization.quantize`, int8, max calibration) import with
their scales and run in one engine plan, matching onnxruntime's output of the same file.

The files are made by data/make_modelopt_models.py (ModelOpt pins an onnx and an onnxruntime-gpu of its own, so they
are made once and committed). ModelOpt's default keeps the unquantized part of the model in float16: there the plan
and onnxruntime round float16 differently before the next quantize, so a value near a rounding boundary may land one
int8 step apart, and the tolerance is that of float16, not the float32 file's 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import tensorforge as forge
from helpers import plan_ops
from qdq_models import onnxruntime_output
from tensorforge.frontends import from_onnx

DATA = Path(__file__).resolve().parent / "data"
# relative to the output's largest magnitude (as the onnxruntime-quantized models' 1e-3)
TOLERANCE_OF_MAX = {"modelopt_int8.onnx": 1e-3, "modelopt_int8_fp16.onnx": 1e-2}


def _file_scales(model: onnx.ModelProto) -> set[float]:
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[1] in initializers:
            scales.update(float(s) for s in initializers[node.input[1]].astype(np.float32).reshape(-1))
    return scales


@pytest.mark.parametrize("name", sorted(TOLERANCE_OF_MAX))
def test_modelopt_quantized_model_imports_with_its_scales_and_matches_onnxruntime(name):
    path = DATA / name
    model = onnx.load(path)
    assert "nvidia-modelopt" in model.doc_string
    graph = from_onnx(str(path), strict=True)
    counts = graph.op_counts()
    assert counts["quantize"] > 0 and counts["dequantize"] > 0
    imported = set()
    for node in graph.nodes:
        if node.op == "dequantize" and node.inputs[1].data is not None:
            imported.update(float(s) for s in node.inputs[1].data.float().reshape(-1))
    assert imported and imported <= _file_scales(model)  # every scale the IR dequantizes with is one of the file's
    partitioned, config = forge.partition_for_tensorforge(graph)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    module = forge.build(partitioned, config, device="cpu")
    x = np.random.default_rng(5).standard_normal((4, 3, 16, 16)).astype(np.float32)
    got, want = module(torch.from_numpy(x)), onnxruntime_output(path, x)
    assert got.shape == want.shape and got.dtype == want.dtype
    error = (got - want).abs().max().item()
    assert error <= TOLERANCE_OF_MAX[name] * want.abs().max().item(), (error, want.abs().max().item())
    ops = plan_ops(module)
    assert "quantize" in ops and "dequantize" in ops  # run in the engine, not folded away nor in PyTorch
