"""What the symbolic shape-inference tests of every op family share (tests/ir/test_symbolic_inference_*.py): the
symbols, three sizes to run at, and the check that a graph's types are exactly the expected size expressions and
that at every size it runs with those sizes and PyTorch's values."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tensorforge import ir
from tensorforge.ir import Graph, SymExpr, TensorType
from tensorforge.ir.execute import bind_symbols
from tensorforge.ir.types import as_dim

B, S, H, W = (SymExpr.symbol(n) for n in ("batch", "seq", "h", "w"))
SYMBOLS = ("batch", "seq", "h", "w")
SIZES = [(2, 5, 9, 11), (3, 8, 16, 13), (1, 13, 7, 20)]  # (batch, seq, h, w)
OPEN = 2**63 - 1  # a slice's end that means "to the end"


def random_input(t: TensorType, env: dict[str, int], gen: torch.Generator) -> torch.Tensor:
    shape = t.concrete_shape(env)
    if t.dtype == "bool":
        return torch.rand(shape, generator=gen) > 0.5
    if t.dtype.startswith("int"):
        return torch.randint(0, 10, shape, generator=gen, dtype=t.torch_dtype)
    return torch.randn(shape, generator=gen)


def check(graph: Graph, outs: list[ir.Value], expected: list[tuple], eager: Callable) -> None:
    """Types are exactly the expected expressions; at every size the run has those sizes and PyTorch's values."""
    graph.set_outputs(outs)
    assert [o.type.shape for o in outs] == [tuple(as_dim(d) for d in e) for e in expected], [str(o.type) for o in outs]
    for sizes in SIZES:
        env = dict(zip(SYMBOLS, sizes))
        gen = torch.Generator().manual_seed(sum(sizes))
        inputs = [random_input(v.type, env, gen) for v in graph.inputs]
        bound = bind_symbols(graph, inputs)
        got = ir.execute(graph, *inputs)
        want = eager(*inputs)
        want = want if isinstance(want, (tuple, list)) else (want,)
        assert len(got) == len(want) == len(outs)
        for o, g_, w_ in zip(outs, got, want):
            assert tuple(g_.shape) == o.type.concrete_shape(bound) == tuple(w_.shape)
            torch.testing.assert_close(g_, w_)


def cases(namespace: dict) -> tuple[list[Callable], list[str]]:
    """The `case_*` builders of a test module (`cases(globals())`) and their ids, for parametrize."""
    found = [v for k, v in dict(namespace).items() if k.startswith("case_")]
    return found, [c.__name__.removeprefix("case_") for c in found]
