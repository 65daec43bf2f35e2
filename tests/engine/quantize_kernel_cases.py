"""The quantize tactic's Triton kernel (tactics/quantize_triton.py) against the quantize op's reference, one case
table for two runners: under Triton's interpreter on CPU tensors (tests/engine/test_quantize_triton.py runs this
file as a script: TRITON_INTERPRET must be set before triton is imported) and in-process on CUDA.

The kernel must write the reference's exact bytes: the data holds exact ties of the scale (0.5, 1.5, 2.5 steps),
values past saturation, and for fp8 values whose rounding carries into the next power of two."""

from __future__ import annotations

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.ir import Graph, Sym, TensorType

TD = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SCALE = 0.0123
CASES = {  # (input dtype, quantized dtype, shape after the batch, a strided view as input)
    "fp32-int8": ("float32", "int8", (5, 77), False),
    "fp16-int8": ("float16", "int8", (3, 1000), False),
    "fp16-int8-transposed-view": ("float16", "int8", (12, 9), True),
    "bf16-fp8": ("bfloat16", "float8_e4m3fn", (4, 33), False),
    "fp32-fp8": ("float32", "float8_e4m3fn", (2, 3000), False),
}


def layer(dtype: str, quantized: str, shape: tuple[int, ...]) -> Graph:
    g = Graph("quantize")
    x = g.add_input("x", TensorType(dtype, (Sym("batch"), *shape)))
    s = g.add_constant(torch.tensor(SCALE), "s")
    g.set_outputs([g.call("quantize", x, s, dtype=quantized)])
    return g.verify()


def data(dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Random values with exact ties of the scale, saturating ones and fp8 carries among them."""
    x = torch.randn(2, *shape) * 60 * SCALE
    flat = x.view(-1)
    special = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 300.0, -300.0, 7.99, 124.7, 500.0, -1e-4]) * SCALE
    flat[: special.numel()] = special
    return x.to(TD[dtype])


def check(name: str, device: str) -> str | None:
    dtype, quantized, shape, view = CASES[name]
    (node,) = layer(dtype, quantized, shape).nodes
    tactic = get_tactic("quantize", "triton_per_tensor")
    reason = tactic.supports(node, BuilderConfig())
    if reason is not None:
        return f"refused: {reason}"
    kernel = tactic.bind(node, BindContext(torch.device(device), BuilderConfig(), 2))
    x = data(dtype, shape)
    if view:  # the same values read through a transposed view
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    scale = node.inputs[1].data
    expected = node.opdef.run([x, scale], node.attrs, {"batch": 2}, torch.device("cpu"))[0]
    offered = torch.empty(expected.shape, dtype=expected.dtype, device=device)
    (got,) = kernel([x.to(device)], [offered], {"batch": 2})
    if got.data_ptr() != offered.data_ptr():
        return "the kernel did not write into the arena view it was offered"
    if not torch.equal(got.cpu().view(torch.uint8), expected.view(torch.uint8)):
        differ = (got.cpu().view(torch.uint8) != expected.view(torch.uint8)).sum()
        return f"{int(differ)} of {expected.numel()} bytes differ from the reference"
    return None


def run_cases(device: str) -> dict:
    return case_results((name, lambda name=name: check(name, device)) for name in CASES)


if __name__ == "__main__":
    print_case_results(run_cases)
