"""Shape inference with symbolic sizes other than k*batch (issue 14, step 3): expressions such as `seq - 1`,
`batch*seq`, `(h - 1) // 2 + 1` come out of elementwise ops unchanged and out of the shape and window ops'
arithmetic, and the graphs run, at three concrete sizes, like PyTorch."""

import pytest
import torch
import torch.nn.functional as F

from tensorforge import ir
from tensorforge.ir import Graph, ShapeInferenceError, SymExpr, TensorType
from tensorforge.ir.execute import bind_symbols
from tensorforge.ir.types import as_dim

B, S, H, W = (SymExpr.symbol(n) for n in ("batch", "seq", "h", "w"))
SIZES = [  # (batch, seq, h, w)
    (2, 5, 9, 11),
    (3, 8, 16, 13),
    (1, 13, 7, 20),
]


def _seq_input(graph: Graph, name: str = "x", feat: int = 6) -> ir.Value:
    return graph.add_input(name, TensorType("float32", (B, S, feat)))


def _img_input(graph: Graph, channels: int = 3) -> ir.Value:
    return graph.add_input("x", TensorType("float32", (B, channels, H, W)))


def _weight(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# Each case: graph builder (returns the output value), expected output shape, eager PyTorch of the same thing.
# The builders take the graph and return (output, inputs to make as a function of the sizes).
def case_relu_of_slice(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    return g.call("nn.relu", y), (B, S - 1, 6), lambda x: torch.relu(x[:, 1:])


def case_slice_symbolic_end(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(0,), end=(S - 1,), axes=(1,))
    return g.call("sigmoid", y), (B, S - 1, 6), lambda x: torch.sigmoid(x[:, :-1])


def case_slice_jax_open_end(g):
    x = _seq_input(g)  # jax2tf writes "to the end" as 10**9 (magika's ONNX file)
    y = g.call("strided_slice", x, begin=(0,), end=(10**9,), axes=(1,))
    return g.call("sigmoid", y), (B, S, 6), lambda x: torch.sigmoid(x[:, :1000000000])


def case_slice_negative_end_stride(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(1,), end=(-1,), strides=(2,), axes=(1,))
    return y, (B, (S - 1) // 2, 6), lambda x: x[:, 1:-1:2]


def case_broadcast_equal_symbolic(g):
    x = _seq_input(g)
    a = g.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    b = g.call("strided_slice", x, begin=(0,), end=(-1,), axes=(1,))
    row = g.call("strided_slice", a, begin=(0,), end=(1,), axes=(2,))  # (batch, seq - 1, 1) broadcasts on features
    return g.call("multiply", g.call("add", a, b), row), (B, S - 1, 6), lambda x: (x[:, 1:] + x[:, :-1]) * x[:, 1:, :1]


def case_reshape_minus_one(g):
    x = _seq_input(g)
    y = g.call("reshape", x, newshape=(-1, 6))
    return g.call("tanh", y), (B * S, 6), lambda x: torch.tanh(x.reshape(-1, 6))


def case_reshape_symbolic_target(g):
    x = _seq_input(g)
    y = g.call("reshape", x, newshape=(B, S, 2, 3))
    z = g.call("reshape", y, newshape=(B * S * 2, -1))
    return z, (2 * B * S, 3), lambda x: x.reshape(-1, 3)


def case_reshape_of_slice(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    return g.call("reshape", y, newshape=(B, -1)), (B, 6 * S - 6), lambda x: x[:, 1:].reshape(x.shape[0], -1)


def case_concatenate_symbolic_axis(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    return g.call("concatenate", x, y, axis=1), (B, 2 * S - 1, 6), lambda x: torch.cat([x, x[:, 1:]], 1)


def case_transpose(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(0,), end=(-1,), axes=(1,))
    return g.call("transpose", y, axes=(2, 0, 1)), (6, B, S - 1), lambda x: x[:, :-1].permute(2, 0, 1)


def case_expand_squeeze(g):
    x = _seq_input(g)
    y = g.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    e = g.call("expand_dims", y, axis=1, num_newaxis=2)
    return g.call("squeeze", g.call("exp", e), axis=(1,)), (B, 1, S - 1, 6), lambda x: x[:, 1:].exp().unsqueeze(1)


CONV_W = _weight(4, 3, 3, 3)


def case_conv2d(g):
    x = _img_input(g)
    w = g.add_constant(CONV_W, "w")
    y = g.call("nn.conv2d", x, w, strides=(2, 1), padding=(1, 0), dilation=(1, 2))
    shape = (B, 4, (H - 1) // 2 + 1, W - 4)
    return g.call("nn.relu", y), shape, lambda x: torch.relu(F.conv2d(x, CONV_W, None, (2, 1), (1, 0), (1, 2)))


def case_max_pool2d(g):
    x = _img_input(g)
    y = g.call("nn.max_pool2d", x, pool_size=(3, 2), strides=(2, 2), padding=(1, 0))
    return y, (B, 3, (H - 1) // 2 + 1, W // 2), lambda x: F.max_pool2d(x, (3, 2), (2, 2), (1, 0))


def case_avg_pool2d(g):
    x = _img_input(g)
    y = g.call("nn.avg_pool2d", x, pool_size=(2, 2), strides=(2, 2))
    z = g.call("nn.avg_pool2d", y, pool_size=(2, 2), strides=(2, 2))
    return z, (B, 3, H // 4, W // 4), lambda x: F.avg_pool2d(F.avg_pool2d(x, 2, 2), 2, 2)


CASES = [v for k, v in dict(globals()).items() if k.startswith("case_")]


def _inputs(graph: Graph, sizes: tuple[int, int, int, int]) -> list[torch.Tensor]:
    env = dict(zip(("batch", "seq", "h", "w"), sizes))
    gen = torch.Generator().manual_seed(sum(sizes))
    return [torch.randn(v.type.concrete_shape(env), generator=gen) for v in graph.inputs]


@pytest.mark.parametrize("build", CASES, ids=[c.__name__.removeprefix("case_") for c in CASES])
def test_symbolic_output_type_and_numerics(build):
    graph = Graph(build.__name__)
    out, expected, eager = build(graph)
    graph.set_outputs([out])
    assert out.type.shape == tuple(as_dim(d) for d in expected), str(out.type)
    for sizes in SIZES:
        inputs = _inputs(graph, sizes)
        env = bind_symbols(graph, inputs)
        assert env == {k: v for k, v in zip(("batch", "seq", "h", "w"), sizes) if k in env}
        (got,) = ir.execute(graph, *inputs)
        want = eager(*inputs)
        assert tuple(got.shape) == out.type.concrete_shape(env) == tuple(want.shape)
        torch.testing.assert_close(got, want)


def test_an_input_carrying_an_expression_propagates_and_binds():
    graph = Graph("expr_input")
    x = graph.add_input("x", TensorType("float32", (B, S, 4)))
    y = graph.add_input("y", TensorType("float32", (B, S - 1, 4)))
    z = graph.call(
        "add", graph.call("nn.relu", y), graph.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    )
    assert z.type.shape == (B, S - 1, 4)
    flat = graph.call("reshape", z, newshape=(-1,))
    assert flat.type.shape == (4 * B * S - 4 * B,)
    graph.set_outputs([flat])
    for batch, seq, _, _ in SIZES:
        xs = torch.randn(batch, seq, 4)
        ys = torch.randn(batch, seq - 1, 4)
        (got,) = ir.execute(graph, xs, ys)
        torch.testing.assert_close(got, (torch.relu(ys) + xs[:, 1:]).reshape(-1))


def test_batch_only_graphs_type_as_before():
    graph = Graph("batch_only")
    x = graph.add_input("x", TensorType("float32", (B, 3, 4)))
    assert graph.call("reshape", x, newshape=(-1, 4)).type.shape == (3 * B, 4)
    assert graph.call("reshape", x, newshape=(ir.Sym("batch", 2), -1)).type.shape == (2 * B, 6)
    assert graph.call("concatenate", x, x, axis=0).type.shape == (2 * B, 3, 4)
    assert graph.call("transpose", x).type.shape == (4, 3, B)


def test_what_the_ir_cannot_express_is_still_refused():
    graph = Graph("refused")
    x = graph.add_input("x", TensorType("float32", (B, S, 4)))
    with pytest.raises(ShapeInferenceError, match="depends on the symbol"):
        graph.call("strided_slice", x, begin=(0,), end=(8,), axes=(1,))  # clamps to seq below 8
    with pytest.raises(ShapeInferenceError, match="depends on the symbol"):
        graph.call("strided_slice", x, begin=(0,), end=(-2,), axes=(1,))  # seq - 2 is -1, not 0, at seq 1
    with pytest.raises(ShapeInferenceError):
        graph.call("squeeze", x)  # which axes go depends on the sizes


def test_shape_arithmetic_that_disagrees_with_the_reference_is_an_error_not_a_wrong_type():
    import dataclasses

    relu = ir.get_op("nn.relu")
    wrong = dataclasses.replace(relu, infer_shape=lambda inputs, attrs: [(B, S + 1)])
    with pytest.raises(ShapeInferenceError, match="shape arithmetic gives"):
        wrong.infer_types([TensorType("float32", (B, S))], {})
    declined = dataclasses.replace(relu, infer_shape=lambda inputs, attrs: None)  # None: the probe fit types it
    assert declined.infer_types([TensorType("float32", (B, S - 1))], {})[0].shape == (B, S - 1)


def test_expressions_the_close_probes_cannot_tell_apart_keep_their_own_axis():
    """(h + 15) // 16 and (w + 15) // 16 take the same values at all three close probes (h, w = 17/19, 37/41, 59/61
    give 2, 3, 4 on both axes): an op typed by the probe fit must still give each axis its own symbol."""
    g = Graph("strided")
    x = g.add_input("x", TensorType("float32", (1, 2, H, W)))
    y = g.call("strided_slice", x, begin=(0, 0), end=(2**63 - 1, 2**63 - 1), strides=(16, 16), axes=(2, 3))
    assert y.type.shape == (1, 2, (H + 15) // 16, (W + 15) // 16)
    z = g.call("nn.relu", g.call("nn.batch_norm", y, *(g.add_constant(torch.rand(2) + 0.5) for _ in range(4))))
    assert z.type.shape == (1, 2, (H + 15) // 16, (W + 15) // 16)
