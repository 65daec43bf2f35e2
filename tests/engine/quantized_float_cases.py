"""The float16 library path of the quantized layers (tactics/quantized_float.py: the 8-bit data converted to
float16, cuBLAS's or cuDNN's float16 product with a power-of-two-scaled weight, then one Triton epilogue) against
engine.qdense's and engine.qconv's references, on every layer of the 8-bit kernels' case tables: qgemm_cases.py
(dense and 1x1 layers, every epilogue) and qconv_cases.py (3x3, strided, dilated, asymmetric, depthwise, stems,
8-bit and float residuals). Run as a script under Triton's interpreter on CPU tensors by
tests/engine/test_quantized_float.py, and in-process on CUDA on a GPU.

How close is close enough: the product is rounded to float16 once, as an FP16 layer's output is (a relative error
of at most 2**-11 of each sum), so an int8 output lands one step off where a value sits that near a rounding
boundary: at most one step, on at most 2% of the elements (5% for an fp8 layer on CUDA, where the 8-bit kernels'
own fp8 products are as far off: qgemm_cases.INT8_EQUAL); an fp8 output within one e4m3 step; a float output
within 2e-3 of the output's largest value (float16's rounding of the sums, and of a float16 output; 1.6e-2 for
bfloat16's).
"""

from __future__ import annotations

import torch

import qconv_cases
import qgemm_cases
from engine_helpers import case_results, print_case_results

TACTICS = {"engine.qdense": "cublas_float16_epilogue", "engine.qconv": "cudnn_float16_epilogue"}
INT8_EQUAL = 0.98
# float outputs, relative to the output's largest value: float16's rounding of the sums (and of a float16 output),
# bfloat16's of a bfloat16 one
FLOAT_TOL = {torch.float32: 2e-3, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def close(got: torch.Tensor, expected: torch.Tensor, layer_dtype: str | None = None, *_: object) -> str | None:
    """None when the float16 path's output `got` is within the module docstring's bounds of `expected`: for an fp8
    layer, the int8 agreement the 8-bit kernels are held to (qgemm_cases.INT8_EQUAL: on an H100, cuBLASLt's fp8
    product too puts 3% of an int8 output one step off the float32 reference), where that is lower."""
    if got.dtype != expected.dtype or got.shape != expected.shape:
        return f"got {got.dtype} {tuple(got.shape)}, expected {expected.dtype} {tuple(expected.shape)}"
    agreement = min(INT8_EQUAL, qgemm_cases.INT8_EQUAL.get(layer_dtype or "int8", INT8_EQUAL))
    return qconv_cases.mismatch(got, expected, agreement, FLOAT_TOL)


def run_cases(device: str) -> dict:
    checks = []
    for case, make in qgemm_cases.CASES.items():
        graph = make()
        name = TACTICS[graph.nodes[0].op]
        checks.append((f"gemm:{case}", lambda graph=graph, name=name: qgemm_cases.check(graph, name, device, close)))
    for case in qconv_cases.CASES:
        name = TACTICS["engine.qconv"]
        checks.append((f"conv:{case}", lambda case=case, name=name: qconv_cases.check(case, device, name, close)))
    return case_results(checks)


if __name__ == "__main__":
    print_case_results(run_cases)
