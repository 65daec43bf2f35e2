"""from_torch with torch.export's dynamic_shapes: every declared Dim is an IR symbol of its name, sizes computed from
them are SymExpr, export's ranges are the graph's symbol_ranges, and the graph runs at sizes other than the example's
(ir.execute against eager at three sizes)."""

from __future__ import annotations

import importlib.util

import pytest
import sympy
import torch
from torch.export import Dim
from torch.utils._sympy.functions import CeilToInt, CleanDiv, FloorDiv, IntTrueDiv, Mod, PythonMod

from small_models import tiny_bert
from tensorforge import ir
from tensorforge.frontends import from_torch
from tensorforge.frontends.torch import ConversionError, _Symbols
from tensorforge.ir import SymExpr

seq_s, batch_s, h_s, w_s = (SymExpr.symbol(n) for n in ("seq", "batch", "h", "w"))


def _close(got: tuple[torch.Tensor, ...], want, atol: float = 1e-5) -> None:
    want = (want,) if isinstance(want, torch.Tensor) else tuple(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=atol, rtol=1e-5)


class TinyBert(torch.nn.Module):
    """Embeddings with positions from arange(seq), a head split by reshape, masked SDPA, layer norm, a pooled head."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.tok = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(128, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.pool = torch.nn.Linear(dim, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = input_ids.shape
        x = self.tok(input_ids) + self.pos(torch.arange(s))
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = self.norm(x + self.out(y.transpose(1, 2).reshape(b, s, -1)))
        return x, torch.tanh(self.pool(x[:, 0]))


BERT_SHAPES = {"input_ids": {0: Dim("batch", max=16), 1: Dim("seq", min=2, max=64)}}
BERT_SHAPES["attention_mask"] = BERT_SHAPES["input_ids"]


def _bert_inputs(b: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 50, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, s // 2 :] = 0  # padding that the mask must hide
    return ids, mask


def test_bert_like_seq_and_batch_dims_named_and_run_at_three_sizes() -> None:
    torch.manual_seed(0)
    model = TinyBert().eval()
    graph = from_torch(model, _bert_inputs(2, 8), dynamic_shapes=BERT_SHAPES)
    assert [v.type.shape for v in graph.inputs] == [(batch_s, seq_s), (batch_s, seq_s)]
    assert graph.outputs[0].type.shape == (batch_s, seq_s, 32)
    assert graph.symbol_ranges == {"batch": (0, 16), "seq": (2, 64)}
    for b, s in ((1, 5), (3, 17), (2, 40)):
        inputs = _bert_inputs(b, s)
        _close(ir.execute(graph, *inputs), model(*inputs))


def test_tuple_dynamic_shapes_with_dim_auto_name_the_axis_after_its_input() -> None:
    model = TinyBert().eval()
    spec = ({1: Dim.AUTO}, {1: Dim.AUTO})
    graph = from_torch(model, _bert_inputs(2, 8), dynamic_shapes=spec)
    (ids, mask) = graph.inputs
    assert ids.type.shape == (2, SymExpr.symbol("input_ids_d1"))
    assert mask.type.shape == ids.type.shape  # export proves the two equal: one symbol
    for s in (3, 11, 30):
        inputs = _bert_inputs(2, s)
        _close(ir.execute(graph, *inputs), model(*inputs))


def test_legacy_dynamic_batch_still_names_batch_only() -> None:
    model = TinyBert().eval()
    graph = from_torch(model, _bert_inputs(2, 8))
    assert [v.type.shape for v in graph.inputs] == [(batch_s, 8), (batch_s, 8)]
    assert graph.symbol_ranges.keys() == {"batch"}
    static = from_torch(model, _bert_inputs(2, 8), dynamic_batch=False)
    assert all(v.type.is_static for v in static.inputs) and static.symbol_ranges == {}


class ConvNet(torch.nn.Module):
    """Strided conv (floor division of h, w), max pool, upsample by an integer factor, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.conv(x))
        z = self.pool(y)
        return self.head(self.up(z)), y.mean(dim=(2, 3))


def test_conv_net_over_h_and_w() -> None:
    torch.manual_seed(0)
    model = ConvNet().eval()
    spec = {"x": {0: Dim("batch", max=8), 2: Dim("h", min=8, max=512), 3: Dim("w", min=8, max=512)}}
    graph = from_torch(model, (torch.randn(2, 3, 32, 48),), dynamic_shapes=spec)
    assert graph.inputs[0].type.shape == (batch_s, 3, h_s, w_s)
    conv_h = (h_s - 1) // 2 + 1
    assert graph.outputs[1].type.shape == (batch_s, 8)
    assert graph.outputs[0].type.shape == (batch_s, 4, (conv_h // 2) * 2, ((w_s - 1) // 2 + 1) // 2 * 2)
    assert graph.symbol_ranges == {"batch": (0, 8), "h": (8, 512), "w": (8, 512)}
    for b, h, w in ((1, 17, 33), (3, 32, 32), (2, 61, 40)):
        x = torch.randn(b, 3, h, w)
        _close(ir.execute(graph, x), model(x))


def test_symbol_ranges_survive_save_and_load(tmp_path) -> None:
    model = TinyBert().eval()
    graph = from_torch(model, _bert_inputs(2, 8), dynamic_shapes=BERT_SHAPES)
    ir.save(graph, tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge")
    assert loaded.symbol_ranges == graph.symbol_ranges
    inputs = _bert_inputs(3, 9)
    _close(ir.execute(loaded, *inputs), model(*inputs))


def test_expressions_outside_the_ir_arithmetic_are_a_conversion_error_naming_them() -> None:
    class AtLeastFour(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros(torch.sym_max(x.shape[1], 4)) + 1

    with pytest.raises(ConversionError, match=r"Max\(4, .*seq"):
        from_torch(AtLeastFour(), (torch.randn(2, 8),), dynamic_shapes={"x": {1: Dim("seq", max=64)}})


def test_dynamic_shapes_with_an_exported_program_is_refused() -> None:
    ep = torch.export.export(torch.nn.ReLU(), (torch.randn(2, 3),))
    with pytest.raises(ValueError, match="ExportedProgram"):
        from_torch(ep, dynamic_shapes={"input": {0: Dim("batch")}})


# -- sympy -> SymExpr -------------------------------------------------------------------------


def _translate(expr: sympy.Expr, names: dict[str, str] | None = None) -> SymExpr | int:
    symbols = _Symbols()
    for name, wanted in (names or {}).items():
        symbols.name(sympy.Symbol(name, integer=True, positive=True), wanted)
    return symbols.expr(expr)


s0, s1 = sympy.symbols("s0 s1", integer=True, positive=True)
NAMES = {"s0": "seq", "s1": "batch"}
TRANSLATIONS = [
    ("integer", sympy.Integer(7), 7),
    ("symbol", s0, seq_s),
    ("add", s0 - 1, seq_s - 1),
    ("mul", 3 * s0 * s1, 3 * seq_s * batch_s),
    ("pow", s0**2 + 1, seq_s * seq_s + 1),
    ("floordiv", FloorDiv(s0 + 1, 2), (seq_s + 1) // 2),
    ("cleandiv", CleanDiv(4 * s0, 4), seq_s),
    ("mod", Mod(s0, 8), seq_s % 8),
    ("pythonmod", PythonMod(s1 * s0, 3), (batch_s * seq_s) % 3),
    ("ceil-div", CeilToInt(IntTrueDiv(s0, 4)), (seq_s + 3) // 4),
    # ceil(seq/4) as -floor(-seq/4): equal to (seq + 3) // 4 for every seq, in another canonical form
    ("negated-floordiv", -FloorDiv(-s0, 4), seq_s - (3 * seq_s) // 4),
]


@pytest.mark.parametrize("expr,want", [(e, w) for _, e, w in TRANSLATIONS], ids=[t[0] for t in TRANSLATIONS])
def test_sympy_translation(expr: sympy.Expr, want: SymExpr | int) -> None:
    got = _translate(expr, NAMES)
    assert got == want
    for env in ({"seq": 1, "batch": 1}, {"seq": 13, "batch": 5}, {"seq": 64, "batch": 2}):
        value = got.bind(env) if isinstance(got, SymExpr) else got
        assert value == int(expr.subs({s0: env["seq"], s1: env["batch"]}))


@pytest.mark.parametrize(
    "expr",
    [sympy.Max(s0, 4), sympy.Min(s0, s1), sympy.sqrt(s0), FloorDiv(s0, s1), s0 / 2],
    ids=["max", "min", "sqrt", "symbolic-divisor", "rational"],
)
def test_sympy_translation_refuses_what_symexpr_cannot_say(expr: sympy.Expr) -> None:
    with pytest.raises(ConversionError, match="cannot express"):
        _translate(expr, NAMES)


def test_symbol_name_collisions_get_a_suffix() -> None:
    symbols = _Symbols()
    a, b, c = sympy.symbols("a b c", integer=True)
    assert symbols.name(a, "seq") == "seq"
    assert symbols.name(b, "seq") == "seq_2"
    assert symbols.name(c, "3d-size") == "_3d_size"
    assert symbols.name(a, "other") == "seq"  # named once


# -- Hugging Face models, random weights from a tiny config --------------------------------------

needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")


@needs_transformers
def test_hf_bert_with_dynamic_batch_and_seq() -> None:

    torch.manual_seed(0)
    model = tiny_bert()
    spec = {"input_ids": {0: Dim("batch", max=16), 1: Dim("seq", max=128)}}
    spec["attention_mask"] = spec["input_ids"]
    ids, mask = _bert_inputs(2, 8)
    graph = from_torch(model, (), example_kwargs={"input_ids": ids, "attention_mask": mask}, dynamic_shapes=spec)
    assert [v.type.shape for v in graph.inputs] == [(batch_s, seq_s), (batch_s, seq_s)]
    assert graph.symbol_ranges["seq"][1] == 128
    for b, s in ((1, 5), (3, 17), (2, 40)):
        ids, mask = _bert_inputs(b, s)
        ref = model(input_ids=ids, attention_mask=mask)
        _close(ir.execute(graph, ids, mask), (ref.last_hidden_state, ref.pooler_output), atol=1e-4)


@needs_transformers
def test_hf_gpt2_with_dynamic_seq() -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=128, use_cache=False, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2Model(config).eval()
    graph = from_torch(model, (torch.randint(0, 100, (2, 8)),), dynamic_shapes=({0: Dim("batch"), 1: Dim("seq")},))
    assert graph.inputs[0].type.shape == (batch_s, seq_s)
    for b, s in ((1, 5), (3, 17), (2, 40)):
        ids = torch.randint(0, 100, (b, s))
        _close(ir.execute(graph, ids), model(input_ids=ids).last_hidden_state, atol=1e-4)


# -- Graph.symbol_ranges on disk -----------------------------------------------------------------


def _ranged_graph(ranges: dict[str, tuple[int, int | None]]) -> ir.Graph:
    graph = ir.Graph("g")
    x = graph.add_input("x", ir.TensorType("float32", (seq_s, 4)))
    graph.set_outputs([graph.call("nn.relu", x)])
    graph.symbol_ranges = ranges
    return graph


def test_symbol_ranges_are_written_only_when_present() -> None:
    doc, _ = ir.graph_to_json(_ranged_graph({}))
    assert "symbol_ranges" not in doc  # static and batch-only documents, and their digests, are unchanged
    doc, tensors = ir.graph_to_json(_ranged_graph({"seq": (1, None)}))
    assert doc["symbol_ranges"] == {"seq": [1, None]}
    assert ir.graph_from_json(doc, tensors).symbol_ranges == {"seq": (1, None)}


@pytest.mark.parametrize(
    "ranges,problem",
    [
        ({"seq": [4, 2]}, "0 <= min <= max"),
        ({"seq": [-1, 2]}, "0 <= min <= max"),
        ({"seq": [1.5, 2]}, "min must be a JSON int"),
        ({"seq": [1, "8"]}, "max"),
        ({"seq": [1]}, r"must be \[min, max\]"),
        ({"not a name": [1, 2]}, "identifier"),
        ([["seq", 1, 2]], "symbol_ranges must be a JSON dict"),
    ],
    ids=["min-above-max", "negative", "float", "string", "short", "name", "not-a-dict"],
)
def test_malformed_symbol_ranges_are_refused_on_load(ranges: object, problem: str) -> None:
    doc, tensors = ir.graph_to_json(_ranged_graph({"seq": (1, 8)}))
    doc["symbol_ranges"] = ranges
    with pytest.raises(ir.GraphFormatError, match=problem):
        ir.graph_from_json(doc, tensors)


class _GuardedSequence(torch.nn.Module):
    """Python that branches on a size: torch.export guards the size (even lengths) more narrowly than declared."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2 == 0:
            return x * 2
        return x


def test_a_guard_narrower_than_the_declared_range_exports_with_dim_dynamic_and_warns():
    seq = torch.export.Dim("seq", min=2, max=64)
    with pytest.raises(Exception, match="Constraints violated"):  # what export alone says to a named Dim
        torch.export.export(_GuardedSequence(), (torch.randn(1, 8),), dynamic_shapes={"x": {1: seq}}, strict=False)
    with pytest.warns(UserWarning, match="more narrowly than the declared ranges.*Dim.DYNAMIC"):
        graph = from_torch(_GuardedSequence(), (torch.randn(1, 8),), dynamic_shapes={"x": {1: seq}})
    assert graph.inputs[0].type.shape[1] == SymExpr.symbol("seq")  # the declared name is kept
    assert graph.symbol_ranges["seq"] == (2, 64)  # and so is the declared range
    for n in (2, 6, 40):
        x = torch.randn(1, n)
        torch.testing.assert_close(ir.execute(graph, x)[0], x * 2)
