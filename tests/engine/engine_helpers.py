"""Shared pieces of the engine tests: run a pass the way the builder does and check it the same way everywhere.

`check_pass` runs one pass on a graph, then checks what every pass must keep: the result verifies, the input
graph is untouched (passes are pure), the pass's counter moved by the expected amount, and the optimized
graph computes what the original computed (`ir.execute` of both, per-dtype tolerance).
"""

from __future__ import annotations

import json

import torch

from helpers import TOLERANCES
from tensorforge import ir
from tensorforge.engine.passes import PassContext
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
# folded or fused float math reassociates: relative 1e-4 against the unoptimized graph (fp32)
FUSED_TOL = {torch.float32: (1e-4, 1e-5)}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def snapshot(graph: Graph) -> str:
    """Everything a pass must not change in its input: structure, names, attributes, and constant bits."""
    doc, tensors = ir.graph_to_json(graph)
    sums = {k: (t.dtype, tuple(t.shape), t.double().sum().item() if t.numel() else 0.0) for k, t in tensors.items()}
    return json.dumps(doc, sort_keys=True) + repr(sorted(sums.items()))


def assert_outputs_close(actual, expected, tol=None) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        if a.is_floating_point():
            rtol, atol = (tol or TOLERANCES)[a.dtype]
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
        else:
            assert torch.equal(a, e)


def check_pass(pass_fn, graph: Graph, inputs, *, count: int, tol=None, ctx: PassContext | None = None) -> Graph:
    ctx = ctx or PassContext()
    graph.verify()
    before = snapshot(graph)
    out = pass_fn(graph, ctx)
    assert out is not graph
    out.verify()
    assert snapshot(graph) == before, f"{pass_fn.__name__} changed its input graph"
    assert ctx.counters.get(pass_fn.__name__) == count, (pass_fn.__name__, ctx.counters, str(out))
    assert_outputs_close(ir.execute(out, *inputs), ir.execute(graph, *inputs), tol)
    return out


def graph_with_input(shape, dtype="float32", name="g") -> tuple[Graph, ir.Value]:
    graph = Graph(name)
    x = graph.add_input("x", TensorType(dtype, (BATCH,) + tuple(shape)))
    return graph, x


def batch_norm_params(graph: Graph, channels: int, prefix: str = "bn"):
    """Constant gamma, beta, mean, var with a positive variance far from 1 (so folding really changes weights)."""
    return [
        graph.add_constant(torch.randn(channels), f"{prefix}.gamma"),
        graph.add_constant(torch.randn(channels), f"{prefix}.beta"),
        graph.add_constant(torch.randn(channels), f"{prefix}.mean"),
        graph.add_constant(torch.rand(channels) + 0.5, f"{prefix}.var"),
    ]


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def compile_for_sm90(kernel, signature: dict, constexprs: dict, *, attrs=None, capability: int = 90, **options):
    """`kernel` compiled by Triton's real compiler for an H100 (sm90; another GPU with `capability`, e.g. 80), no
    GPU needed: it checks what the interpreter cannot (types, lowering, pipelining, shared memory). Skips the test
    when this Triton's ASTSource takes other arguments; the GPU tests compile for real there."""
    import pytest

    triton = pytest.importorskip("triton")
    compiler = pytest.importorskip("triton.compiler")
    GPUTarget = pytest.importorskip("triton.backends.compiler").GPUTarget  # noqa: N806 - a class, its own name
    try:
        source = compiler.ASTSource(kernel, signature, constexprs=constexprs, **({"attrs": attrs} if attrs else {}))
    except TypeError as exc:
        pytest.skip(f"this Triton's ASTSource differs: {exc}")
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def case_results(checks) -> dict[str, str | None]:
    """{case: None or what went wrong} from (case, check) pairs. A check returns None or a problem; an exception
    it raises is the problem, so one failing case never hides the others. The kernel case scripts use it."""
    results = {}
    for case, check in checks:
        try:
            results[case] = check()
        except Exception as exc:  # noqa: BLE001 - report every case
            results[case] = f"{type(exc).__name__}: {exc}"
    return results


def print_case_results(run_cases) -> None:
    """A case script's entry point: run its cases on the device named on the command line (cpu by default) and
    print them as the one JSON line `interpreted_cases` reads."""
    import sys

    print("RESULTS " + json.dumps(run_cases(sys.argv[1] if len(sys.argv) > 1 else "cpu")))


def interpreted_cases(script: str, timeout: int = 900) -> dict:
    """{case: None or the problem} from running the case script `script` (a file beside this one) under Triton's
    CPU interpreter, in a subprocess: TRITON_INTERPRET must be set before triton is imported."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([here, os.path.join(here, ".."), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, os.path.join(here, script), "cpu"], env=env, capture_output=True, text=True, timeout=timeout
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line is not None, f"the interpreter run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(line[len("RESULTS ") :])
