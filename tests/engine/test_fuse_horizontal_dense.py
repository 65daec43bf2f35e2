"""fuse_horizontal_dense: dense layers sharing an input become one wide GEMM + split, with the same numbers."""

from __future__ import annotations

import torch

from tensorforge import ir
from tensorforge.engine.passes import PassContext, fuse_horizontal_dense
from tensorforge.ir import Sym, TensorType


def _graph():
    g = ir.Graph()
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 8, 32)))
    outs = []
    for name, activation in (("q", None), ("k", None), ("v", None), ("ffn", "nn.relu")):
        w = g.add_constant(torch.randn(16, 32), f"{name}.w")
        b = g.add_constant(torch.randn(16), f"{name}.b")
        outs.append(g.call("engine.dense", x, w, b, has_bias=True, activation=activation, name=name))
    other = g.add_input("y", TensorType("float32", (Sym("batch"), 8, 32)))
    w = g.add_constant(torch.randn(16, 32), "lone.w")
    outs.append(g.call("engine.dense", other, w, name="lone"))
    g.set_outputs(outs)
    return g.verify()


def test_same_input_same_epilogue_fuses_into_one_gemm():
    graph = _graph()
    ctx = PassContext()
    fused = fuse_horizontal_dense(graph, ctx).verify()
    assert ctx.counters["fuse_horizontal_dense"] == 3  # q, k, v; the relu layer has another epilogue
    dense = [n for n in fused.nodes if n.op == "engine.dense"]
    assert len(dense) == 3 and any(n.inputs[1].type.shape == (48, 32) for n in dense)
    assert [n.op for n in fused.nodes].count("split") == 1
    assert [v.type for v in fused.outputs] == [v.type for v in graph.outputs]
    assert len(graph.nodes) == 5, "the pass must not change its input"
    x, y = torch.randn(3, 8, 32), torch.randn(3, 8, 32)
    for a, b in zip(ir.execute(fused, x, y), ir.execute(graph, x, y)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_nothing_to_fuse_leaves_the_graph_alone():
    g = ir.Graph()
    x = g.add_input("x", TensorType("float32", (2, 4)))
    g.set_outputs([g.call("engine.dense", x, g.add_constant(torch.randn(3, 4), "w"))])
    ctx = PassContext()
    out = fuse_horizontal_dense(g.verify(), ctx)
    assert ctx.counters["fuse_horizontal_dense"] == 0 and [n.op for n in out.nodes] == ["engine.dense"]
