"""The channels-last Triton max pool: every case of pool_kernel_cases.py under Triton's CPU interpreter (a
subprocess: TRITON_INTERPRET must be set before triton is imported), compiled for sm_90 by Triton's real
compiler, and on a GPU on CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pool_kernel_cases import CASES, run_cases

pytest.importorskip("triton")
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def interpreted():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.path.join(HERE, ".."), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, os.path.join(HERE, "pool_kernel_cases.py"), "cpu"], env=env,
                          capture_output=True, text=True, timeout=600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line is not None, f"the interpreter run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(line[len("RESULTS "):])


@pytest.mark.parametrize("case", list(CASES))
def test_pool_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


def test_kernel_compiles_for_sm90():
    compiler = pytest.importorskip("triton.compiler")
    GPUTarget = pytest.importorskip("triton.backends.compiler").GPUTarget
    import triton
    from tensorforge.engine.tactics.pool_triton import BLOCK_C, BLOCK_P
    from tensorforge.engine.tactics.pool_triton_kernel import max_pool2d_nhwc
    constexprs = {"SH": 1, "SW": 1, "PH": 1, "PW": 1, "KH": 3, "KW": 3, "DH": 1, "DW": 1, "BLOCK_P": BLOCK_P,
                  "BLOCK_C": BLOCK_C}
    signature = {"x_ptr": "*fp16", "y_ptr": "*fp16", **{k: "i32" for k in ("P", "C", "H", "W", "OH", "OW")},
                 **{k: "constexpr" for k in constexprs}}
    try:
        source = compiler.ASTSource(max_pool2d_nhwc, signature, constexprs=constexprs)
    except TypeError as exc:  # another Triton's ASTSource; the GPU test compiles for real there
        pytest.skip(f"this Triton's ASTSource differs: {exc}")
    assert triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["cubin"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    assert run_cases("cuda") == {name: None for name in CASES}
