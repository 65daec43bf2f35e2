"""The Triton depthwise convolution: every case of depthwise_kernel_cases.py under Triton's CPU interpreter (a
subprocess: TRITON_INTERPRET must be set before triton is imported), compiled for sm_90 by Triton's real
compiler, and on a GPU on CUDA; which layers it takes, and that cuDNN leaves it the float32-weight ones."""

from __future__ import annotations

import pytest
import torch

from depthwise_kernel_cases import CASES, depthwise, run_cases
from engine_helpers import compile_for_sm90, interpreted_cases
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import candidates, get_tactic

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("depthwise_kernel_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


@pytest.mark.parametrize("residual", [False, True])
def test_kernel_compiles_for_sm90(residual):
    from tensorforge.engine.tactics.conv_triton import BLOCK_C, BLOCK_P, NUM_WARPS
    from tensorforge.engine.tactics.conv_triton_kernel import depthwise_conv2d_nhwc

    constexprs = {
        "SH": 2,
        "SW": 2,
        "PH": 1,
        "PW": 1,
        "KH": 3,
        "KW": 3,
        "DH": 1,
        "DW": 1,
        "HAS_BIAS": True,
        "HAS_RESIDUAL": residual,
        "RESIDUAL_PRE": True,
        "ACT": 2,
        "BLOCK_P": BLOCK_P,
        "BLOCK_C": BLOCK_C,
    }
    signature = {
        "x_ptr": "*fp16",
        "w_ptr": "*fp32",
        "y_ptr": "*fp16",
        "bias_ptr": "*fp32",
        "r_ptr": "*fp16",
        **{k: "i32" for k in ("P", "C", "H", "W", "OH", "OW")},
        "lo": "fp32",
        "hi": "fp32",
        "slope": "fp32",
        **{k: "constexpr" for k in constexprs},
    }
    assert compile_for_sm90(depthwise_conv2d_nhwc, signature, constexprs, num_warps=NUM_WARPS).asm["cubin"]


def test_only_depthwise_layers_are_taken():
    tactic = get_tactic("engine.conv", "triton_depthwise_nhwc")
    g = depthwise(channels=8)
    node = g.nodes[0]
    assert tactic.supports(node, BuilderConfig()) is None
    node.attrs = {**node.attrs, "groups": 4}  # grouped, not depthwise
    assert "depthwise" in tactic.supports(node, BuilderConfig())


def test_cudnn_leaves_float32_weights_on_half_data_to_the_triton_kernel():
    node = depthwise(channels=8).nodes[0]  # float16 data, float32 weights (as assign_precision keeps them)
    supported, refused = candidates(node, "cuda", BuilderConfig(fp16=True))
    assert [t.name for t in supported][0] == "triton_depthwise_nhwc"
    cudnn = {t.name: why for t, why in refused if t.name.startswith("cudnn")}
    assert cudnn and all("float32 weights beside reduced-precision data" in why for why in cudnn.values())
    same_types = depthwise(channels=8, weight_dtype="float16").nodes[0]
    supported, _ = candidates(same_types, "cuda", BuilderConfig(fp16=True))
    assert {"triton_depthwise_nhwc", "cudnn_nhwc"} <= {t.name for t in supported}, "timing decides there"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    assert run_cases("cuda") == {name: None for name in CASES}
