"""The `subgraph` op (how partitioning marks an engine region): executed, verified, printed and saved with
its parent graph. It cannot be a one-node table row, so tests/ops/test_coverage.py points here."""

import pytest
import torch
import torch.nn as nn

from helpers import BATCH, assert_close, run_graph
from tensorforge import ir
from tensorforge.ir import Graph, TensorType, Value, VerificationError
from tensorforge.ir.ops.opaque import encode_output_type


def region() -> Graph:
    """a: f32[batch,3] -> dense(w: 4x3) -> relu"""
    sub = Graph("region0")
    a = sub.add_input("a", TensorType("float32", (BATCH, 3)))
    w = sub.add_constant(torch.randn(4, 3), name="w")
    sub.set_outputs([sub.call("nn.relu", sub.call("nn.dense", a, w))])
    return sub


def parent() -> Graph:
    """x -> negative -> [region0] -> exp, with a constant of the same name as the region's, to catch mix-ups."""
    graph = Graph("main")
    x = graph.add_input("x", TensorType("float32", (BATCH, 3)))
    graph.add_constant(torch.randn(4), name="w")
    graph.subgraphs["region0"] = region()
    neg = graph.call("negative", x)
    call = graph.add_node(
        "subgraph",
        [neg],
        {"callee": "region0", "output_types": (encode_output_type(TensorType("float32", (BATCH, 4))),)},
        name="call0",
    )
    graph.set_outputs([graph.call("add", graph.call("exp", call.output), graph.constants["w"])])
    return graph.verify()


def eager(graph, x):
    linear = nn.Linear(3, 4, bias=False)
    linear.weight.data.copy_(graph.subgraphs["region0"].constants["w"].data)
    return torch.exp(torch.relu(linear(-x))) + graph.constants["w"].data


@pytest.mark.parametrize("batch", [1, 3])
def test_subgraph_executes(batch):
    graph = parent()
    x = torch.randn(batch, 3)
    (out,) = run_graph(graph, [x])
    with torch.no_grad():
        assert_close(out, eager(graph, x))


def test_subgraph_is_printed_after_its_parent():
    text = str(parent())
    assert "= subgraph(%negative, callee='region0'" in text
    assert text.index("graph main(") < text.index("graph region0(%a: f32[batch,3])")


def test_subgraph_survives_save_and_load(tmp_path):
    graph = parent()
    ir.save(graph, tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge").verify()
    assert str(loaded) == str(graph)
    assert sorted(loaded.subgraphs) == ["region0"]
    assert torch.equal(loaded.subgraphs["region0"].constants["w"].data, graph.subgraphs["region0"].constants["w"].data)
    assert torch.equal(loaded.constants["w"].data, graph.constants["w"].data)
    x = torch.randn(2, 3)
    assert torch.equal(ir.execute(loaded, x)[0], ir.execute(graph, x)[0])


def test_subgraph_op_does_not_run_alone():
    with pytest.raises(RuntimeError, match="executed by its enclosing graph"):
        ir.get_op("subgraph").run([torch.zeros(1)], {"callee": "r", "target": "tensorforge", "output_types": ()}, {})


def missing_callee(g):
    del g.subgraphs["region0"]


def argument_type_mismatch(g):
    g.subgraphs["region0"].inputs[0].type = TensorType("float32", (BATCH, 5))


def output_type_mismatch(g):
    sub = g.subgraphs["region0"]
    sub.set_outputs([sub.inputs[0]])  # f32[batch,3], the call records f32[batch,4]


def broken_callee(g):
    g.subgraphs["region0"]._outputs = (Value("ghost", TensorType("float32", (BATCH, 4))),)  # behind its methods


BROKEN = [
    (missing_callee, r"node 'call0' \(subgraph\): calls subgraph 'region0', which the graph does not hold"),
    (
        argument_type_mismatch,
        r"node 'call0' \(subgraph\): argument types differ from the inputs of subgraph "
        r"'region0'",
    ),
    (
        output_type_mismatch,
        r"node 'call0' \(subgraph\): output types differ from the outputs of subgraph "
        r"'region0'",
    ),
    (broken_callee, r"graph 'region0': graph output %ghost is not defined"),
]


@pytest.mark.parametrize("break_it, message", BROKEN, ids=[f.__name__.replace("_", "-") for f, _ in BROKEN])
def test_verifier_checks_the_call(break_it, message):
    graph = parent()
    break_it(graph)
    with pytest.raises(VerificationError, match=message):
        graph.verify()
