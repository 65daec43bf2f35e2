"""fold_view_chains under symbols other than the batch (issue 14): a transformer's head split over a dynamic
`seq`, slices whose ends are symbolic, a conv net's flatten over `h`/`w` each become one engine.strided_view whose
strides and offset are SymExprs. Each folded graph is compared element for element with the chain it replaces
at three or more sizes of every symbol (a view holds the same numbers, so equality is exact); plans built for a
profile show the views as layers, run every size against PyTorch eager and `ir.execute`, survive to_bytes /
from_bytes, and a plan whose view attributes were tampered with is refused at load."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from engine_helpers import FUSED_TOL, assert_outputs_close, ops
from small_models import tiny_bert
from tensorforge import ir
from tensorforge.engine import Builder, Plan, PlanCompatibilityError
from tensorforge.engine.passes import PassContext, dead_code, fold_view_chains
from tensorforge.ir import Graph, Profile, Sym, SymExpr, TensorType
from tensorforge.ir.digest import seal

B, S, H, W = (SymExpr.symbol(n) for n in ("batch", "seq", "h", "w"))
OPEN = 2**63 - 1  # an open slice end, as frontends write it
VIEW_OPS = {"reshape", "transpose", "strided_slice", "squeeze", "expand_dims", "split", "nn.batch_flatten"}


def _folded(graph: Graph, count: int) -> Graph:
    """fold_view_chains, then dead_code (as the builder runs them): what is left is what runs."""
    graph.verify()
    ctx = PassContext()
    out = dead_code(fold_view_chains(graph, ctx), ctx).verify()
    assert ctx.counters["fold_view_chains"] == count, str(out)
    return out


def _views(graph: Graph) -> list[ir.Node]:
    return [n for n in graph.nodes if n.op == "engine.strided_view"]


def _same_at_every_size(original: Graph, folded: Graph, inputs: Callable[..., Sequence[torch.Tensor]], sizes) -> None:
    """The folded graph computes exactly what the original does at each of `sizes` (a view copies nothing)."""
    for size in sizes:
        args = inputs(*size)
        for got, want in zip(ir.execute(folded, *args), ir.execute(original, *args)):
            assert got.shape == want.shape and torch.equal(got, want), size


def _grid(**ranges: Sequence[int]) -> list[tuple[int, ...]]:
    """Each symbol over its sizes with the others at their first, then all at their last: 3+ sizes per symbol."""
    names = list(ranges)
    base = [ranges[n][0] for n in names]
    out = [tuple(base)]
    for i, n in enumerate(names):
        for size in ranges[n][1:]:
            out.append(tuple(size if j == i else base[j] for j in range(len(names))))
    out.append(tuple(ranges[n][-1] for n in names))
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------
# BERT's head split and merge over [batch, seq, hidden]
# ---------------------------------------------------------------------------------------------

HIDDEN, HEADS = 768, 12
HEAD_DIM = HIDDEN // HEADS


def _bert_heads() -> Graph:
    """Q and K split into heads straight from the projection, scores, and context merged back; a head split
    undone by a merge (x -> heads -> back) reads x itself."""
    g = Graph("bert_heads")
    x = g.add_input("x", TensorType("float32", (B, S, HIDDEN)))
    heads = g.call("reshape", x, newshape=(B, S, HEADS, HEAD_DIM))
    q = g.call("transpose", heads, axes=(0, 2, 1, 3))  # [batch, 12, seq, 64]
    k = g.call("transpose", heads, axes=(0, 2, 3, 1))  # [batch, 12, 64, seq]
    probs = g.call("nn.softmax", g.call("matmul", q, k), axis=-1)
    ctx = g.call("matmul", probs, q)  # [batch, 12, seq, 64], laid out as computed
    merged = g.call("reshape", g.call("transpose", ctx, axes=(0, 2, 1, 3)), newshape=(B, S, HIDDEN))
    back = g.call("reshape", g.call("transpose", q, axes=(0, 2, 1, 3)), newshape=(B, S, HIDDEN))
    g.set_outputs([g.call("add", merged, g.call("nn.relu", back))])
    return g


def _bert_inputs(batch: int, seq: int) -> list[torch.Tensor]:
    return [torch.randn(batch, seq, HIDDEN, generator=torch.Generator().manual_seed(seq))]


def test_the_head_split_folds_into_views_with_seq_strides():
    g = _bert_heads()
    out = _folded(g, count=3)
    views = {n.name: n for n in _views(out)}
    q, k, back = (views[f"{name}.view"] for name in ("transpose", "transpose_0", "reshape_5"))
    seq_stride = (SymExpr.from_dim(HIDDEN) * S, 0)  # (constant, per-batch): 768*seq whatever the batch
    assert q.attrs["shape"] == ((0, 1), (HEADS, 0), (S, 0), (HEAD_DIM, 0))
    assert q.attrs["strides"] == (seq_stride, (HEAD_DIM, 0), (HIDDEN, 0), (1, 0))
    assert k.attrs["strides"] == (seq_stride, (HEAD_DIM, 0), (1, 0), (HIDDEN, 0))
    assert back.attrs["strides"] == (seq_stride, (HIDDEN, 0), (1, 0))
    assert q.attrs["offset"] == (0, 0) and q.attrs["batch_from"] == (0, 1)
    assert all(v.inputs[0] is out.inputs[0] for v in views.values()), "each view reads the projection itself"
    # the merge of a computed context crosses the heads' transposition: it needs its copy and keeps its ops
    assert ops(out).count("transpose") == 1 and ops(out).count("reshape") == 1
    _same_at_every_size(g, out, _bert_inputs, _grid(batch=(1, 2, 3), seq=(1, 5, 16, 33)))


def _packed_qkv() -> Graph:
    """torch's multi_head_attention_forward on a packed projection [batch, seq, 3E] (E=8, 2 heads): the middle
    reshape merges seq-major rows with the heads across a transposition (no strides), the end is a view again."""
    g = Graph("packed")
    x = g.add_input("x", TensorType("float32", (B, S, 24)))
    v = g.call("reshape", g.call("transpose", x, axes=(1, 0, 2)), newshape=(S, B, 3, 8))
    v = g.call("squeeze", g.call("transpose", g.call("expand_dims", v, axis=0), axes=(3, 1, 2, 0, 4)), axis=(3,))
    heads = []
    for i in range(3):
        s = g.call("squeeze", g.call("strided_slice", v, begin=(i,), end=(i + 1,), axes=(0,)), axis=(0,))
        s = g.call("transpose", g.call("reshape", s, newshape=(S, Sym("batch", 2), 4)), axes=(1, 0, 2))
        heads.append(g.call("reshape", s, newshape=(B, 2, S, 4)))
    g.set_outputs([g.call("add", g.call("multiply", heads[0], heads[1]), heads[2])])
    return g


def test_a_chain_whose_middle_is_no_view_folds_under_seq():
    g = _packed_qkv()
    out = _folded(g, count=3)
    assert not VIEW_OPS & set(ops(out)), ops(out)
    views = _views(out)
    assert len(views) == 3 and all(v.inputs[0] is out.inputs[0] for v in views)
    # query, key, value: (batch, head, position, dim) at strides (24*seq, 4, 24, 1) from columns 0, 8, 16
    assert [v.attrs["offset"] for v in views] == [(0, 0), (8, 0), (16, 0)]
    assert views[0].attrs["strides"] == ((24 * S, 0), (4, 0), (24, 0), (1, 0))

    def inputs(batch: int, seq: int) -> list[torch.Tensor]:
        return [torch.randn(batch, seq, 24)]

    _same_at_every_size(g, out, inputs, _grid(batch=(1, 2, 4), seq=(1, 3, 7, 12)))


def test_rows_of_batch_times_seq_split_into_heads():
    """A GEMM over rows [batch*seq, 24] (GPT-2's attention reads its packed projection so): the one row axis
    splits into batch and seq, a split of one digit into two symbolic ones."""
    g = Graph("rows")
    lengths = g.add_input("lengths", TensorType("float32", (B, S)))  # binds batch and seq
    x = g.add_input("x", TensorType("float32", (B * S, 24)))
    q = g.call("transpose", g.call("reshape", x, newshape=(B, S, 2, 12)), axes=(0, 2, 1, 3))
    g.set_outputs([g.call("add", q, g.call("reshape", lengths, newshape=(B, 1, S, 1)))])
    out = _folded(g, count=1)
    (view,) = _views(out)
    assert view.attrs["strides"] == ((24 * S, 0), (12, 0), (24, 0), (1, 0)) and view.attrs["batch_from"] is None
    assert view.attrs["shape"][0] == (B, 0), "no batch axis to read it from: the run's sizes bind it"

    def inputs(batch: int, seq: int) -> list[torch.Tensor]:
        return [torch.randn(batch, seq), torch.randn(batch * seq, 24)]

    _same_at_every_size(g, out, inputs, _grid(batch=(1, 2, 3), seq=(1, 4, 7)))


# ---------------------------------------------------------------------------------------------
# Slices with symbolic ends
# ---------------------------------------------------------------------------------------------


def _sliced() -> Graph:
    """Slices that drop the first position, keep the last, take every other one, and cut a doubled axis at a
    symbolic point; each is then split into heads, so each chain is two or more ops."""
    g = Graph("slices")
    x = g.add_input("x", TensorType("float32", (B, S, 16)))
    y = g.add_input("y", TensorType("float32", (B, 2 * S, 16)))

    def heads(t: ir.Value, length: object) -> ir.Value:
        return g.call("transpose", g.call("reshape", t, newshape=(B, length, 2, 8)), axes=(0, 2, 1, 3))

    tail = heads(g.call("strided_slice", x, begin=(1,), end=(OPEN,), axes=(1,)), S - 1)  # [b, 2, seq-1, 8]
    last = heads(g.call("strided_slice", x, begin=(-1,), end=(OPEN,), axes=(1,)), 1)  # [b, 2, 1, 8]
    evens = g.call("strided_slice", x, begin=(0,), end=(OPEN,), strides=(2,), axes=(1,))  # [b, (seq+1)//2, 16]
    every = g.call("transpose", evens, axes=(0, 2, 1))
    second = heads(g.call("strided_slice", y, begin=(S,), end=(OPEN,), axes=(1,)), S)  # y[:, seq:]
    first = heads(g.call("strided_slice", y, begin=(0,), end=(S,), axes=(1,)), S)  # y[:, :seq]
    pooled = g.call("sum", tail, axis=(2,))  # [b, 2, 8]
    g.set_outputs(
        [
            g.call("add", pooled, g.call("sum", last, axis=(2,))),
            g.call("nn.relu", every),
            g.call("multiply", first, second),
        ]
    )
    return g


def test_slices_with_symbolic_ends_fold_with_symbolic_offsets():
    g = _sliced()
    out = _folded(g, count=5)
    assert not VIEW_OPS & set(ops(out)), ops(out)
    by_source = {}
    for v in _views(out):
        by_source.setdefault(v.inputs[0].name, []).append(v)
    tail, last, every = by_source["x"]
    second, first = by_source["y"]
    assert tail.attrs["offset"] == (16, 0) and tail.attrs["shape"][2] == (S - 1, 0)
    assert last.attrs["offset"] == (16 * S - 16, 0)  # seq - 1 rows in
    assert every.attrs["shape"][2] == ((S + 1) // 2, 0) and every.attrs["strides"] == ((16 * S, 0), (1, 0), (32, 0))
    assert second.attrs["offset"] == (16 * S, 0) and first.attrs["offset"] == (0, 0)
    assert second.attrs["strides"][0] == (32 * S, 0)

    def inputs(batch: int, seq: int) -> list[torch.Tensor]:
        return [torch.randn(batch, seq, 16), torch.randn(batch, 2 * seq, 16)]

    _same_at_every_size(g, out, inputs, _grid(batch=(1, 2, 3), seq=(4, 5, 9, 16)))


def test_a_slice_of_whole_rows_of_an_axis_merged_across_a_transposition_folds():
    """[b, seq, 4, 6] -> [b, 4, seq*6] merges seq with the 6 columns across the transposition (no stride says
    that axis); dropping its first 6 elements drops one whole seq position, and the split back is a view."""
    g = Graph("rows")
    x = g.add_input("x", TensorType("float32", (B, S, 4, 6)))
    merged = g.call("reshape", g.call("transpose", x, axes=(0, 2, 1, 3)), newshape=(B, 4, 6 * S))
    cut = g.call("strided_slice", merged, begin=(6,), end=(OPEN,), axes=(2,))  # [b, 4, 6*seq - 6]
    g.set_outputs([g.call("nn.relu", g.call("reshape", cut, newshape=(B, 4, S - 1, 6)))])
    out = _folded(g, count=1)
    (view,) = _views(out)
    assert view.attrs["strides"] == ((24 * S, 0), (6, 0), (24, 0), (1, 0)) and view.attrs["offset"] == (24, 0)
    _same_at_every_size(g, out, lambda b, s: [torch.randn(b, s, 4, 6)], _grid(batch=(1, 2, 3), seq=(1, 2, 5, 9)))


def test_a_backward_slice_stays():
    g = Graph("backward")
    x = g.add_input("x", TensorType("float32", (B, S, 4)))
    r = g.call("strided_slice", x, begin=(-1,), end=(-(2**63),), strides=(-1,), axes=(1,))
    g.set_outputs([g.call("nn.relu", g.call("transpose", r, axes=(0, 2, 1)))])
    out = _folded(g, count=0)
    _same_at_every_size(g, out, lambda b, s: [torch.randn(b, s, 4)], [(1, 3), (2, 5)])


# ---------------------------------------------------------------------------------------------
# A conv net's flatten over h and w
# ---------------------------------------------------------------------------------------------

CHANNELS = 6


def _patches() -> Graph:
    """ViT's patch tokens `x.flatten(2).transpose(1, 2)` over [batch, c, h, w], the same after dropping the first
    row, and a channels-last flatten (which crosses the transposition: a copy, left as it is)."""
    g = Graph("patches")
    x = g.add_input("x", TensorType("float32", (B, CHANNELS, H, W)))
    a = g.call("nn.relu", x)
    tokens = g.call("transpose", g.call("reshape", a, newshape=(B, CHANNELS, H * W)), axes=(0, 2, 1))
    cut = g.call("strided_slice", a, begin=(1,), end=(OPEN,), axes=(2,))
    rows = g.call("transpose", g.call("reshape", cut, newshape=(B, CHANNELS, (H - 1) * W)), axes=(0, 2, 1))
    flat = g.call("nn.batch_flatten", g.call("transpose", a, axes=(0, 2, 3, 1)))
    weight = g.add_constant(torch.randn(4, CHANNELS), "w")
    g.set_outputs([g.call("nn.dense", tokens, weight), g.call("nn.dense", rows, weight), g.call("exp", flat)])
    return g


def _image(batch: int, h: int, w: int) -> list[torch.Tensor]:
    return [torch.randn(batch, CHANNELS, h, w)]


IMAGE_SIZES = _grid(batch=(1, 2, 3), h=(2, 3, 7), w=(2, 5, 8))


def test_a_flatten_over_h_and_w_folds():
    g = _patches()
    out = _folded(g, count=2)
    tokens, rows = _views(out)
    assert tokens.attrs["shape"] == ((0, 1), (H * W, 0), (CHANNELS, 0))
    assert tokens.attrs["strides"] == ((CHANNELS * H * W, 0), (1, 0), (H * W, 0))
    assert rows.attrs["offset"] == (W, 0) and rows.attrs["shape"][1] == (H * W - W, 0)
    assert ops(out).count("nn.batch_flatten") == 1, "channels-last rows are not a view of [b, c, h, w]"
    _same_at_every_size(g, out, _image, IMAGE_SIZES)


# ---------------------------------------------------------------------------------------------
# Plans: the views are layers, every size runs, files round-trip, tampered views are refused
# ---------------------------------------------------------------------------------------------

SEQ_PROFILE = Profile({"batch": (1, 2, 3), "seq": (1, 16, 40)})
SEQ_SIZES = _grid(batch=(1, 2, 3), seq=(1, 7, 16, 40))
IMAGE_PROFILE = Profile({"batch": (1, 2, 3), "h": (2, 4, 7), "w": (2, 4, 8)})


def _bert_eager(x: torch.Tensor) -> torch.Tensor:
    batch, seq, _ = x.shape
    heads = x.reshape(batch, seq, HEADS, HEAD_DIM)
    q, k = heads.transpose(1, 2), heads.permute(0, 2, 3, 1)
    ctx = torch.softmax(q @ k, dim=-1) @ q
    merged = ctx.transpose(1, 2).reshape(batch, seq, HIDDEN)
    return merged + torch.relu(q.transpose(1, 2).reshape(batch, seq, HIDDEN))


def _patches_eager(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a = torch.relu(x)
    tokens = a.flatten(2).transpose(1, 2)
    rows = a[:, :, 1:].flatten(2).transpose(1, 2)
    return F.linear(tokens, weight), F.linear(rows, weight), torch.exp(a.permute(0, 2, 3, 1).flatten(1))


@pytest.fixture(scope="module")
def bert_plan() -> Plan:
    return Builder().build(_bert_heads(), profile=SEQ_PROFILE)


def test_a_seq_plan_reads_the_heads_through_views(bert_plan):
    layers = [layer.op for layer in bert_plan.layers]
    assert layers.count("engine.strided_view") == 3, layers
    assert layers.count("transpose") == 1 and layers.count("reshape") == 1, "only the computed context's merge copies"
    region = _bert_heads()
    for batch, seq in SEQ_SIZES:
        (x,) = _bert_inputs(batch, seq)
        out = bert_plan.run(x)
        assert_outputs_close(out, (_bert_eager(x),), FUSED_TOL)
        assert_outputs_close(out, ir.execute(region, x), FUSED_TOL)


def test_an_image_plan_flattens_through_views():
    region = _patches()
    plan = Builder().build(region, profile=IMAGE_PROFILE)
    layers = [layer.op for layer in plan.layers]
    assert layers.count("engine.strided_view") == 2 and "reshape" not in layers, layers
    weight = region.constants["w"].data
    for size in _grid(batch=(1, 2, 3), h=(2, 5, 7), w=(2, 3, 8)):
        (x,) = _image(*size)
        out = plan.run(x)
        assert_outputs_close(out, _patches_eager(x, weight), FUSED_TOL)
        assert_outputs_close(out, ir.execute(region, x), FUSED_TOL)


def _plan_doc(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["tensorforge.plan"])


def _view_attrs(doc: dict) -> list[dict]:
    return [n["attrs"] for n in doc["graph"]["nodes"] if n["op"] == "engine.strided_view"]


def test_symbolic_views_round_trip_through_plan_bytes(bert_plan):
    data = bert_plan.to_bytes()
    attrs = _view_attrs(_plan_doc(data))
    assert attrs[0]["strides"][0] == [{"__sym__": ["seq", HIDDEN]}, 0]  # 768*seq in the file, as in shapes
    assert attrs[0]["shape"][2] == [{"__sym__": ["seq", 1]}, 0]
    loaded = Plan.from_bytes(data, device="cpu")
    assert loaded.to_bytes() == data
    assert [n.attrs for n in _views(loaded.graph)] == [n.attrs for n in _views(bert_plan.graph)]
    for batch, seq in SEQ_SIZES:
        (x,) = _bert_inputs(batch, seq)
        assert torch.equal(loaded.run(x)[0], bert_plan.run(x)[0])


def _edit_view(data: bytes, edit: Callable[[dict], None]) -> bytes:
    """The plan with its first strided view's attributes changed by `edit` and the file resealed, as a crafted
    file would be (the digest catches damage, not intent)."""
    doc = _plan_doc(data)
    edit(_view_attrs(doc)[0])
    tensors = load_tensors(data)
    seal(doc, tensors)
    return save_tensors(tensors, metadata={"tensorforge.plan": json.dumps(doc)})


HOSTILE_VIEWS = [
    pytest.param(lambda a: a.update(offset=[{"__size__": {"exec": "print(1)"}}, 0]), "malformed", id="not-an-expr"),
    pytest.param(lambda a: a.update(offset=[{"__sym__": ["seq", 10**6]}, 0]), "do not lie inside", id="past-the-end"),
    pytest.param(lambda a: a["strides"].__setitem__(1, [-64, 0]), "do not lie inside", id="negative-stride"),
    pytest.param(lambda a: a["strides"].__setitem__(1, ["64", 0]), "pair of ints or symbolic sizes", id="string"),
    pytest.param(lambda a: a["strides"].__setitem__(1, [64.5, 0]), "pair of ints or symbolic sizes", id="float"),
    pytest.param(lambda a: a["strides"].pop(), "one pair per axis", id="short-strides"),
    pytest.param(lambda a: a.update(batch_from=[7, 1]), "batch_from must be", id="batch-axis-out-of-range"),
    pytest.param(lambda a: a.update(offset=[{"__sym__": ["evil", 1]}, 0]), "evil", id="unknown-symbol"),
]


@pytest.mark.parametrize("edit, message", HOSTILE_VIEWS)
def test_a_tampered_view_in_a_plan_is_refused(bert_plan, edit, message):
    with pytest.raises(PlanCompatibilityError, match=message):
        Plan.from_bytes(_edit_view(bert_plan.to_bytes(), edit), device="cpu")


# ---------------------------------------------------------------------------------------------
# End to end: Hugging Face BertModel exported with a dynamic seq
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_hf_bert_over_a_dynamic_seq_reads_q_k_v_through_views():
    """A tiny BertModel (random weights) from torch.export with Dim("batch") and Dim("seq"): after horizontal
    fusion Q, K and V of each layer are one GEMM, and each head split folds onto its output, so the plan reads
    them in place at every seq of the profile."""
    from torch.export import Dim

    from tensorforge.frontends import from_torch

    torch.manual_seed(0)
    model = tiny_bert()
    dims = {0: Dim("batch", max=16), 1: Dim("seq", max=128)}

    def inputs(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(batch * 100 + seq)
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[:, (seq + 1) // 2 :] = 0
        return torch.randint(0, 100, (batch, seq), generator=gen), mask

    ids, mask = inputs(2, 8)
    graph = from_torch(
        model,
        (),
        example_kwargs={"input_ids": ids, "attention_mask": mask},
        dynamic_shapes={"input_ids": dims, "attention_mask": dims},
    )
    plan = Builder().build(graph, profile=Profile({"batch": (1, 2, 3), "seq": (4, 16, 40)}))

    def reads_a_gemm(node: ir.Node) -> bool:
        producer = node.inputs[0].producer
        return producer is not None and producer.op == "engine.dense"

    heads = [n for n in plan.graph.nodes if n.op == "engine.strided_view" and reads_a_gemm(n)]
    assert len(heads) == 3 * model.config.num_hidden_layers, [layer.op for layer in plan.layers]
    assert all(n.attrs["strides"][0][0] == 96 * S for n in heads), "a head's batch stride is 3*hidden*seq"
    assert not any(n.op == "transpose" and reads_a_gemm(n) for n in plan.graph.nodes), "no head split copies"
    for batch, seq in ((1, 4), (3, 17), (2, 40)):
        ids, mask = inputs(batch, seq)
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask)
        out = plan.run(ids, mask)
        assert_outputs_close(out, (ref.last_hidden_state, ref.pooler_output), {torch.float32: (1e-4, 1e-4)})
        assert_outputs_close(out, ir.execute(graph, ids, mask), FUSED_TOL)
