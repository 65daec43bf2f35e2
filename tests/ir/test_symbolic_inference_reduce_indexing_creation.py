"""Symbolic shape inference of reductions, indexing and creation ops (issue 14, step 3): reductions keep or drop
size expressions, take/gather/adv_index shape their output by the index (an embedding lookup of a `seq`-long
index), arange/full take symbolic sizes as attributes. Each graph runs like PyTorch at three sizes."""

import pytest
import torch

from symbolic_checks import OPEN, B, H, S, W, cases, check
from tensorforge.ir import Graph, ShapeInferenceError, TensorType


def case_reductions_keep_and_drop(g):
    x = g.add_input("x", TensorType("float32", (B, S, H)))
    outs = [
        g.call("sum", x, axis=(1,)),
        g.call("mean", x, axis=(2,), keepdims=True),
        g.call("max", x, axis=(0, 2)),
        g.call("variance", x, axis=(1,), keepdims=True, unbiased=True),
        g.call("prod", x, axis=None),
    ]

    def eager(x):
        return x.sum(1), x.mean(2, keepdim=True), x.amax((0, 2)), x.var(1, keepdim=True), x.prod()

    return outs, [(B, H), (B, S, 1), (S,), (B, 1, H), ()], eager


def case_arg_reductions_and_cumsum_on_an_expression(g):
    x = g.call("strided_slice", g.add_input("x", TensorType("float32", (B, S, H))), begin=(1,), end=(OPEN,), axes=(1,))
    outs = [g.call("argmax", x, axis=1), g.call("argmin", x, axis=2, keepdims=True), g.call("cumsum", x, axis=1)]

    def eager(x):
        x = x[:, 1:]
        return x.argmax(1), x.argmin(2, keepdim=True), x.cumsum(1)

    return outs, [(B, H), (B, S - 1, 1), (B, S - 1, H)], eager


EMB = torch.randn(10, 8, generator=torch.Generator().manual_seed(3))


def case_embedding_lookup_of_a_seq_long_index(g):
    ids = g.add_input("ids", TensorType("int64", (B, S)))
    out = g.call("take", g.add_constant(EMB, "emb"), ids, axis=0)
    return [out], [(B, S, 8)], lambda ids: torch.nn.functional.embedding(ids, EMB)


def case_take_along_a_middle_axis(g):
    x = g.add_input("x", TensorType("float32", (B, 10, W)))
    ids = g.add_input("ids", TensorType("int64", (S, H)))
    out = g.call("take", x, ids, axis=1)
    return [out], [(B, S, H, W)], lambda x, ids: x[:, ids]


def case_gather_by_an_index_of_symbolic_shape(g):
    x = g.add_input("x", TensorType("float32", (B, S, 12)))
    ids = g.add_input("ids", TensorType("int64", (B, S, H)))
    return [g.call("gather", x, ids, axis=2)], [(B, S, H)], lambda x, ids: torch.gather(x, 2, ids)


def case_adv_index_broadcasts_indices(g):
    x = g.add_input("x", TensorType("float32", (B, 10, 10, W)))
    i = g.add_input("i", TensorType("int64", (S, 1)))
    j = g.add_input("j", TensorType("int64", (H,)))
    return [g.call("adv_index", x, i, j, axes=(1, 2))], [(B, S, H, W)], lambda x, i, j: x[:, i, j]


def case_arange_to_symbolic_stops(g):
    x = g.add_input("x", TensorType("float32", (B, S)))
    positions = g.call("arange", stop=S)
    odd = g.call("arange", start=1, stop=S, step=2)
    down = g.call("arange", start=S - 1, stop=-1, step=-3, dtype="int32")
    shifted = g.call("add", g.call("cast", positions, dtype="float32"), x)

    def eager(x):
        s = x.shape[1]
        return (
            torch.arange(s),
            torch.arange(1, s, 2),
            torch.arange(s - 1, -1, -3, dtype=torch.int32),
            x + torch.arange(s),
        )

    return [positions, odd, down, shifted], [(S,), (S // 2,), ((S + 2) // 3,), (B, S)], eager


def case_full_and_full_like_with_symbolic_shapes(g):
    x = g.add_input("x", TensorType("float32", (B, S)))
    img = g.add_input("img", TensorType("float32", (H, W)))
    mask = g.call("full", shape=(B, S - 1, H * W), fill_value=2.0)
    ones = g.call("full_like", x, fill_value=1, dtype="int64")
    flat = g.call("add", g.call("reshape", img, newshape=(-1,)), g.call("full", shape=(H * W,), fill_value=0.5))

    def eager(x, img):
        (b, s), (h, w) = x.shape, img.shape
        return torch.full((b, s - 1, h * w), 2.0), torch.ones_like(x, dtype=torch.int64), img.reshape(-1) + 0.5

    return [mask, ones, flat], [(B, S - 1, H * W), (B, S), (H * W,)], eager


CASES, CASE_IDS = cases(globals())


@pytest.mark.parametrize("build", CASES, ids=CASE_IDS)
def test_types_and_numerics(build):
    graph = Graph(build.__name__)
    outs, expected, eager = build(graph)
    check(graph, outs, expected, eager)


def test_arange_with_a_float_step_on_a_symbol_is_refused():
    with pytest.raises(ShapeInferenceError, match="cannot express"):
        Graph("refused").call("arange", start=0, stop=S, step=1.5, dtype="float32")
