"""Dimensions are `int | SymExpr` (issue 14, step 2): `Sym` is the constructor of `k*symbol`, constant sizes are
ints, and static and batch-only graphs keep their JSON and digests byte for byte."""

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch

from tensorforge.ir import Graph, GraphFormatError, Sym, SymExpr, TensorType, graph_from_json, graph_to_json, load
from tensorforge.ir.digest import content_digest
from tensorforge.ir.execute import bind_symbols
from tensorforge.ir.ops.opaque import decode_output_type, encode_output_type
from tensorforge.ir.serialize import decode_type, encode_type
from tensorforge.ir.types import bind_value, contains_sym, is_monomial, monomial

B = SymExpr.symbol("batch")
S = SymExpr.symbol("seq")


def test_sym_builds_the_equivalent_expression() -> None:
    assert Sym("batch") == B and Sym("batch", 12) == 12 * B
    assert hash(Sym("batch", 12)) == hash(12 * B)
    assert isinstance(Sym("batch"), SymExpr)
    assert isinstance(Sym("batch"), Sym) and isinstance(S - 1, Sym)  # isinstance(x, Sym): "x is a symbolic size"
    assert not isinstance(3, Sym) and not isinstance("batch", Sym)
    assert str(Sym("batch")) == "batch" and str(Sym("batch", 12)) == "12*batch"
    assert Sym("batch", 3).bind({"batch": 5}) == 15
    assert monomial(Sym("batch", 12), "here") == ("batch", 12) and is_monomial(Sym("seq"))
    for bad in (S - 1, B * S, -B, (S + 1) // 2, SymExpr.const(4)):
        assert not is_monomial(bad)
        with pytest.raises(ValueError, match=r"here: the symbolic size .* is not a multiple of one symbol"):
            monomial(bad, "here")
    with pytest.raises(ValueError, match="identifier"):
        Sym("batch size")
    with pytest.raises(ValueError, match=">= 1"):
        Sym("batch", 0)
    with pytest.raises(ValueError, match=">= 1"):
        Sym("batch", True)


def test_tensor_type_with_expressions() -> None:
    t = TensorType("float32", (B, S - 1, 4 * S, (S + 1) // 2))
    assert str(t) == "f32[batch,seq - 1,4*seq,(seq + 1) // 2]"
    assert t.symbols == {"batch", "seq"} and not t.is_static and t.rank == 4
    assert t.concrete_shape({"batch": 2, "seq": 7}) == (2, 6, 28, 4)
    assert t.numel({"batch": 2, "seq": 7}) == 2 * 6 * 28 * 4
    same = TensorType("float32", (Sym("batch"), S + 2 - 3, S * 4, (2 * S + 2) // 4))
    assert same == t and hash(same) == hash(t)
    assert TensorType("float32", (B, S)) != TensorType("float32", (B, S - 1))
    assert TensorType("float32", (B * S,)) == TensorType("float32", (S * B,))
    with pytest.raises(ValueError, match="not bound"):
        t.concrete_shape({"batch": 2})


def test_constant_sizes_are_ints() -> None:
    t = TensorType("float32", (S - S + 3, B + 1 - B, SymExpr.const(0)))
    assert t.shape == (3, 1, 0) and all(type(d) is int for d in t.shape)
    assert t == TensorType("float32", (3, 1, 0)) and t.is_static
    with pytest.raises(ValueError, match="non-negative int or Sym"):
        TensorType("float32", (S - S - 1,))


def test_types_and_attributes_round_trip_through_json() -> None:
    for t in (
        TensorType("float32", (2, 3)),
        TensorType("float16", (Sym("batch", 12), 64)),
        TensorType("int64", (B, S - 1, B * S, (S + 1) // 2, S % 8)),
    ):
        back = decode_type(json.loads(json.dumps(encode_type(t))))
        assert back == t and str(back) == str(t)
    # the written forms: ints, the old {"__sym__": [symbol, scale]} for k*symbol, {"__size__": ...} for the rest
    assert encode_type(TensorType("float32", (Sym("batch", 12), 3, S - 1))) == {
        "dtype": "float32",
        "shape": [{"__sym__": ["batch", 12]}, 3, {"__size__": {"+": [-1, "seq"]}}],
    }
    with pytest.raises(GraphFormatError, match="symbolic size"):
        decode_type({"dtype": "float32", "shape": [{"__size__": {"//": ["seq", 0]}}]})
    with pytest.raises(GraphFormatError, match="symbolic size"):
        decode_type({"dtype": "float32", "shape": [{"__size__": "not a name"}]})
    assert decode_type({"dtype": "float32", "shape": [{"__size__": {"+": ["seq", {"*": [-1, "seq"]}, 5]}}]}) == (
        TensorType("float32", (5,))
    )
    # attribute values and opaque output types carry expressions too
    assert bind_value((S - 1, {"n": B * S}), {"seq": 5, "batch": 2}) == (4, {"n": 10})
    assert contains_sym((1, (S - 1,))) and not contains_sym((1, (2,)))
    out = TensorType("float32", (Sym("batch", 4), S - 1))
    spec = encode_output_type(out)
    assert spec == ("float32", (("batch", 4), S - 1)) and decode_output_type(spec) == out


def test_expressions_pickle_and_copy() -> None:
    for e in (B, S - 1, (S + 1) // 2 * B, Sym("batch", 3)):
        assert pickle.loads(pickle.dumps(e)) == e  # noqa: S301 - our own bytes, just written
        assert copy.deepcopy(e) == e and copy.copy(e) == e
    t = TensorType("float32", (B, (S + 1) // 2))
    assert pickle.loads(pickle.dumps(t)) == t  # noqa: S301 - our own bytes, just written


def _digest_graph(batch: bool) -> Graph:
    g = Graph("dig")
    b = Sym("batch") if batch else 2
    heads = Sym("batch", 4) if batch else 8
    x = g.add_input("x", TensorType("float32", (b, 3, 8, 8)))
    w = g.add_constant(torch.arange(4 * 3 * 3 * 3, dtype=torch.float32).reshape(4, 3, 3, 3) / 100, name="w")
    c = g.call("nn.conv2d", x, w, strides=(2, 2), padding=(1, 1), name="conv")
    flat = g.call("reshape", c, newshape=(b, -1))
    split = g.call("reshape", flat, newshape=(heads, 16))
    attrs = {
        "args": ({"input": 0}, 1),
        "output_types": (encode_output_type(TensorType("float32", (heads, 16))),),
    }
    summed = g.add_node("torch.aten.cumsum.default", [split], attrs, name="cs").output
    g.set_outputs([summed, flat])
    return g.verify()


# content_digest of these graphs as the code before `Dim = int | SymExpr` wrote them (branch i14-dim's base,
# 20bf899): a static graph and a batch-only one must keep every byte of their JSON.
DIGESTS = {
    False: "b3699f42523c9266cfd6a630527c019a2f96d4b1f51cadef18f63e492c7bee14",
    True: "e77c9cc1546b3e45b129008fd360fb1ab7b94b10ab9384d05aa658423ed2420f",
}


@pytest.mark.parametrize("batch", [False, True], ids=["static", "batch-only"])
def test_digests_unchanged(batch: bool) -> None:
    doc, tensors = graph_to_json(_digest_graph(batch))
    assert content_digest(doc, tensors) == DIGESTS[batch]
    loaded = graph_from_json(json.loads(json.dumps(doc)), tensors)
    assert str(loaded) == str(_digest_graph(batch))
    if batch:
        assert '{"__sym__": ["batch", 4]}' in json.dumps(doc) and "__size__" not in json.dumps(doc)


def _opaque_graph() -> Graph:
    """Inputs and an opaque node's output typed with expressions (shape inference of expressions is step 3)."""
    g = Graph("expr")
    x = g.add_input("x", TensorType("float32", (B, S)))
    y = g.add_input("y", TensorType("float32", (B, S - 1)))
    attrs = {"args": ({"input": 0}, 1), "output_types": (encode_output_type(TensorType("float32", (B, S - 1))),)}
    summed = g.add_node("torch.aten.cumsum.default", [y], attrs, name="cs").output
    g.set_outputs([summed, x])
    return g


def test_graph_with_an_expression_dim_round_trips() -> None:
    g = _opaque_graph()
    doc, tensors = graph_to_json(g)
    assert doc != graph_to_json(_digest_graph(True))[0]
    back = graph_from_json(json.loads(json.dumps(doc)), tensors)
    assert back.inputs[1].type == TensorType("float32", (B, S - 1))
    assert str(back) == str(g)


def _bind_graph() -> Graph:
    g = Graph("bind")  # bind_symbols reads only the inputs
    g.add_input("x", TensorType("float32", (Sym("batch", 2), S)))
    g.add_input("y", TensorType("float32", (B * S, S - 1)))
    return g


def test_bind_symbols_with_expression_dims() -> None:
    g = _bind_graph()
    assert bind_symbols(g, [torch.zeros(6, 5), torch.zeros(15, 4)]) == {"batch": 3, "seq": 5}
    with pytest.raises(ValueError, match=r"input 'y': dimension 1 is 5, but seq - 1 is 4 \(with seq = 5\)"):
        bind_symbols(g, [torch.zeros(6, 5), torch.zeros(15, 5)])
    with pytest.raises(ValueError, match=r"input 'y': dimension 0 is 14, but batch\*seq is 15"):
        bind_symbols(g, [torch.zeros(6, 5), torch.zeros(14, 4)])
    with pytest.raises(ValueError, match="dimension 0 must be a multiple of 2"):  # today's k*symbol rule
        bind_symbols(g, [torch.zeros(5, 5), torch.zeros(15, 4)])


def test_bind_symbols_refuses_a_symbol_no_input_binds() -> None:
    g = Graph("unbound")
    g.add_input("x", TensorType("float32", (S - 1,)))
    with pytest.raises(ValueError, match="input 'x': dimension 0 is seq - 1, but no input dimension binds seq"):
        bind_symbols(g, [torch.zeros(4)])


def test_a_batch_only_graph_saved_before_the_change_loads() -> None:
    """tests/ir/data/batch_only_20bf899.tforge: `_digest_graph(True)` saved by `ir.save` at 20bf899, when `Sym`
    was a dataclass; it loads into the same graph, with `SymExpr` dims, and re-encodes to the same bytes."""
    loaded = load(Path(__file__).parent / "data" / "batch_only_20bf899.tforge")
    assert str(loaded) == str(_digest_graph(True))
    assert loaded.inputs[0].type == TensorType("float32", (B, 3, 8, 8))
    assert isinstance(loaded.inputs[0].type.shape[0], SymExpr)
    assert content_digest(*graph_to_json(loaded)) == DIGESTS[True]
