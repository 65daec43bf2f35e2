"""compile(precision="int8"|"fp8", calib_data=...) goes through quantize: the module runs the Q/DQ graph in the
engine (not in PyTorch) and its numbers are the quantized graph's, up to the fp16 its unquantized layers run in."""

from collections import Counter

import pytest
import torch

import tensorforge as forge
from quant_models import ResidualCNN, randomized
from tensorforge import ir


def _ops(module) -> Counter:
    return sum((g.op_counts() for g in module.graph.subgraphs.values()), start=Counter())


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_compile_quantized_runs_the_qdq_graph_in_the_engine(precision, tmp_path):
    model = randomized(ResidualCNN())
    calibration = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    cache = tmp_path / "cnn.calib"
    fast = forge.compile(
        model, (calibration[0],), precision=precision, calib_data=calibration, calib_cache=str(cache), device="cpu"
    )
    assert cache.exists() and f"precision={precision}" in cache.read_text().splitlines()[0]
    assert all(n.op == "subgraph" for n in fast.graph.nodes)  # everything, Q/DQ included, in engine regions
    assert _ops(fast)["dequantize"] > 0
    reference = forge.quantize(model, calibration, precision=precision, cache=cache)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 12, 12)
        with torch.no_grad():
            got, want, fp32 = fast(x), ir.execute(reference, x)[0], model(x)
        # the layers left in floating point run in fp16 (as int8 builds do), the rest is the Q/DQ graph's
        assert ((got - want).norm() / want.norm()).item() < 5e-3
        assert 0 < ((got - fp32).norm() / fp32.norm()).item() < 0.05


def test_compile_refuses_calibration_data_without_a_quantized_precision():
    model = randomized(ResidualCNN())
    x = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="pass precision='int8' or 'fp8'"):
        forge.compile(model, (x,), precision="fp16", calib_data=[x])
    with pytest.raises(forge.quantization.CalibrationDataError, match="no calibration data"):
        forge.compile(model, (x,), precision="int8", device="cpu")
    with pytest.raises(ValueError, match="pass precision='int8' or 'fp8'"):
        forge.compile(model, (x,), precision="fp16", error_budget=0.05)
    with pytest.raises(ValueError, match="pass int8_mode=True"):
        forge.convert(model, [x], int8_error_budget=0.05, device="cpu")


def test_compile_and_convert_pass_the_error_budget_to_quantize():
    """A zero budget keeps every layer in floating point (each costs some error): no Q/DQ reaches the engine."""
    model = randomized(ResidualCNN())
    calibration = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    x = calibration[0]
    compiled = forge.compile(model, (x,), precision="int8", calib_data=calibration, error_budget=0.0, device="cpu")
    converted = forge.convert(
        model,
        [x],
        int8_mode=True,
        int8_calib_dataset=calibration,
        int8_error_budget=0.0,
        max_batch_size=4,
        device="cpu",
    )
    for module in (compiled, converted):
        assert _ops(module)["dequantize"] == 0 and _ops(module)["nn.conv2d"] > 0
        with torch.no_grad():  # the float layers run in fp16 in an int8 build
            got, want = module(x), model(x)
        assert ((got - want).norm() / want.norm()).item() < 5e-3
