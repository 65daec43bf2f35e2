"""Generated Triton kernels for engine.pointwise against the op's reference, one case table for two runners.

`run_cases(device)` runs every case and returns {case id: None or what went wrong}. Without a GPU,
tests/engine/test_pointwise_triton.py runs this file as a script under Triton's interpreter
(`TRITON_INTERPRET=1` must be set before triton is imported, hence a separate process) on CPU tensors, and
prints the result as JSON; on a GPU the same cases run in-process on CUDA.

Each case is a one-node graph holding an engine.pointwise node — made by fuse_pointwise from elementwise
nodes where the pass would fuse them, hand-written otherwise — its inputs, and how to call the kernel:
contiguous inputs (the fast kernel), transposed/sliced views (the strided kernel), outputs offered as
preallocated views (the kernel must write there), small blocks (several programs, a masked tail).
"""

from __future__ import annotations

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine.passes import PassContext, fuse_pointwise
from tensorforge.engine.passes.fuse_pointwise import group_program
from tensorforge.ir import Graph, Sym, TensorType
from tensorforge.ir.execute import bind_symbols

BATCH = Sym("batch")
# the kernel rounds once where the reference rounds after every op: a few units in the last place for chains
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (3e-3, 3e-3), torch.bfloat16: (2.5e-2, 2.5e-2)}
TD = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _fused(g: Graph, outputs) -> Graph:
    """What fuse_pointwise makes of `g` (one engine.pointwise node)."""
    g.set_outputs(outputs)
    out = fuse_pointwise(g.verify(), PassContext())
    assert [n.op for n in out.nodes] == ["engine.pointwise"], [n.op for n in out.nodes]
    return out


def _one_layer(g: Graph, outputs) -> Graph:
    """All of `g`'s nodes as one engine.pointwise node, siblings too (the pass joins only connected nodes)."""
    g.set_outputs(outputs)
    layer_inputs, attrs = group_program(g.verify().nodes, outputs)
    out = Graph(g.name)
    for v in g.inputs:
        out.add_input(v.name, v.type)
    values = {v.name: v for v in (*out.inputs,)}
    for v in layer_inputs:
        if v.name not in values:
            values[v.name] = out.add_constant(v.data, v.name)
    made = out.add_node("engine.pointwise", [values[v.name] for v in layer_inputs], attrs)
    out.set_outputs(made.outputs)
    return out.verify()


def chain(dtype="float32"):
    g = Graph("chain")
    x = g.add_input("x", TensorType(dtype, (BATCH, 5, 48)))
    y = g.call("nn.gelu", g.call("nn.bias_add", x, g.add_constant(torch.randn(48).to(TD[dtype]), "b"), axis=-1))
    z = g.call("nn.relu", g.call("multiply", y, g.add_constant(torch.tensor(0.5).to(TD[dtype]), "half")))
    return _fused(g, [z, g.call("sigmoid", y)]), [torch.randn(3, 5, 48).to(TD[dtype]) * 3]


def broadcast():
    g = Graph("broadcast")
    x = g.add_input("x", TensorType("float32", (BATCH, 4, 24)))
    gate = g.add_input("gate", TensorType("float32", (BATCH, 1, 24)))
    y = g.call("nn.bias_add", x, g.add_constant(torch.randn(4), "b"), axis=1)
    y = g.call(
        "add",
        g.call("multiply", y, g.add_constant(torch.randn(4, 1), "scale")),
        g.add_constant(torch.tensor(3.0), "three"),
    )
    m = g.call("sigmoid", gate)  # an output smaller than the domain, written once
    return _fused(g, [g.call("multiply", y, m), m]), [torch.randn(2, 4, 24), torch.randn(2, 1, 24)]


def mask_arithmetic():
    g = Graph("mask")
    scores = g.add_input("scores", TensorType("float32", (BATCH, 2, 8, 8)))
    mask = g.add_input("mask", TensorType("int64", (BATCH, 1, 1, 8)))
    keep = g.call("cast", g.call("greater", mask, g.add_constant(torch.tensor(0), "zero")), dtype="float32")
    bias = g.call(
        "multiply",
        g.call("subtract", g.add_constant(torch.tensor(1.0), "one"), keep),
        g.add_constant(torch.tensor(torch.finfo(torch.float32).min), "min"),
    )
    out = g.call("add", g.call("divide", scores, g.add_constant(torch.tensor(8.0), "d")), bias)
    return _fused(g, [out]), [torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 1, 1, 8))]


def activations(dtype="float32"):
    """Every unary op a program may hold, each an output of one program (positive inputs where needed)."""
    ops = [
        "nn.relu",
        "sigmoid",
        "tanh",
        "exp",
        "abs",
        "negative",
        "sin",
        "cos",
        "erf",
        "floor",
        "ceil",
        "sign",
        "nn.silu",
        "nn.hardswish",
        "nn.hardsigmoid",
        "nn.softplus",
        "nn.mish",
        "reciprocal",
    ]
    positive = ["log", "sqrt", "rsqrt"]
    program = [("load", 0), ("load", 1)]
    for op in ops:
        program.append((op, (0,), ()))
    for op in positive:
        program.append((op, (1,), ()))
    for attrs, op in (
        ((("approximate", "none"),), "nn.gelu"),
        ((("approximate", "tanh"),), "nn.gelu"),
        ((("alpha", 0.1),), "nn.leaky_relu"),
        ((("alpha", 1.5),), "nn.elu"),
    ):
        program.append((op, (0,), attrs))
    g = Graph("unary")
    x = g.add_input("x", TensorType(dtype, (BATCH, 70)))
    p = g.add_input("p", TensorType(dtype, (BATCH, 70)))
    outs = g.call("engine.pointwise", x, p, program=tuple(program), outputs=tuple(range(2, len(program))))
    g.set_outputs(list(outs))
    xs = torch.randn(2, 70) * 4
    xs[0, :8] = torch.tensor([0.0, -0.0, 1e-4, -1e-4, 30.0, -30.0, 0.5, -2.5])
    return g, [xs.to(TD[dtype]), (torch.rand(2, 70) * 5 + 0.05).to(TD[dtype])]


def casts_and_where():
    g = Graph("casts")
    x = g.add_input("x", TensorType("float32", (BATCH, 33)))
    half = g.call("cast", x, dtype="float16")
    as_int = g.call("cast", g.call("multiply", x, g.add_constant(torch.tensor(10.0), "ten")), dtype="int32")
    clipped = g.call("clip", x, a_min=-1.0, a_max=1.0)
    picked = g.call(
        "where",
        g.call("greater", x, g.add_constant(torch.tensor(0.0), "z")),
        clipped,
        g.call("nn.leaky_relu", x, alpha=0.2),
    )
    floor_only = g.call("clip", g.call("multiply", half, half), a_min=0.5)
    counted = g.call("add", as_int, g.add_constant(torch.tensor(7, dtype=torch.int32), "seven"))
    flags = g.call("logical_and", g.call("cast", as_int, dtype="bool"), g.call("less", x, picked))
    return _one_layer(g, [picked, floor_only, counted, flags, g.call("cast", half, dtype="float32")]), [
        torch.randn(2, 33) * 2
    ]


def powers_and_extremes():
    g = Graph("power")
    x = g.add_input("x", TensorType("float32", (BATCH, 40)))
    e = g.add_input("e", TensorType("float32", (40,)))
    outs = [g.call("power", x, g.add_constant(torch.tensor(v), f"p{i}")) for i, v in enumerate((2.0, 3.0, 0.0))]
    outs.append(g.call("power", g.call("abs", x), g.add_constant(torch.tensor(2.5), "p")))
    outs.append(g.call("power", x, e))  # negative bases: integer exponents real, the others NaN
    outs.append(g.call("maximum", x, g.call("negative", x)))
    outs.append(g.call("minimum", x, e))
    outs.append(g.call("divide", x, e))
    xs = torch.randn(2, 40) * 2
    xs[0, :3] = torch.tensor([float("nan"), 0.0, -3.0])
    es = torch.randint(-3, 4, (40,)).float()
    es[::3] += 0.5
    es[1] = float("nan")
    return _one_layer(g, outs), [xs, es]


def integers():
    g = Graph("ints")
    a = g.add_input("a", TensorType("int64", (BATCH, 30)))
    b = g.add_input("b", TensorType("int64", (30,)))
    s = g.call("subtract", g.call("multiply", a, b), g.call("abs", a))
    outs = [
        g.call("nn.relu", s),
        g.call("maximum", s, b),
        g.call("negative", s),
        g.call("logical_or", g.call("equal", a, b), g.call("logical_not", g.call("greater_equal", s, a))),
        g.call("logical_xor", g.call("less", a, b), g.add_constant(torch.tensor(True), "yes")),
        g.call("power", a, g.add_constant(torch.tensor(2), "two")),
    ]
    return _one_layer(g, outs), [torch.randint(-9, 9, (2, 30)), torch.randint(-9, 9, (30,))]


def scalars():
    g = Graph("scalar")
    x = g.add_input("x", TensorType("float32", ()))
    y = g.add_input("y", TensorType("float32", ()))
    return _fused(g, [g.call("tanh", g.call("add", x, y))]), [torch.tensor(0.3), torch.tensor(-1.1)]


# id -> (make, how): how is "contiguous", "strided" (inputs as views) or "offered" (outputs preallocated)
CASES = {
    "chain-fp32": (chain, "contiguous"),
    "chain-fp16": (lambda: chain("float16"), "contiguous"),
    "chain-bf16": (lambda: chain("bfloat16"), "contiguous"),
    "chain-strided": (chain, "strided"),
    "chain-offered": (chain, "offered"),
    "broadcast": (broadcast, "contiguous"),
    "broadcast-strided": (broadcast, "strided"),
    "broadcast-offered": (broadcast, "offered"),
    "mask-arithmetic": (mask_arithmetic, "contiguous"),
    "activations-fp32": (activations, "contiguous"),
    "activations-fp16": (lambda: activations("float16"), "contiguous"),
    "casts-where-clip": (casts_and_where, "offered"),
    "powers-nan": (powers_and_extremes, "contiguous"),
    "integers": (integers, "strided"),
    "scalars": (scalars, "contiguous"),
}


def _as_view(t: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view: transposed storage, or every other element of a wider one."""
    if t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if t.dim() == 1:
        wide = torch.zeros(t.shape[0] * 2, dtype=t.dtype, device=t.device)
        wide[::2] = t
        return wide[::2]
    return t


def run_case(case: str, device: str, block: int = 64) -> str | None:
    from tensorforge.engine.tactics.pointwise_triton import PointwiseKernel, node_layout

    make, how = CASES[case]
    torch.manual_seed(0)
    graph, inputs = make()
    (node,) = graph.nodes
    inputs = [t.to(device) for t in inputs]
    env = bind_symbols(graph, inputs)
    given = dict(zip((v.name for v in graph.inputs), inputs))
    inputs = [given[v.name] if v.data is None else v.data.to(device) for v in node.inputs]
    expected = node.opdef.run(inputs, node.attrs, env, device)
    if how == "strided":
        inputs = [_as_view(t) for t in inputs]
        if not any(not t.is_contiguous() for t in inputs):
            return "the strided case has no strided input"
    offered = [
        torch.empty_like(e, memory_format=torch.contiguous_format) if how == "offered" else None for e in expected
    ]
    actual = PointwiseKernel(node_layout(node), block, 4)(inputs, offered, env)
    problems = []
    for j, (a, e, view) in enumerate(zip(actual, expected, offered)):
        if view is not None and a is not view:
            problems.append(f"output {j} was not written into the offered view")
        if a.dtype != e.dtype or a.shape != e.shape:
            problems.append(f"output {j}: {a.dtype} {tuple(a.shape)}, expected {e.dtype} {tuple(e.shape)}")
            continue
        try:
            if e.is_floating_point():
                rtol, atol = TOL[e.dtype]
                torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=True)
            elif not torch.equal(a, e):
                raise AssertionError(f"{a} != {e}")
        except AssertionError as exc:
            problems.append(f"output {j} ({node.attrs['program'][node.attrs['outputs'][j]][0]}): {exc}")
    return "; ".join(problems) or None


def run_cases(device: str) -> dict[str, str | None]:
    return case_results((case, lambda case=case: run_case(case, device)) for case in CASES)


if __name__ == "__main__":
    print_case_results(run_cases)
