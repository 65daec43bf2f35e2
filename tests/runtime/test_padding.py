"""Padding buckets (runtime/padding.py): inputs padded along a symbol to a multiple, outputs sliced back. Masked
attention gives the unpadded result at every size; an unmasked mean over the sequence does not (documented: the
check cannot see a reduction); dims that are other expressions of the symbol are refused by name."""

from __future__ import annotations

import pytest
import torch

from tensorforge import ir
from tensorforge.ir import SymExpr, TensorType
from tensorforge.runtime.padding import PaddingError, plan_padding, round_up

batch, seq = SymExpr.symbol("batch"), SymExpr.symbol("seq")
HIDDEN = 8


def masked_attention() -> ir.Graph:
    """x: (batch, 1, seq, 8) attends to itself; mask: (batch, seq) bool, False for positions to ignore."""
    g = ir.Graph("masked_attention")
    x = g.add_input("x", TensorType("float32", (batch, 1, seq, HIDDEN)))
    mask = g.add_input("attention_mask", TensorType("bool", (batch, seq)))
    m = g.call("expand_dims", mask, axis=1, num_newaxis=2)  # (batch, 1, 1, seq): one row of keys per query
    g.set_outputs([g.call("nn.scaled_dot_product_attention", x, x, x, m)])
    return g.verify()


def mean_pool(masked: bool) -> ir.Graph:
    """x: (batch, seq, 8) -> (batch, 8), the mean over tokens: plain, or weighted by the mask (sum(x*m)/sum(m))."""
    g = ir.Graph("mean_pool")
    x = g.add_input("x", TensorType("float32", (batch, seq, HIDDEN)))
    if not masked:
        g.set_outputs([g.call("mean", x, axis=(1,))])
        return g.verify()
    mask = g.add_input("attention_mask", TensorType("float32", (batch, seq)))
    m = g.call("expand_dims", mask, axis=2)
    total = g.call("sum", g.call("multiply", x, m), axis=(1,))
    g.set_outputs([g.call("divide", total, g.call("sum", m, axis=(1,)))])
    return g.verify()


def inputs(n: int, lengths=(None,), dtype=torch.bool):
    """x of sequence length n for len(lengths) rows; each row's mask keeps its first `length` positions (None: all)."""
    x = torch.randn(len(lengths), 1, n, HIDDEN)
    mask = torch.zeros(len(lengths), n, dtype=dtype)
    for row, length in enumerate(lengths):
        mask[row, : length or n] = 1
    return x, mask


def run_recording(graph: ir.Graph, shapes: list):
    def run(*xs):
        shapes.append([tuple(t.shape) for t in xs])
        return ir.execute(graph, *xs)

    return run


@pytest.mark.parametrize("n", [1, 5, 13, 16, 30])
@pytest.mark.parametrize("multiple", [8, 16])
def test_masked_attention_padded_equals_unpadded(n, multiple):
    graph = masked_attention()
    padding = plan_padding(graph, {"seq": multiple}, {"x": 0.0, "attention_mask": False})
    x, mask = inputs(n, lengths=(None, max(1, n - 2)))
    shapes: list = []
    (padded,) = padding.run(run_recording(graph, shapes), [x, mask])
    (expected,) = ir.execute(graph, x, mask)
    size = round_up(n, multiple)
    assert shapes == [[(2, 1, size, HIDDEN), (2, size)]], "the graph ran at the bucket size"
    assert padded.shape == expected.shape == (2, 1, n, HIDDEN)
    torch.testing.assert_close(padded, expected, rtol=1e-5, atol=1e-6)


def test_a_bucket_serves_every_length_up_to_it():
    graph = masked_attention()
    padding = plan_padding(graph, {"seq": 32}, {"x": 0.0, "attention_mask": False})
    shapes: list = []
    for n in (3, 17, 32):
        padding.run(run_recording(graph, shapes), inputs(n))
    assert {s[0][2] for s in shapes} == {32}
    assert padding.padded_sizes({"seq": 33}) == {"seq": 64}


def test_attention_without_the_mask_padded_differs_which_is_why_the_mask_pad_value_matters():
    graph = masked_attention()
    padding = plan_padding(graph, {"seq": 16}, {"x": 0.0, "attention_mask": True})  # padded keys left visible
    x, mask = inputs(5)
    (padded,) = padding.run(lambda *xs: ir.execute(graph, *xs), [x, mask])
    (expected,) = ir.execute(graph, x, mask)
    assert not torch.allclose(padded, expected, atol=1e-3)


def test_mean_pool_is_allowed_by_the_check_but_differs_unless_masked():
    """An output without the symbol passes the symbolic check: the reduction over the sequence is invisible to it.
    The plain mean then differs (documented); the mask-weighted mean, given the mask's pad value 0, matches."""
    plain = mean_pool(masked=False)
    padding = plan_padding(plain, {"seq": 16}, {"x": 0.0})
    assert padding.output_axes == ((),)
    x = torch.randn(2, 5, HIDDEN)
    (padded,) = padding.run(lambda *xs: ir.execute(plain, *xs), [x])
    (expected,) = ir.execute(plain, x)
    torch.testing.assert_close(padded, expected * 5 / 16)  # zeros counted in the mean: scaled by 5/16

    masked = mean_pool(masked=True)
    padding = plan_padding(masked, {"seq": 16}, {"x": 0.0, "attention_mask": 0.0})
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    (padded,) = padding.run(lambda *xs: ir.execute(masked, *xs), [x, mask])
    torch.testing.assert_close(padded, ir.execute(masked, x, mask)[0])


def test_an_output_dim_that_is_another_expression_of_the_symbol_is_refused():
    g = ir.Graph("flatten")
    x = g.add_input("x", TensorType("float32", (batch, seq, HIDDEN)))
    g.set_outputs([g.call("nn.relu", x), g.call("nn.batch_flatten", x)])
    g.verify()
    with pytest.raises(PaddingError, match=r"output 1 \('.*'\) axis 1 is 8\*seq: padding 'seq' to a multiple of 16"):
        plan_padding(g, {"seq": 16}, {"x": 0.0})


def test_an_input_dim_that_is_another_expression_of_the_symbol_is_refused():
    g = ir.Graph("shifted")
    a = g.add_input("a", TensorType("float32", (batch, seq)))
    b = g.add_input("b", TensorType("float32", (batch, seq + 1)))
    g.set_outputs([g.call("nn.relu", a), g.call("nn.relu", b)])
    with pytest.raises(PaddingError, match=r"input 'b' axis 1 is seq \+ 1: .* cannot be sliced back"):
        plan_padding(g, {"seq": 8}, {"a": 0.0, "b": 0.0})


@pytest.mark.parametrize(
    "multiples, values, message",
    [
        ({"seq": 16}, {"x": 0.0}, "input 'attention_mask' is padded along seq but has no pad value"),
        ({"seq": 16}, {"x": 0.0, "attention_mask": 0, "ids": 0}, r"pad values name input\(s\) \['ids'\] the graph"),
        ({"seq": 16}, {"x": "0", "attention_mask": 0}, "the pad value of input 'x' must be a number or a bool"),
        ({"sequence": 16}, {}, r"pad_to_multiple names \['sequence'\], which no input has .*: batch, seq"),
        ({"seq": 0}, {}, r"pad_to_multiple\['seq'\] must be a positive int"),
    ],
)
def test_what_padding_needs_is_named(multiples, values, message):
    with pytest.raises(ValueError, match=message):
        plan_padding(masked_attention(), multiples, values)


def test_inputs_that_disagree_on_the_symbol_are_refused():
    padding = plan_padding(masked_attention(), {"seq": 16}, {"x": 0.0, "attention_mask": False})
    with pytest.raises(ValueError, match="input 'attention_mask' axis 1 is seq = 6, but an earlier input has seq = 5"):
        padding.sizes([torch.randn(1, 1, 5, HIDDEN), torch.ones(1, 6, dtype=torch.bool)])
