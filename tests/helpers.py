"""One way to test an IR op: build a one-node graph, verify it, run it, compare with PyTorch eager.

Every op test goes through `check_case`, so "the op computes what the framework computes" is checked the
same way everywhere: the graph must verify, the inferred output types must match what execution really
produced (dtype and shape, with the batch symbol bound), and the values must match the expected result
within the tolerance of their dtype (`TOLERANCES`). Expected values are computed by the test from
PyTorch eager (modules, functionals, operators) or numpy, never by the op's own reference function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from tensorforge.ir import Graph, Sym, TensorType, execute
from tensorforge.ir.execute import bind_symbols

BATCH = Sym("batch")

# (rtol, atol) per dtype; integers and bool must match exactly
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.int64: (0.0, 0.0),
    torch.int32: (0.0, 0.0),
    torch.int16: (0.0, 0.0),
    torch.int8: (0.0, 0.0),
    torch.uint8: (0.0, 0.0),
    torch.bool: (0.0, 0.0),
}

SHORT_DTYPE = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "bool",
}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    tol: tuple[float, float] | None = None,
) -> None:
    """Same dtype, same shape, values within TOLERANCES[dtype] (exact for integers and bool)."""
    dtype = expected.dtype if dtype is None else dtype
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    assert expected.dtype == dtype, f"the expected value has dtype {expected.dtype}, the case says {dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    )
    rtol, atol = tol if tol is not None else TOLERANCES[dtype]
    if rtol == 0 and atol == 0:
        assert torch.equal(actual, expected), f"values differ:\nactual   {actual}\nexpected {expected}"
    else:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# One-node graphs
# ---------------------------------------------------------------------------------------------


def _batched(dynamic_batch: bool | Iterable[int], index: int) -> bool:
    if isinstance(dynamic_batch, bool):
        return dynamic_batch
    return index in set(dynamic_batch)


def build_single_op_graph(
    op: str,
    inputs: Sequence[torch.Tensor],
    attrs: dict[str, Any] | None = None,
    *,
    const_inputs: Iterable[int] = (),
    dynamic_batch: bool | Iterable[int] = False,
) -> Graph:
    """A verified graph with one node `op`: input i is a constant if i is in `const_inputs`, else a graph input
    (with dimension 0 the symbol `batch` when `dynamic_batch` is True or names i)."""
    const_inputs = set(const_inputs)
    graph = Graph(op.replace(".", "_"))
    values = []
    for i, tensor in enumerate(inputs):
        if i in const_inputs:
            values.append(graph.add_constant(tensor, name=f"w{i}"))
            continue
        t = TensorType.of(tensor)
        if _batched(dynamic_batch, i):
            t = TensorType(t.dtype, (BATCH,) + t.shape[1:])
        values.append(graph.add_input(f"x{i}", t))
    node = graph.add_node(op, values, attrs or {}, name="node")
    graph.set_outputs(node.outputs)
    graph.verify()
    return graph


def run_graph(graph: Graph, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Execute `graph` and check that every output has exactly its inferred type (symbols bound)."""
    env = bind_symbols(graph, inputs)
    outputs = execute(graph, *inputs)
    assert len(outputs) == len(graph.outputs), f"{len(outputs)} outputs, the graph declares {len(graph.outputs)}"
    for value, tensor in zip(graph.outputs, outputs):
        assert isinstance(tensor, torch.Tensor), f"output %{value.name} is a {type(tensor).__name__}"
        inferred = TensorType(value.type.dtype, value.type.concrete_shape(env))
        assert TensorType.of(tensor) == inferred, (
            f"output %{value.name}: inferred type {value.type} (= {inferred} with {env}) but execution produced "
            f"{TensorType.of(tensor)}"
        )
    return outputs


def run_single_op(
    op: str,
    inputs: Sequence[torch.Tensor],
    attrs: dict[str, Any] | None = None,
    *,
    const_inputs: Iterable[int] = (),
    dynamic_batch: bool | Iterable[int] = False,
) -> tuple[torch.Tensor, ...]:
    """Build, verify and execute a one-node graph; return its outputs (types checked against inference)."""
    const_inputs = set(const_inputs)
    graph = build_single_op_graph(op, inputs, attrs, const_inputs=const_inputs, dynamic_batch=dynamic_batch)
    return run_graph(graph, [t for i, t in enumerate(inputs) if i not in const_inputs])


# ---------------------------------------------------------------------------------------------
# Case tables
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One row of an op table.

    `make_inputs()` builds the inputs (float tensors in float32; they are cast to `dtype` when it is given),
    `expected(*inputs)` computes the framework's result from those same inputs (a tensor or a tuple).
    """

    op: str
    make_inputs: Callable[[], list[torch.Tensor]]
    expected: Callable[..., Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    dtype: torch.dtype | None = None
    const_inputs: tuple[int, ...] = ()
    tol: tuple[float, float] | None = None

    def inputs(self) -> list[torch.Tensor]:
        torch.manual_seed(0)
        tensors = list(self.make_inputs())
        if self.dtype is not None:
            tensors = [t.to(self.dtype) if t.is_floating_point() else t for t in tensors]
        return tensors


def case(
    name: str,
    op: str,
    make_inputs,
    expected,
    attrs: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    const: Sequence[int] = (),
    tol=None,
    marks=(),
):
    """A pytest param for one case; its id is `name`, with the dtype appended when the case has one."""
    ident = f"{name}-{SHORT_DTYPE[dtype]}" if dtype is not None else name
    return pytest.param(
        Case(op, make_inputs, expected, dict(attrs or {}), dtype, tuple(const), tol), id=ident, marks=marks
    )


def check_case(c: Case) -> None:
    inputs = c.inputs()
    actual = run_single_op(c.op, inputs, c.attrs, const_inputs=c.const_inputs)
    with torch.no_grad():
        expected = c.expected(*[t.clone() for t in inputs])
    expected = tuple(expected) if isinstance(expected, (tuple, list)) else (expected,)
    assert len(actual) == len(expected), f"{c.op}: {len(actual)} outputs, expected {len(expected)}"
    for a, e in zip(actual, expected):
        e = torch.as_tensor(e)
        assert_close(a, e, tol=c.tol)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
    return torch.rand(*shape) * (high - low) + low


def plan_ops(module) -> list[str]:
    """The ops of every plan `module` has built so far (what ran in the engine, after its passes)."""
    return [n.op for plans in module.plans().values() for plan in plans for n in plan.graph.nodes]
