"""The quantize tactic's Triton kernel: the reference's exact bytes under Triton's interpreter (a subprocess:
TRITON_INTERPRET must be set before triton is imported) and on CUDA, what it refuses, and its compile for sm_90."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import compile_for_sm90, interpreted_cases
from quantize_kernel_cases import CASES, layer, run_cases
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import get_tactic

pytest.importorskip("triton")
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("quantize_kernel_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


def _reason(node) -> str | None:
    return get_tactic("quantize", "triton_per_tensor").supports(node, BuilderConfig())


def test_what_the_kernel_refuses():
    (node,) = layer("float32", "uint8", (4,)).nodes
    assert "writes" in _reason(node)
    (node,) = layer("float32", "int8", (4,)).nodes
    node.attrs = {**node.attrs, "axis": 1}
    assert "per tensor" in _reason(node)


@pytest.mark.parametrize("pointer, out", [("*fp16", 1), ("*fp32", 2), ("*bf16", 1)])
def test_kernel_compiles_for_sm90(pointer, out):
    from tensorforge.engine.tactics.quantize_triton_kernel import quantize_per_tensor

    target = "*i8" if out == 1 else "*fp8e4nv"
    signature = {
        "x_ptr": pointer,
        "y_ptr": target,
        "n": "i32",
        "scale": "fp32",
        "OUT": "constexpr",
        "BLOCK": "constexpr",
    }
    assert compile_for_sm90(quantize_per_tensor, signature, {"OUT": out, "BLOCK": 2048}).asm["cubin"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_kernel_cases_on_cuda():
    problems = {case: why for case, why in run_cases("cuda").items() if why}
    assert not problems, problems
