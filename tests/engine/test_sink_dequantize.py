"""sink_dequantize: a dequantize moves below the ops that commute with it (so that the layer after them reads 8
bits), quantize(dequantize(x)) at one type and scale is x, and nothing moves where the numbers would change."""

from __future__ import annotations

import pytest
import torch

from tensorforge.engine.passes import PassContext, run_passes
from tensorforge.engine.passes.sink_dequantize import sink_dequantize
from tensorforge.ir import Graph, Sym, TensorType, execute

B = Sym("batch")


def _qdq(g: Graph, x, scale: float, dtype: str = "int8"):
    s = g.add_constant(torch.tensor(scale), f"s{len(g.constants)}")
    return g.call("dequantize", g.call("quantize", x, s, dtype=dtype), s)


def _weight(g: Graph, shape: tuple[int, ...], dtype: str = "int8"):
    w_q = torch.randint(-127, 128, shape).to(torch.int8)
    if dtype != "int8":
        w_q = (torch.randn(shape) * 100).to(torch.float8_e4m3fn)
    w_s = g.add_constant(torch.rand(shape[0]) * 0.01 + 0.001, f"ws{len(g.constants)}")
    return g.call("dequantize", g.add_constant(w_q, f"w{len(g.constants)}"), w_s, axis=0)


@pytest.mark.parametrize("dtype", ["int8", "float8_e4m3fn"])
def test_an_onnxruntime_style_pool_between_pairs_runs_in_8_bits(dtype):
    """DQ -> MaxPool -> Q (one scale) -> DQ -> Conv: the pool reads the 8-bit tensor, the pair between goes, and
    the convolution becomes an 8-bit layer."""
    torch.manual_seed(0)
    g = Graph("pool")
    x = g.add_input("x", TensorType("float32", (B, 4, 8, 8)))
    pooled = g.call("nn.max_pool2d", _qdq(g, x, 0.05, dtype), pool_size=(3, 3), strides=(2, 2), padding=(1, 1))
    again = _qdq(g, pooled, 0.05, dtype)
    y = g.call("nn.conv2d", again, _weight(g, (6, 4, 3, 3), dtype), strides=(1, 1), padding=(1, 1))
    g.set_outputs([y])
    g.verify()
    ctx = PassContext()
    out = run_passes(g, ctx, verify_each=True)
    assert [n.op for n in out.nodes] == ["quantize", "nn.max_pool2d", "engine.qconv"]
    assert out.nodes[1].output.type.dtype == dtype
    assert ctx.counters["sink_dequantize"] == 2  # the pool moved, the pair after it went
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(execute(out, x)[0], execute(g, x)[0], rtol=1e-5, atol=1e-5)


def test_reshapes_and_transposes_move_and_the_projection_reads_8_bits():
    torch.manual_seed(0)
    g = Graph("heads")
    x = g.add_input("x", TensorType("float32", (B, 2, 4, 8)))  # [batch, heads, tokens, dim]
    merged = g.call("reshape", g.call("transpose", _qdq(g, x, 0.03), axes=(0, 2, 1, 3)), newshape=(B, 4, 16))
    y = g.call("nn.dense", merged, _weight(g, (5, 16)))
    g.set_outputs([y])
    g.verify()
    out = run_passes(g, PassContext(), verify_each=True)
    assert "engine.qdense" in [n.op for n in out.nodes]
    assert "dequantize" not in [n.op for n in out.nodes]
    x = torch.randn(3, 2, 4, 8)
    torch.testing.assert_close(execute(out, x)[0], execute(g, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scales", [(0.02, 0.02), (0.02, 0.03)], ids=["equal-scales", "different-scales"])
def test_a_concatenation_moves_only_at_one_scale(scales):
    g = Graph("concat")
    a = g.add_input("a", TensorType("float32", (B, 3)))
    b = g.add_input("b", TensorType("float32", (B, 5)))
    joined = g.call("concatenate", _qdq(g, a, scales[0]), _qdq(g, b, scales[1]), axis=1)
    g.set_outputs([g.call("nn.relu", joined)])
    g.verify()
    ctx = PassContext()
    out = sink_dequantize(g, ctx)
    moved = scales[0] == scales[1]
    assert ctx.counters["sink_dequantize"] == int(moved)
    concat = next(n for n in out.nodes if n.op == "concatenate")
    assert concat.output.type.dtype == ("int8" if moved else "float32")
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    torch.testing.assert_close(execute(out, a, b)[0], execute(g, a, b)[0], rtol=0, atol=0)


def test_a_different_scale_or_type_keeps_the_pair():
    g = Graph("requantize")
    x = g.add_input("x", TensorType("float32", (B, 8)))
    y = _qdq(g, _qdq(g, x, 0.02), 0.04)
    g.set_outputs([y])
    g.verify()
    ctx = PassContext()
    out = sink_dequantize(g, ctx)
    assert ctx.counters["sink_dequantize"] == 0
    assert [n.op for n in out.nodes].count("quantize") == 2


def test_a_per_channel_dequantize_stays():
    """A per-channel scale belongs to an axis a transpose would move: nothing moves."""
    g = Graph("per_channel")
    w = _weight(g, (4, 6))
    g.set_outputs([g.call("transpose", w, axes=(1, 0))])
    g.verify()
    ctx = PassContext()
    sink_dequantize(g, ctx)
    assert ctx.counters["sink_dequantize"] == 0
