"""The Triton kernel of engine.layer_norm against torch's layer_norm in float32, one case table for two runners.

`run_cases(device)` binds each Triton tactic (one row or four per program) to each case's engine.layer_norm
(or plain nn.layer_norm) node, calls the kernel and returns {"case[tactic]": None or what went wrong}. Without
a GPU, tests/engine/test_fuse_layer_norm.py runs this file as a script under Triton's interpreter
(`TRITON_INTERPRET=1` must be set before triton is imported, hence a separate process) on CPU tensors and
reads the JSON it prints; on a GPU the same cases run in-process on CUDA.

Expected values come from `F.layer_norm` on the float32 sum, rounded once to the output type — not from the
op's reference. Cases cover 16-bit and float32 I/O, with and without a residual and the returned sum, hidden
sizes that are not powers of two (768, 100), residuals that are views (ViT's transposed residual stream, a
slice; rank 3 and 4), views no two strides address (copied), outputs offered as arena views or left to the kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.engine.tactics.norm_triton import ROW_TILES, row_strides
from tensorforge.ir import Graph, Sym, TensorType, get_op

TD = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# y is rounded once from float32 math: an ulp of the output type at most, plus float32 summation order
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1e-2)}
# Triton's interpreter truncates float32 -> bfloat16 conversions (compiled kernels round to nearest even), so
# there a bfloat16 sum may be one unit in the last place below the add's
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class Case:
    dtype: str = "float16"
    hidden: int = 768
    residual: bool = True
    emit_sum: bool = False
    out_dtype: str | None = None
    params: str = "float32"  # gamma and beta
    layout: str = "contiguous"  # of x and residual: "contiguous", "transposed", "sliced" or "columns"
    lead: tuple = (3, 5)  # the leading axes (the first is the batch): 15 rows, the interpreter is slow
    copied: bool = False  # the layout is one the kernel copies first (no two strides address it)
    offered: bool = True  # outputs handed over as preallocated arena views
    op: str = "engine.layer_norm"  # or "nn.layer_norm": a plain norm (no residual) through the same kernel
    quantize: str | None = None  # int8 / float8_e4m3fn: the quantized y as the last output (scale QUANTIZE_SCALE)


QUANTIZE_SCALE = 0.02


CASES = {
    "fp16-residual-sum-768": Case(emit_sum=True),
    "fp16-plain-768": Case(residual=False),
    "fp16-residual-transposed-768": Case(layout="transposed"),
    "fp16-residual-sum-transposed-100": Case(hidden=100, emit_sum=True, layout="transposed", offered=False),
    "fp16-in-fp32-out-residual": Case(hidden=100, out_dtype="float32"),
    "fp16-params-fp16-sliced": Case(hidden=100, params="float16", layout="sliced", emit_sum=True),
    "fp16-rank4-transposed-copied": Case(hidden=100, layout="transposed", lead=(3, 2, 5), copied=True),
    "fp16-rank4-sliced-sum": Case(hidden=100, layout="sliced", lead=(2, 3, 2), emit_sum=True),
    "fp16-columns-copied": Case(hidden=100, layout="columns", residual=False, copied=True),
    "fp32-residual-100": Case(dtype="float32", hidden=100),
    "fp32-residual-sum-768": Case(dtype="float32", emit_sum=True),
    "fp32-plain-to-fp16": Case(dtype="float32", hidden=100, residual=False, out_dtype="float16"),
    "fp32-transposed-sum-100": Case(dtype="float32", hidden=100, emit_sum=True, layout="transposed"),
    "bf16-residual-sum-100": Case(dtype="bfloat16", hidden=100, emit_sum=True),
    "fp16-residual-quantized-int8-768": Case(quantize="int8"),
    "fp16-sum-quantized-fp8-100": Case(hidden=100, emit_sum=True, quantize="float8_e4m3fn", offered=False),
    "fp32-quantized-int8-to-fp16": Case(dtype="float32", hidden=100, out_dtype="float16", quantize="int8"),
    "plain-fp16-768": Case(residual=False, op="nn.layer_norm"),
    "plain-fp32-transposed-100": Case(
        dtype="float32", hidden=100, residual=False, layout="transposed", op="nn.layer_norm", offered=False
    ),
}


def layer(case: Case) -> Graph:
    """A one-node graph holding the engine.layer_norm of `case`."""
    g = Graph("layer_norm")
    x = g.add_input("x", TensorType(case.dtype, (Sym("batch"), *case.lead[1:], case.hidden)))
    inputs = [x]
    if case.residual:
        inputs.append(g.add_input("r", TensorType(case.dtype, x.type.shape)))
    gamma = g.add_constant((torch.rand(case.hidden) + 0.5).to(TD[case.params]), "gamma")
    beta = g.add_constant(torch.randn(case.hidden).to(TD[case.params]), "beta")
    if case.op == "nn.layer_norm":
        out = g.call("nn.layer_norm", x, gamma, beta, axis=-1, epsilon=1e-5)
    else:
        out = g.call(
            "engine.layer_norm",
            *inputs,
            gamma,
            beta,
            epsilon=1e-5,
            has_residual=case.residual,
            emit_sum=case.emit_sum,
            out_dtype=case.out_dtype,
            quantize_dtype=case.quantize,
            quantize_scale=QUANTIZE_SCALE if case.quantize else None,
        )
    g.set_outputs(list(out) if isinstance(out, tuple) else [out])
    return g.verify()


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """`t`'s values in the given memory layout."""
    if layout == "transposed":  # ViT: a [tokens, batch, hidden] tensor read as [batch, tokens, hidden]
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "sliced":  # every other entry along axis 1 of a wider tensor
        wide = torch.zeros(t.shape[0], t.shape[1] * 2, *t.shape[2:], dtype=t.dtype, device=t.device)
        wide[:, ::2] = t
        return wide[:, ::2]
    if layout == "columns":  # the normalized axis is not the contiguous one
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


def run_case(case: Case, device: str, tile: str = "triton") -> str | None:
    graph = layer(case)
    (node,) = graph.nodes
    tactic = get_tactic(case.op, tile)
    reason = tactic.supports(node, BuilderConfig())
    if reason is not None:
        return f"refused: {reason}"
    kernel = tactic.bind(node, BindContext(torch.device(device), BuilderConfig(), case.lead[0]))
    shape = (*case.lead, case.hidden)
    x = (torch.randn(shape) * 2 + 0.5).to(TD[case.dtype]).to(device)
    r = torch.randn(shape).to(TD[case.dtype]).to(device)
    gamma, beta = (v.data.to(device) for v in node.inputs[-2:])
    total = x.float() + r.float() if case.residual else x.float()
    y = F.layer_norm(total, (case.hidden,), gamma.float(), beta.float(), 1e-5)
    expected = [y.to(TD[case.out_dtype or case.dtype])] + ([total.to(x.dtype)] if case.emit_sum else [])
    if case.quantize:
        scale = torch.tensor(QUANTIZE_SCALE, device=device)
        expected += get_op("quantize").run([y, scale], {"axis": None, "dtype": case.quantize}, {})
    reads = [_laid_out(x, case.layout)] + ([_laid_out(r, case.layout)] if case.residual else [])
    if case.layout != "contiguous" and reads[-1].is_contiguous():
        return f"the {case.layout} case has no view to read"
    if (row_strides(shape, reads) is None or reads[0].stride(-1) != 1) != case.copied:
        return f"the {case.layout} layout of {shape} is not one the kernel {'copies' if case.copied else 'reads'}"
    offered = [torch.empty_like(e) if case.offered else None for e in expected]
    actual = kernel([*reads, gamma, beta], offered, {"batch": case.lead[0]})
    problems = []
    for j, (a, e, view) in enumerate(zip(actual, expected, offered)):
        if view is not None and a is not view:
            problems.append(f"output {j} was not written into the offered view")
        if a.dtype != e.dtype or a.shape != e.shape:
            problems.append(f"output {j}: {a.dtype} {tuple(a.shape)}, expected {e.dtype} {tuple(e.shape)}")
            continue
        if case.quantize and j == len(expected) - 1:  # y's float32 math rounds apart by an ulp: a tie may flip
            problems += quantized_mismatch(a.cpu(), e.cpu())
            continue
        rtol, atol = TOL[e.dtype]
        if j == 1:  # the sum is rounded once, exactly as an add rounds it
            rtol, atol = (2.0**-7, 0.0) if e.dtype == torch.bfloat16 and INTERPRETED else (0.0, 0.0)
        try:
            torch.testing.assert_close(a.cpu(), e.cpu(), rtol=rtol, atol=atol)
        except AssertionError as exc:
            problems.append(f"output {j}: {exc}")
    return "; ".join(problems) or None


def quantized_mismatch(actual: torch.Tensor, expected: torch.Tensor) -> list[str]:
    """[] when 8-bit `actual` is `expected` up to one step on at most 1% of the elements (int8), or one e4m3 step
    (fp8), else what differs."""
    a, e = actual.float(), expected.float()
    if expected.dtype == torch.int8:
        steps = (a - e).abs()
        if steps.max() > 1 or (steps > 0).float().mean() > 0.01:
            return [f"int8 output: {int((steps > 0).sum())} of {steps.numel()} differ, by up to {steps.max():.0f}"]
        return []
    if not torch.allclose(a, e, rtol=0.125, atol=2.0**-9):
        return [f"fp8 output: largest difference {(a - e).abs().max():.4g}"]
    return []


def run_cases(device: str) -> dict[str, str | None]:
    def seeded(case, tile):
        torch.manual_seed(0)
        return run_case(case, device, tile)

    return case_results(
        (f"{name}[{tile}]", lambda case=case, tile=tile: seeded(case, tile))
        for name, case in CASES.items()
        for tile in ROW_TILES
    )


if __name__ == "__main__":
    print_case_results(run_cases)
