"""Graph building and queries: inferred types, multi-output nodes, users, MAC counts, parameter bytes."""

import pytest
import torch

from helpers import BATCH, build_single_op_graph
from tensorforge.ir import Graph, Sym, TensorType


def test_call_returns_a_value_or_a_tuple():
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float32", (BATCH, 6)))
    y = graph.call("nn.relu", x)
    parts = graph.call("split", y, indices_or_sections=3, axis=1)
    assert y.type == TensorType("float32", (BATCH, 6)) and y.producer.op == "nn.relu"
    assert isinstance(parts, tuple) and [p.type.shape for p in parts] == [(BATCH, 2)] * 3
    with pytest.raises(ValueError, match="has 3 outputs"):
        _ = parts[0].producer.output


def test_users_and_op_counts():
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float32", (2,)))
    a = graph.call("exp", x)
    b = graph.call("add", a, a)
    c = graph.call("add", b, x)
    graph.set_outputs([c])
    users = graph.users()
    assert [n.op for n in users[x]] == ["exp", "add"]
    assert users[a] == [b.producer, b.producer]  # once per use
    assert graph.op_counts() == {"exp": 1, "add": 2}


def test_parameter_bytes():
    graph = Graph("g")
    graph.add_constant(torch.zeros(4, 3), name="a")  # 48 bytes
    graph.add_constant(torch.zeros(5, dtype=torch.float16), name="b")  # 10 bytes
    graph.add_constant(torch.zeros(3, dtype=torch.int64), name="c")  # 24 bytes
    assert graph.parameter_bytes() == 82


def _macs(op, inputs, attrs=None, env=None, **kw):
    graph = build_single_op_graph(op, inputs, attrs, **kw)
    return graph.macs(env or {})


# (id, op, inputs, attrs, multiply-accumulates computed by hand)
MACS = [
    (
        "conv2d-stride2",
        "nn.conv2d",
        [torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3)],
        {"strides": (2, 2), "padding": (1, 1)},
        4 * 4 * 4 * (3 * 3 * 3),
    ),
    ("conv2d-depthwise", "nn.conv2d", [torch.zeros(1, 4, 6, 6), torch.zeros(4, 1, 3, 3)], {"groups": 4}, 4 * 4 * 4 * 9),
    (
        "conv2d_transpose-stride2",
        "nn.conv2d_transpose",
        [torch.zeros(1, 4, 5, 5), torch.zeros(4, 2, 3, 3)],
        {"strides": (2, 2)},
        4 * 5 * 5 * (2 * 3 * 3),
    ),
    ("dense", "nn.dense", [torch.zeros(2, 7, 8), torch.zeros(5, 8)], None, 2 * 7 * 5 * 8),
    ("matmul", "matmul", [torch.zeros(3, 4, 6), torch.zeros(6, 2)], None, 3 * 4 * 2 * 6),
    (
        "batch_matmul-transpose_a",
        "nn.batch_matmul",
        [torch.zeros(2, 6, 3), torch.zeros(2, 6, 4)],
        {"transpose_a": True, "transpose_b": False},
        2 * 3 * 4 * 6,
    ),
    (
        "sdpa",
        "nn.scaled_dot_product_attention",
        [torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 4)],
        None,
        2 * 3 * 5 * 7 * (8 + 4),
    ),
    ("add-no-macs", "add", [torch.zeros(4, 4), torch.zeros(4, 4)], None, 0),
    ("max_pool2d-no-macs", "nn.max_pool2d", [torch.zeros(1, 2, 4, 4)], {"pool_size": (2, 2)}, 0),
]


@pytest.mark.parametrize("op, inputs, attrs, expected", [m[1:] for m in MACS], ids=[m[0] for m in MACS])
def test_macs(op, inputs, attrs, expected):
    assert _macs(op, inputs, attrs, const_inputs=range(1, len(inputs))) == expected


def test_macs_scale_with_the_batch():
    inputs = [torch.zeros(2, 3, 8, 8), torch.zeros(4, 3, 3, 3)]
    per_sample = 4 * 6 * 6 * 27
    graph = build_single_op_graph("nn.conv2d", inputs, const_inputs=(1,), dynamic_batch=(0,))
    assert graph.macs() == per_sample  # batch 1 unless told
    assert graph.macs({"batch": 8}) == 8 * per_sample


def test_macs_of_a_scaled_symbol():
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float32", (BATCH, 4, 6)))
    heads = graph.call("reshape", x, newshape=(Sym("batch", 2), 2, 6))
    graph.set_outputs([graph.call("nn.batch_matmul", heads, heads)])  # (2b,2,6) x (2b,2,6)^T
    graph.verify()
    assert graph.macs({"batch": 3}) == 6 * 2 * 2 * 6
