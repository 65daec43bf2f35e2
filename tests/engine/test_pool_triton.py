"""The channels-last Triton max pool: every case of pool_kernel_cases.py under Triton's CPU interpreter (a
subprocess: TRITON_INTERPRET must be set before triton is imported), compiled for sm_90 by Triton's real
compiler, and on a GPU on CUDA."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import compile_for_sm90, interpreted_cases
from pool_kernel_cases import CASES, run_cases

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("pool_kernel_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_pool_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


def test_kernel_compiles_for_sm90():
    pytest.importorskip("triton")
    from tensorforge.engine.tactics.pool_triton import BLOCK_C, BLOCK_P
    from tensorforge.engine.tactics.pool_triton_kernel import max_pool2d_nhwc

    constexprs = {
        "SH": 1,
        "SW": 1,
        "PH": 1,
        "PW": 1,
        "KH": 3,
        "KW": 3,
        "DH": 1,
        "DW": 1,
        "BLOCK_P": BLOCK_P,
        "BLOCK_C": BLOCK_C,
    }
    signature = {
        "x_ptr": "*fp16",
        "y_ptr": "*fp16",
        **{k: "i32" for k in ("P", "C", "H", "W", "OH", "OW")},
        **{k: "constexpr" for k in constexprs},
    }
    assert compile_for_sm90(max_pool2d_nhwc, signature, constexprs).asm["cubin"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    assert run_cases("cuda") == {name: None for name in CASES}
