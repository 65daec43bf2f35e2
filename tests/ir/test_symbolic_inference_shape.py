"""Symbolic shape inference of the shape family beyond reshape/slice/concat/transpose (issue 14, step 3): split,
stack, tile, broadcast_to, flatten, layout_transform, reverse, roll and slice_scatter keep `seq`, `h`, `w` as size
expressions, and each graph runs like PyTorch at three sizes."""

import pytest
import torch

from symbolic_checks import OPEN, B, H, S, W, cases, check
from tensorforge import ir
from tensorforge.ir import Graph, ShapeInferenceError, TensorType


def _seq(g: Graph, feat: int = 6) -> ir.Value:
    return g.add_input("x", TensorType("float32", (B, S, feat)))


def case_split_sections_along_seq(g):
    parts = g.call("split", _seq(g), indices_or_sections=3, axis=1)
    expected = [(B, (S + 2) // 3, 6), (B, (S + 1) // 3, 6), (B, S // 3, 6)]
    return list(parts), expected, lambda x: torch.tensor_split(x, 3, dim=1)


def case_split_at_a_symbolic_point(g):
    parts = g.call("split", _seq(g), indices_or_sections=(S - 1,), axis=1)
    return list(parts), [(B, S - 1, 6), (B, 1, 6)], lambda x: torch.tensor_split(x, [x.shape[1] - 1], dim=1)


def case_split_at_negative_points(g):
    parts = g.call("split", _seq(g), indices_or_sections=(0, -1), axis=1)
    expected = [(B, 0, 6), (B, S - 1, 6), (B, 1, 6)]
    return list(parts), expected, lambda x: torch.tensor_split(x, [0, x.shape[1] - 1], dim=1)


def case_split_a_constant_axis_keeps_seq(g):
    parts = g.call("split", _seq(g), indices_or_sections=(2, 5), axis=2)
    return list(parts), [(B, S, 2), (B, S, 3), (B, S, 1)], lambda x: torch.tensor_split(x, [2, 5], dim=2)


def case_stack_of_expressions(g):
    x = _seq(g)
    y = g.call("strided_slice", x, begin=(1,), end=(OPEN,), axes=(1,))
    z = g.call("strided_slice", x, begin=(0,), end=(-1,), axes=(1,))
    return [g.call("stack", y, z, axis=2)], [(B, S - 1, 2, 6)], lambda x: torch.stack([x[:, 1:], x[:, :-1]], 2)


def case_tile_an_expression(g):
    y = g.call("strided_slice", _seq(g), begin=(1,), end=(OPEN,), axes=(1,))
    t = g.call("tile", y, reps=(2, 1, 3, 2))
    return [t], [(2, B, 3 * S - 3, 12)], lambda x: torch.tile(x[:, 1:], (2, 1, 3, 2))


def case_tile_fewer_reps_than_axes(g):
    t = g.call("tile", _seq(g), reps=(2, 1))
    return [t], [(B, 2 * S, 6)], lambda x: torch.tile(x, (2, 1))


def case_broadcast_to_symbolic_shape(g):
    x = g.add_input("x", TensorType("float32", (B, 1, 6)))
    y = g.add_input("y", TensorType("float32", (B, S, 1)))
    a = g.call("broadcast_to", x, shape=(B, S - 1, 6))
    b = g.call("broadcast_to", y, shape=(2, -1, -1, 6))

    def eager(x, y):
        return x.expand(-1, y.shape[1] - 1, 6), y.expand(2, -1, -1, 6)

    return [a, b], [(B, S - 1, 6), (2, B, S, 6)], eager


def case_flatten_by_reshape(g):
    x = g.add_input("x", TensorType("float32", (B, 3, H, W)))
    y = g.call("reshape", x, newshape=(B, -1))
    z = g.call("reshape", x, newshape=(-1, W))
    return [y, z], [(B, 3 * H * W), (3 * B * H, W)], lambda x: (x.reshape(x.shape[0], -1), x.reshape(-1, x.shape[3]))


def case_layout_reverse_roll_copy(g):
    x = g.add_input("x", TensorType("float32", (B, 3, H, W)))
    nhwc = g.call("layout_transform", x, src_layout="NCHW", dst_layout="NHWC")
    flipped = g.call("reverse", nhwc, axis=1)
    rolled = g.call("roll", flipped, shift=(2, -1), axis=(1, 2))
    out = g.call("copy", rolled)

    def eager(x):
        return torch.roll(torch.flip(x.permute(0, 2, 3, 1), (1,)), (2, -1), (1, 2))

    return [out], [(B, H, W, 3)], eager


def case_slice_scatter_into_seq(g):
    x = _seq(g)
    src = g.call("negative", g.call("strided_slice", x, begin=(1,), end=(OPEN,), axes=(1,)))
    y = g.call("slice_scatter", x, src, axis=1, begin=1, end=OPEN)
    return [y], [(B, S, 6)], lambda x: torch.slice_scatter(x, -x[:, 1:], 1, 1)


CASES, CASE_IDS = cases(globals())


@pytest.mark.parametrize("build", CASES, ids=CASE_IDS)
def test_shape_op_types_and_numerics(build):
    graph = Graph(build.__name__)
    outs, expected, eager = build(graph)
    check(graph, outs, expected, eager)


def test_split_at_a_constant_point_of_a_symbolic_axis_is_refused():
    """data[:2] is 2 only while seq >= 2 (tensor_split clamps): no expression holds at every size."""
    graph = Graph("refused")
    with pytest.raises(ShapeInferenceError, match="depends on the symbol"):
        graph.call("split", _seq(graph), indices_or_sections=(2,), axis=1)


def test_broadcast_to_a_different_symbol_is_refused():
    graph = Graph("refused")
    x = graph.add_input("x", TensorType("float32", (B, S, 6)))
    with pytest.raises(ShapeInferenceError, match="broadcast_to"):
        graph.call("broadcast_to", x, shape=(B, H, 6))
