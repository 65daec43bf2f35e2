"""Quantized (Q/DQ) graphs on the GPU: the plan computes the quantized model's numbers there too (issue 15's "correct
everywhere"): onnxruntime's quantized model within 1e-3 of onnxruntime, a calibrated model's plan equal to its Q/DQ
graph run by the IR reference on the CPU, and the quantize kernel rounding ties to even as onnxruntime does."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from onnxruntime.quantization import QuantType

import tensorforge as forge
from helpers import plan_ops
from qdq_models import assert_within, onnxruntime_output, quantized_model
from quant_models import ResidualCNN, TinyBlock, randomized
from tensorforge.frontends import from_onnx
from tensorforge.ir import Graph, Sym, TensorType, execute

pytestmark = pytest.mark.gpu

# plan vs its Q/DQ graph, relative: the unquantized layers run in fp16, and a rounding difference upstream can move a
# value across a quantization boundary: one int8 step is 1/127 of the range, one e4m3 step 1/16 of the value
QDQ_TOLERANCE = {"int8": 5e-3, "fp8": 2e-2}


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_onnxruntime_quantized_model_on_the_gpu(tmp_path, per_channel):
    path = quantized_model(tmp_path, per_channel, QuantType.QInt8)
    partitioned, config = forge.partition_for_tensorforge(from_onnx(str(path), strict=True))
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    module = forge.build(partitioned, config, device="cuda", tf32=False)
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)).astype(np.float32)
        assert_within(module(torch.from_numpy(x).cuda()).cpu(), onnxruntime_output(path, x))
    assert "quantize" in plan_ops(module)


def _ties_graph() -> Graph:
    """x -> quantize -> dequantize (per-tensor int8), fed exact ties of the scale."""
    graph = Graph("ties")
    x = graph.add_input("x", TensorType("float32", (Sym("batch"), 8)))
    s = graph.add_constant(torch.tensor(0.0123), name="s")
    q = graph.add_node("quantize", [x, s], {"dtype": "int8"}, name="q").output
    graph.set_outputs([graph.add_node("dequantize", [q, s], {}, name="dq").output])
    return graph.verify()


def test_the_gpu_quantize_rounds_ties_to_even_and_saturates():
    graph = _ties_graph()
    partitioned, config = forge.partition_for_tensorforge(graph)
    module = forge.build(partitioned, config, device="cuda")
    scale = np.float32(0.0123)
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 300.0, -300.0]]) * torch.tensor(scale)
    x = torch.cat([x, torch.randn(3, 8)])
    got, want = module(x.cuda()).cpu(), execute(graph, x)[0]
    assert torch.equal(got, want)
    assert torch.equal(want[0] / scale, torch.tensor([0.0, 2, 2, 0, -2, 126, 127, -128]))  # even ties, saturation
    assert {"quantize", "dequantize"} <= set(plan_ops(module))


@pytest.mark.parametrize("precision", ["int8", "fp8"])
@pytest.mark.parametrize("make, shape", [(ResidualCNN, (4, 3, 12, 12)), (TinyBlock, (4, 6, 16))], ids=["cnn", "block"])
def test_calibrated_plan_on_the_gpu_is_the_qdq_graph(precision, make, shape):
    """compile(precision=...) on the GPU: its plans compute the Q/DQ graph it holds (calibrated on the GPU), run
    by the IR reference on the CPU, up to the fp16 its unquantized layers run in."""
    model = randomized(make())
    calibration = [torch.randn(shape).cuda() for _ in range(3)]
    fast = forge.compile(copy.deepcopy(model).cuda(), (calibration[0],), precision=precision, calib_data=calibration)
    assert all(n.op == "subgraph" for n in fast.graph.nodes)  # everything, Q/DQ included, in engine regions
    for batch in (1, 5):
        x = torch.randn(batch, *shape[1:])
        with torch.no_grad():
            got, want, fp32 = fast(x.cuda()).float().cpu(), execute(fast.graph, x)[0], model(x)
        assert ((got - want).norm() / want.norm()).item() < QDQ_TOLERANCE[precision]
        assert 0 < ((got - fp32).norm() / fp32.norm()).item() < 0.25  # quantized: near eager, not equal (e4m3: ~17%)
    ops = plan_ops(fast)  # plans build at the first run
    assert "engine.qconv" in ops or "engine.qdense" in ops, ops


# the tactics of a quantized layer that multiply in 8 bits (the others: the float16 library path, the reference)
FLOAT_PATHS = ("cudnn_float16", "cublas_float16", "cudnn_float16_epilogue", "cublas_float16_epilogue", "torch")


@pytest.mark.parametrize("precision", ["int8", "fp8"])
@pytest.mark.parametrize("make, shape", [(ResidualCNN, (4, 3, 12, 12)), (TinyBlock, (4, 6, 16))], ids=["cnn", "block"])
def test_quantized_layers_run_8_bit_kernels_on_the_gpu(precision, make, shape):
    """At optimization level 0 (the first supported tactic, by priority) every 8-bit layer runs an 8-bit kernel,
    and the plan computes its Q/DQ graph; fp8 needs compute capability 8.9."""
    if precision == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 tensor cores need compute capability 8.9")
    torch.manual_seed(0)
    calibration = [torch.randn(shape) for _ in range(3)]
    graph = forge.quantize(randomized(make()), calibration, precision=precision, include_first_last=True)
    partitioned, config = forge.partition_for_tensorforge(graph)
    module = forge.build(partitioned, config, device="cuda", optimization_level=0, fp16=True)
    x = torch.randn(5, *shape[1:])
    got, want = module(x.cuda()).float().cpu(), execute(graph, x)[0]
    assert ((got - want).norm() / want.norm()).item() < QDQ_TOLERANCE[precision]
    layers = [layer for plans in module.plans().values() for plan in plans for layer in plan.layers]
    quantized = [layer for layer in layers if layer.op in ("engine.qconv", "engine.qdense")]
    assert quantized, [layer.op for layer in layers]
    assert all(layer.tactic not in FLOAT_PATHS for layer in quantized), [(q.name, q.tactic) for q in quantized]
