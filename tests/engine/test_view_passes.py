"""sink_transposes and fold_view_chains: shape ops that would copy become free views, results unchanged.

Each pass is checked as every pass is (engine_helpers.check_pass: pure, counted, same results), at several
batch sizes because the folded strides are affine functions of the batch; then nn.MultiheadAttention (the
chain that motivated both) through the whole builder, against PyTorch eager."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import BATCH, FUSED_TOL, check_pass, graph_with_input, ops
from tensorforge import ir
from tensorforge.engine.passes import PassContext, fold_view_chains, reorder_dense_rows, sink_transposes
from tensorforge.ir import Sym, TensorType


def _qkv_split(batch_first_transpose: bool = True):
    """The chain torch's multi_head_attention_forward applies to its packed projection, with E=8, H=2."""
    g, x = graph_with_input((5, 24))  # [B, L, 3E] projection output
    proj = g.call("transpose", x, axes=(1, 0, 2)) if batch_first_transpose else x  # [L, B, 3E]
    v = g.call("reshape", proj, newshape=(5, BATCH, 3, 8))
    v = g.call("expand_dims", v, axis=0, num_newaxis=1)
    v = g.call("transpose", v, axes=(3, 1, 2, 0, 4))
    v = g.call("squeeze", v, axis=(3,))
    heads = []
    for i in range(3):
        s = g.call("squeeze", g.call("strided_slice", v, begin=(i,), end=(i + 1,), strides=(1,), axes=(0,)), axis=(0,))
        s = g.call("transpose", g.call("reshape", s, newshape=(5, Sym("batch", 2), 4)), axes=(1, 0, 2))
        heads.append(g.call("reshape", s, newshape=(BATCH, 2, 5, 4)))
    g.set_outputs([g.call("add", g.call("multiply", heads[0], heads[1]), heads[2])])
    return g


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_the_attention_split_folds_into_three_strided_views(batch):
    g = _qkv_split()
    out = check_pass(fold_view_chains, g, [torch.randn(batch, 5, 24)], count=3)
    assert ops(out).count("engine.strided_view") == 3
    for node in out.nodes:
        if node.op == "engine.strided_view":
            assert node.inputs[0] is out.inputs[0], "each view reads the projection itself, not the chain"


def test_a_chain_no_strides_can_express_is_left_alone():
    g, x = graph_with_input((4, 6))
    t = g.call("transpose", x, axes=(0, 2, 1))  # [B, 6, 4]
    g.set_outputs([g.call("nn.relu", g.call("reshape", t, newshape=(BATCH, 24)))])
    out = check_pass(fold_view_chains, g, [torch.randn(3, 4, 6)], count=0)
    assert "engine.strided_view" not in ops(out)


def test_a_single_view_and_a_graph_output_stay():
    g, x = graph_with_input((4, 6))
    y = g.call("nn.relu", g.call("transpose", x, axes=(0, 2, 1)))
    z = g.call("reshape", g.call("transpose", x, axes=(0, 2, 1)), newshape=(BATCH, 6, 2, 2))
    g.set_outputs([y, z])
    check_pass(fold_view_chains, g, [torch.randn(2, 4, 6)], count=0)


def test_strided_view_runs_on_views_of_views():
    """At run time the source may itself be a view with a storage offset: the op adds it."""
    g = fold_view_chains(_qkv_split(), PassContext())
    view = next(n for n in g.nodes if n.op == "engine.strided_view")
    base = torch.randn(2 * 5 * 24 + 7)
    source = base[7:].view(2, 5, 24)
    (got,) = view.opdef.run([source], view.attrs, {"batch": 2}, torch.device("cpu"))
    (expected,) = view.opdef.run([source.clone()], view.attrs, {"batch": 2}, torch.device("cpu"))
    assert torch.equal(got, expected)


def _dense(g, x, k, n, residual=None):
    inputs = [x, g.add_constant(torch.randn(n, k), "w"), g.add_constant(torch.randn(n), "b")]
    if residual is not None:
        inputs.append(residual)
    return g.call("engine.dense", *inputs, has_bias=True, has_residual=residual is not None)


def test_a_transpose_sinks_below_cast_and_dense():
    g, x = graph_with_input((4, 6))
    t = g.call("transpose", x, axes=(1, 0, 2))
    y = _dense(g, g.call("cast", t, dtype="float32"), 6, 5)
    g.set_outputs([y])
    out = check_pass(sink_transposes, g, [torch.randn(3, 4, 6)], count=2, tol=FUSED_TOL)
    assert ops(out) == ["cast", "engine.dense", "transpose"]
    assert out.outputs[0].name == g.outputs[0].name


@pytest.mark.parametrize("case", ["two-readers", "last-axis-moves", "residual"])
def test_transposes_that_must_stay(case):
    g, x = graph_with_input((4, 4))
    if case == "two-readers":
        t = g.call("transpose", x, axes=(1, 0, 2))
        g.set_outputs([_dense(g, t, 4, 5), g.call("nn.relu", t)])
    elif case == "last-axis-moves":
        g.set_outputs([_dense(g, g.call("transpose", x, axes=(0, 2, 1)), 4, 5)])
    else:
        r = g.add_input("r", TensorType("float32", (4, BATCH, 4)))
        g.set_outputs([_dense(g, g.call("transpose", x, axes=(1, 0, 2)), 4, 4, residual=r)])
    inputs = [torch.randn(2, 4, 4)] + ([torch.randn(4, 2, 4)] if case == "residual" else [])
    check_pass(sink_transposes, g, inputs, count=0)


def _attention_projection(g, heads=3, tokens=5, depth=4, n=6, residual=None, back=(1, 0, 2), readers=1):
    """nn.MultiheadAttention's output projection: [B, H, S, D] -> (S*B, H*D) rows -> dense -> [B, S, N]."""
    x = g.inputs[0]
    rows = g.call("reshape", g.call("transpose", x, axes=(2, 0, 1, 3)), newshape=(Sym("batch", tokens), heads * depth))
    d = _dense(g, rows, heads * depth, n, residual=residual)
    y = g.call("transpose", g.call("reshape", d, newshape=(tokens, BATCH, n)), axes=back)
    g.set_outputs([y] if readers == 1 else [y, g.call("nn.relu", d)])
    return g


def test_a_dense_takes_its_rows_in_the_order_its_reader_wants():
    g = _attention_projection(graph_with_input((3, 5, 4))[0])
    out = check_pass(reorder_dense_rows, g, [torch.randn(2, 3, 5, 4)], count=1, tol=FUSED_TOL)
    assert ops(out) == ["transpose", "reshape", "engine.dense", "reshape"]
    assert out.nodes[0].attrs["axes"] == (0, 2, 1, 3)
    assert out.outputs[0].name == g.outputs[0].name and out.outputs[0].type == g.outputs[0].type


@pytest.mark.parametrize("case", ["residual", "last-axis-moves", "two-readers"])
def test_dense_rows_that_must_keep_their_order(case):
    g, _ = graph_with_input((3, 5, 4))
    if case == "residual":
        _attention_projection(g, residual=g.add_input("r", TensorType("float32", (Sym("batch", 5), 6))))
    else:
        _attention_projection(
            g, back=(1, 2, 0) if case == "last-axis-moves" else (1, 0, 2), readers=2 if case == "two-readers" else 1
        )
    inputs = [torch.randn(2, 3, 5, 4)] + ([torch.randn(10, 6)] if case == "residual" else [])
    check_pass(reorder_dense_rows, g, inputs, count=0)


def test_multihead_attention_plan_matches_eager():
    import tensorforge as forge

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(32)
            self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            y = self.ln(x)
            return x + self.attn(y, y, y, need_weights=False)[0]

    block = Block().eval()
    x = torch.randn(3, 7, 32)
    module = forge.compile(block, (x,), device="cpu").build_all(3)
    plans = [p for ps in module.plans().values() for p in ps]
    layers = [layer for p in plans for layer in p.layers]
    assert sum(layer.op == "engine.strided_view" for layer in layers) >= 3, [layer.op for layer in layers]
    assert plans[0].counters["sink_transposes"] >= 1 and plans[0].counters["reorder_dense_rows"] == 1
    with torch.no_grad():
        expected = block(x)
    for batch in (1, 3):
        torch.testing.assert_close(module(x[:batch]), expected[:batch], rtol=1e-4, atol=1e-5)


def test_split_parts_fold_onto_the_wide_projection():
    """BERT after horizontal fusion: one wide GEMM, a split, then per part reshape(B, L, H, d) -> transpose."""
    g, x = graph_with_input((5, 24))
    parts = g.call("split", x, indices_or_sections=(8, 16), axis=-1)
    heads = [g.call("transpose", g.call("reshape", p, newshape=(BATCH, 5, 2, 4)), axes=(0, 2, 1, 3)) for p in parts]
    g.set_outputs([g.call("add", g.call("multiply", heads[0], heads[1]), heads[2])])
    out = check_pass(fold_view_chains, g, [torch.randn(3, 5, 24)], count=3)
    views = [n for n in out.nodes if n.op == "engine.strided_view"]
    assert [v.inputs[0] for v in views] == [out.inputs[0]] * 3


def test_chains_from_attention_outputs_stay():
    """Attention kernels leave their output as [batch, seq, heads, dim] in memory: PyTorch's own view ops
    find views of that, a folded view (which reads row-major memory) would copy."""
    g = ir.Graph("attn")
    q = g.add_input("q", TensorType("float32", (BATCH, 2, 5, 4)))
    o = g.call("nn.scaled_dot_product_attention", q, q, q)
    g.set_outputs(
        [g.call("nn.relu", g.call("reshape", g.call("transpose", o, axes=(0, 2, 1, 3)), newshape=(BATCH, 5, 8)))]
    )
    check_pass(fold_view_chains, g, [torch.randn(2, 2, 5, 4)], count=0)
