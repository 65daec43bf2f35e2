"""The float16 library path of the quantized layers with one Triton epilogue (tactics/quantized_float.py:
`cublas_float16_epilogue`, `cudnn_float16_epilogue`): every case of quantized_float_cases.py under Triton's CPU
interpreter (a subprocess: TRITON_INTERPRET must be set before triton is imported) and, on a GPU, on CUDA; the
power-of-two weight scaling that keeps the float16 product in range and exact; what the tactics refuse; and where
they stand among a layer's tactics."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import interpreted_cases
from qgemm_cases import layer
from quantized_float_cases import TACTICS, run_cases
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import candidates, get_tactic
from tensorforge.engine.tactics.quantized_float import LARGEST_DATA, SUMS_LIMIT, float16_weight

pytest.importorskip("triton")
FP8 = "float8_e4m3fn"


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("quantized_float_cases.py")


def test_every_case_under_the_interpreter(interpreted):
    assert len(interpreted) > 30 and all(case.startswith(("gemm:", "conv:")) for case in interpreted)
    assert {k: v for k, v in interpreted.items() if v is not None} == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_case_on_cuda():
    results = run_cases("cuda")
    assert results and {k: v for k, v in results.items() if v is not None} == {}


@pytest.mark.parametrize("dtype, k", [("int8", 40), ("int8", 4608), (FP8, 3072)])
def test_the_shift_is_the_smallest_that_keeps_every_sum_in_range(dtype, k):
    torch.manual_seed(k)
    weight = (torch.randn(16, k) * (40 if dtype == "int8" else 8)).clamp(-127, 127)
    weight = weight.round().to(torch.int8) if dtype == "int8" else weight.to(torch.float8_e4m3fn)
    scaled, shift = float16_weight(weight, dtype)
    assert scaled.dtype == torch.float16 and shift > 0
    assert torch.equal(scaled.float() * 2.0**shift, weight.float())  # exact: the scale is a power of two
    # the worst data: the largest value with each weight's sign, on the channel of the largest sum of |w|
    worst = torch.sign(weight.float()) * LARGEST_DATA[dtype]
    sums = (worst * scaled.float()).sum(dim=1)
    assert float(sums.abs().max()) <= SUMS_LIMIT and torch.isfinite(sums.half()).all()
    assert float(sums.abs().max()) * 2 > SUMS_LIMIT  # one step less shift would pass the limit


def test_a_weight_that_float16_cannot_hold_once_shifted_is_refused():
    # 8192 inputs of 448 need a shift of 16: the channel holding the smallest e4m3 value, 2**-9, would fall below
    # float16's smallest subnormal (2**-24)
    weight = torch.full((2, 8192), 448.0)
    weight[1] = 2.0**-9
    reason = float16_weight(weight.to(torch.float8_e4m3fn), FP8)
    assert reason == "the weight scaled by 2**-16 into float16's range loses values below float16's subnormals"
    node = layer(dtype=FP8, k=8192, n=2).nodes[0]
    node.inputs[1].data = weight.to(torch.float8_e4m3fn)
    assert get_tactic("engine.qdense", TACTICS["engine.qdense"]).supports(node, BuilderConfig()) == reason


@pytest.mark.parametrize("op", list(TACTICS))
@pytest.mark.parametrize("what, index", [("weight", 1), ("scale", 2), ("bias", 3)])
def test_weight_scale_and_bias_must_be_constants(op, what, index):
    node = layer(op).nodes[0]
    node.inputs[index].data = None
    assert get_tactic(op, TACTICS[op]).supports(node, BuilderConfig()) == f"the {what} must be a constant"


@pytest.mark.parametrize("op", list(TACTICS))
def test_between_the_8_bit_kernels_and_the_multi_pass_float16_path(op):
    """Timed with the others; at optimization level 0 (the first supported by priority) an 8-bit kernel still goes
    first, and the epilogue tactic before the multi-pass one."""
    node = layer(op, k=64, n=64).nodes[0]
    supported, _ = candidates(node, "cuda", BuilderConfig())
    names = [t.name for t in supported]
    ours, multi_pass = names.index(TACTICS[op]), names.index(TACTICS[op].removesuffix("_epilogue"))
    assert names[0].startswith("triton_q") and ours < multi_pass
    t = get_tactic(op, TACTICS[op])
    # compiled ahead with the Triton tactics, but for cuDNN's: its benchmark-mode search runs alone
    compiles = op == "engine.qdense"
    assert (t.devices, t.packs_weights, t.compiles, t.requires_triton) == (("cuda",), True, compiles, True)
