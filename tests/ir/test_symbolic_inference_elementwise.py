"""Symbolic shape inference of elementwise ops (issue 14, step 3): broadcasting compares size expressions, equal
or one side 1, and keeps `seq`, `h`, `w` in the result; a symbolic size against a different one is refused naming
both. Each graph runs like PyTorch at three sizes."""

import re

import pytest
import torch
import torch.nn.functional as F

from symbolic_checks import OPEN, B, H, S, W, cases, check
from tensorforge.ir import Graph, ShapeInferenceError, TensorType


def case_unary_chain_on_an_expression(g):
    x = g.call("strided_slice", g.add_input("x", TensorType("float32", (B, S, H))), begin=(1,), end=(OPEN,), axes=(1,))
    y = g.call("nn.gelu", g.call("tanh", g.call("nn.silu", x)), approximate="tanh")
    return (
        [g.call("clip", y, a_min=-0.5, a_max=0.5)],
        [(B, S - 1, H)],
        lambda x: F.gelu(F.silu(x[:, 1:]).tanh(), approximate="tanh").clamp(-0.5, 0.5),
    )


def case_binary_equal_expressions(g):
    x = g.add_input("x", TensorType("float32", (B, S, 4)))
    y = g.add_input("y", TensorType("float32", (B, S, 4)))
    return [g.call("maximum", g.call("multiply", x, y), y)], [(B, S, 4)], lambda x, y: torch.maximum(x * y, y)


def case_binary_one_side_one(g):
    x = g.add_input("x", TensorType("float32", (B, 1, W)))
    y = g.add_input("y", TensorType("float32", (1, H, 1)))
    return [g.call("subtract", x, y)], [(B, H, W)], lambda x, y: x - y


def case_binary_lower_rank_broadcasts_on_the_left(g):
    x = g.add_input("x", TensorType("float32", (B, S, H)))
    y = g.add_input("y", TensorType("float32", (H,)))
    z = g.add_input("z", TensorType("float32", ()))
    return [g.call("add", g.call("divide", x, y), z)], [(B, S, H)], lambda x, y, z: x / y + z


def case_binary_on_sliced_expressions(g):
    x = g.add_input("x", TensorType("float32", (B, S, 3)))
    a = g.call("strided_slice", x, begin=(1,), end=(OPEN,), axes=(1,))
    b = g.call("strided_slice", x, begin=(0,), end=(-1,), axes=(1,))
    return [g.call("power", g.call("abs", a), b)], [(B, S - 1, 3)], lambda x: torch.pow(x[:, 1:].abs(), x[:, :-1])


def case_comparison_and_where(g):
    x = g.add_input("x", TensorType("float32", (B, S, 1)))
    y = g.add_input("y", TensorType("float32", (1, S, W)))
    mask = g.call("greater", x, y)
    out = g.call("where", mask, x, g.call("negative", y))
    return [mask, out], [(B, S, W), (B, S, W)], lambda x, y: (x > y, torch.where(x > y, x, -y))


def case_prelu_cast_on_h_w(g):
    x = g.add_input("x", TensorType("float32", (B, 3, H, W)))
    alpha = g.add_constant(torch.tensor([0.1, 0.2, 0.3]), "alpha")
    y = g.call("cast", g.call("nn.prelu", x, alpha), dtype="float64")
    return [y], [(B, 3, H, W)], lambda x: F.prelu(x, torch.tensor([0.1, 0.2, 0.3])).double()


CASES, CASE_IDS = cases(globals())


@pytest.mark.parametrize("build", CASES, ids=CASE_IDS)
def test_elementwise_types_and_numerics(build):
    graph = Graph(build.__name__)
    outs, expected, eager = build(graph)
    check(graph, outs, expected, eager)


@pytest.mark.parametrize(
    "x_shape, y_shape, message",
    [
        ((B, S, 6), (B, 7, 6), "seq broadcast against 7 holds only at seq = 7"),
        ((B, S, 6), (7, 6), "seq broadcast against 7 holds only at seq = 7"),
        ((B, 7, 6), (B, S, 6), "seq broadcast against 7 holds only at seq = 7"),
        ((B, S, 6), (B, H, 6), "seq broadcast against h holds only at seq = h"),
        ((B, S, 6), (B, S - 1, 6), "seq broadcast against seq - 1 holds only at seq = seq - 1"),
    ],
)
def test_a_symbolic_size_against_a_different_one_is_refused_naming_both(x_shape, y_shape, message):
    graph = Graph("refused")
    x = graph.add_input("x", TensorType("float32", x_shape))
    y = graph.add_input("y", TensorType("float32", y_shape))
    with pytest.raises(ShapeInferenceError, match=re.escape(message)) as info:
        graph.call("add", x, y)
    assert str(info.value).startswith("add(")  # names the op and its input types
    with pytest.raises(ShapeInferenceError, match=re.escape(message)):
        graph.call("where", graph.add_input("c", TensorType("bool", (1,))), x, y)


def test_constant_sizes_that_differ_keep_the_reference_message():
    graph = Graph("static")
    x = graph.add_input("x", TensorType("float32", (B, 5, 6)))
    y = graph.add_input("y", TensorType("float32", (B, 7, 6)))
    with pytest.raises(ShapeInferenceError, match="Attempting to broadcast a dimension of length 7"):
        graph.call("add", x, y)
