"""Symbolic shape inference of products and attention (issue 14, step 3): `seq` on the M or K axes of dense,
matmul and batch_matmul, `seq x seq` score matrices, scaled-dot-product attention (q's shape with v's last size);
paired sizes that differ are refused naming both. Ends with a transformer block typed `[batch, seq, hidden]` end to
end. Each graph runs like PyTorch at three sizes."""

import re

import pytest
import torch
import torch.nn.functional as F

from symbolic_checks import B, H, S, W, cases, check
from tensorforge import ir
from tensorforge.ir import Graph, ShapeInferenceError, TensorType


def _weight(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))) / shape[-1] ** 0.5


W_DENSE = _weight(5, 6)


def case_dense_with_seq_on_m(g):
    x = g.add_input("x", TensorType("float32", (B, S, 6)))
    return [g.call("nn.dense", x, g.add_constant(W_DENSE, "w"))], [(B, S, 5)], lambda x: F.linear(x, W_DENSE)


def case_matmul_seq_by_seq(g):
    x = g.add_input("x", TensorType("float32", (B, S, 6)))
    scores = g.call("matmul", x, g.call("transpose", x, axes=(0, 2, 1)))
    return [scores], [(B, S, S)], lambda x: x @ x.transpose(1, 2)


def case_matmul_with_seq_on_k(g):
    x = g.add_input("x", TensorType("float32", (B, S, 6)))
    gram = g.call("matmul", g.call("transpose", x, axes=(0, 2, 1)), x)
    return [gram], [(B, 6, 6)], lambda x: x.transpose(1, 2) @ x


def case_matmul_broadcasts_batch_axes_and_vectors(g):
    x = g.add_input("x", TensorType("float32", (B, 1, S, H)))
    y = g.add_input("y", TensorType("float32", (3, H, W)))
    v = g.add_input("v", TensorType("float32", (W,)))
    xy = g.call("matmul", x, y)
    return [xy, g.call("matmul", xy, v)], [(B, 3, S, W), (B, 3, S)], lambda x, y, v: (x @ y, x @ y @ v)


def case_batch_matmul_transposes(g):
    a = g.add_input("a", TensorType("float32", (B, H, S)))
    b = g.add_input("b", TensorType("float32", (B, W, H)))
    out = g.call("nn.batch_matmul", a, b, transpose_a=True, transpose_b=True)
    return [out], [(B, S, W)], lambda a, b: torch.bmm(a.transpose(1, 2), b.transpose(1, 2))


def case_sdpa_self_attention_causal(g):
    q, k = (g.add_input(n, TensorType("float32", (B, 2, S, 8))) for n in "qk")
    v = g.add_input("v", TensorType("float32", (B, 2, S, 5)))
    out = g.call("nn.scaled_dot_product_attention", q, k, v, is_causal=True)
    return [out], [(B, 2, S, 5)], lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def case_sdpa_cross_attention_with_mask(g):
    q = g.add_input("q", TensorType("float32", (B, 2, S, 8)))
    k = g.add_input("k", TensorType("float32", (B, 2, H, 8)))
    v = g.add_input("v", TensorType("float32", (B, 2, H, 4)))
    mask = g.add_input("mask", TensorType("float32", (B, 1, S, H)))
    out = g.call("nn.scaled_dot_product_attention", q, k, v, mask, scale=0.5)
    return [out], [(B, 2, S, 4)], lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=0.5)


CASES, CASE_IDS = cases(globals())


@pytest.mark.parametrize("build", CASES, ids=CASE_IDS)
def test_product_types_and_numerics(build):
    graph = Graph(build.__name__)
    outs, expected, eager = build(graph)
    check(graph, outs, expected, eager)


def test_paired_sizes_that_differ_are_refused_naming_both():
    g = Graph("refused")
    x = g.add_input("x", TensorType("float32", (B, S, 6)))
    y = g.add_input("y", TensorType("float32", (B, H, 3)))
    with pytest.raises(ShapeInferenceError, match=re.escape("the contracted size: h against 6 holds only at h = 6")):
        g.call("matmul", x, y)
    with pytest.raises(ShapeInferenceError, match=re.escape("the contracted size: seq against 7")):
        g.call("nn.dense", g.call("transpose", x, axes=(0, 2, 1)), g.add_constant(torch.zeros(3, 7), "w"))
    with pytest.raises(ShapeInferenceError, match=re.escape("the batch size: seq against batch")):
        g.call("nn.batch_matmul", g.call("transpose", x, axes=(1, 0, 2)), x)
    q = g.add_input("q", TensorType("float32", (B, 2, S, 8)))
    k = g.add_input("k", TensorType("float32", (B, 2, H, 8)))
    with pytest.raises(ShapeInferenceError, match=re.escape("the length of keys and values: h against seq")):
        g.call("nn.scaled_dot_product_attention", q, k, q)


HIDDEN, HEADS, VOCAB, MLP = 16, 4, 10, 32


def _params() -> dict[str, torch.Tensor]:
    names = {
        "emb": (VOCAB, HIDDEN),
        "wq": (HIDDEN, HIDDEN),
        "wk": (HIDDEN, HIDDEN),
        "wv": (HIDDEN, HIDDEN),
        "wo": (HIDDEN, HIDDEN),
        "w1": (MLP, HIDDEN),
        "w2": (HIDDEN, MLP),
    }
    params = {n: _weight(*s) for n, s in names.items()}
    for i in (1, 2):
        params[f"ln{i}_g"] = 1 + 0.1 * _weight(HIDDEN + i)[:HIDDEN]
        params[f"ln{i}_b"] = 0.1 * _weight(HIDDEN + 2 + i)[:HIDDEN]
    return params


def test_transformer_block_types_batch_seq_hidden_and_matches_eager():
    """Embedding lookup of ids[batch, seq], layernorm, q/k/v dense, heads by reshape and transpose, q @ k^T
    (seq x seq), softmax, @ v, heads merged back by reshape, output projection, residual, layernorm, gelu MLP,
    residual: every intermediate keeps batch and seq, and the output is [batch, seq, hidden]."""
    p = _params()
    g = Graph("transformer_block")
    ids = g.add_input("ids", TensorType("int64", (B, S)))
    c = {n: g.add_constant(t, n) for n, t in p.items()}
    x = g.call("take", c["emb"], ids, axis=0)
    assert x.type.shape == (B, S, HIDDEN)
    h = g.call("nn.layer_norm", x, c["ln1_g"], c["ln1_b"])
    head_dim = HIDDEN // HEADS

    def heads(w: str, axes: tuple[int, ...]) -> ir.Value:
        split = g.call("reshape", g.call("nn.dense", h, c[w]), newshape=(B, S, HEADS, -1))
        return g.call("transpose", split, axes=axes)

    q, k_t, v = heads("wq", (0, 2, 1, 3)), heads("wk", (0, 2, 3, 1)), heads("wv", (0, 2, 1, 3))
    assert (q.type.shape, k_t.type.shape) == ((B, HEADS, S, head_dim), (B, HEADS, head_dim, S))
    scale = g.add_constant(torch.tensor(head_dim**-0.5), "scale")
    scores = g.call("multiply", g.call("matmul", q, k_t), scale)
    assert scores.type.shape == (B, HEADS, S, S)
    attn = g.call("matmul", g.call("nn.softmax", scores, axis=-1), v)
    merged = g.call("reshape", g.call("transpose", attn, axes=(0, 2, 1, 3)), newshape=(-1, HIDDEN))
    assert merged.type.shape == (B * S, HIDDEN)
    projected = g.call("reshape", g.call("nn.dense", merged, c["wo"]), newshape=(B, S, HIDDEN))
    x = g.call("add", x, projected)
    mlp = g.call("nn.dense", g.call("nn.layer_norm", x, c["ln2_g"], c["ln2_b"]), c["w1"])
    out = g.call("add", x, g.call("nn.dense", g.call("nn.gelu", mlp), c["w2"]))

    def eager(ids):
        b, s = ids.shape
        x = F.embedding(ids, p["emb"])
        h = F.layer_norm(x, (HIDDEN,), p["ln1_g"], p["ln1_b"])
        q, k, v = (F.linear(h, p[w]).reshape(b, s, HEADS, head_dim).transpose(1, 2) for w in ("wq", "wk", "wv"))
        attn = torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, -1) @ v
        x = x + F.linear(attn.transpose(1, 2).reshape(b * s, HIDDEN), p["wo"]).reshape(b, s, HIDDEN)
        return x + F.linear(F.gelu(F.linear(F.layer_norm(x, (HIDDEN,), p["ln2_g"], p["ln2_b"]), p["w1"])), p["w2"])

    check(g, [out], [(B, S, HIDDEN)], eager)
