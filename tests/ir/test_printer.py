"""str(graph) (the full listing) and graph.summary() (op counts, constants, MACs, opaque nodes)."""

import torch

from helpers import BATCH
from tensorforge.ir import Graph, Sym, TensorType
from tensorforge.ir.ops.opaque import encode_output_type


def net(with_opaque=True) -> Graph:
    graph = Graph("net")
    x = graph.add_input("x", TensorType("float32", (BATCH, 3, 8, 8)))
    w = graph.add_constant(torch.zeros(4, 3, 3, 3), name="conv.weight")  # 432 bytes
    conv = graph.call("nn.conv2d", x, w, strides=(2, 2), padding=(1, 1), name="conv")
    act = graph.call("nn.relu", conv, name="act")
    halves = graph.call("split", act, indices_or_sections=2, axis=1, name="halves")
    out = graph.call("add", halves[0], halves[1], name="sum")
    if with_opaque:
        out = graph.add_node(
            "torch.aten.cumsum.default",
            [out],
            {
                "args": ({"input": 0}, 1),
                "kwargs": {},
                "output_types": (encode_output_type(TensorType("float32", (BATCH, 2, 4, 4))),),
            },
            name="cumsum",
        ).output
    graph.set_outputs([out, act])
    return graph.verify()


def test_listing_shows_every_node_with_its_types():
    lines = str(net()).splitlines()
    assert lines[0] == "graph net(%x: f32[batch,3,8,8]) {"
    assert lines[1] == (
        "  %conv = nn.conv2d(%x, @conv.weight, strides=(2, 2), padding=(1, 1), dilation=(1, 1), "
        "groups=1)  # f32[batch,4,4,4]"
    )
    assert lines[2] == "  %act = nn.relu(%conv)  # f32[batch,4,4,4]"
    assert lines[3] == (
        "  %halves.0, %halves.1 = split(%act, indices_or_sections=2, axis=1)  # f32[batch,2,4,4], f32[batch,2,4,4]"
    )
    assert lines[4] == "  %sum = add(%halves.0, %halves.1)  # f32[batch,2,4,4]"
    assert lines[5].startswith("  %cumsum = torch.aten.cumsum.default(%sum, args=({input: 0}, 1), kwargs={}, ")
    assert lines[5].endswith("# f32[batch,2,4,4]")
    assert lines[6:] == ["  return %cumsum, %act", "}"]


def test_listing_prints_scaled_symbols_and_one_element_tuples():
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float16", (BATCH, 6)))
    y = graph.call("reshape", x, newshape=(Sym("batch", 2), 3))
    z = graph.call("sum", y, axis=(1,))
    graph.set_outputs([z])
    text = str(graph)
    assert "reshape(%x, newshape=(2*batch, 3))  # f16[2*batch,3]" in text
    assert "sum(%reshape, axis=(1,), keepdims=False)  # f16[2*batch]" in text


def test_summary_counts_ops_and_lists_opaque_nodes():
    lines = net().summary().splitlines()
    assert lines[0].startswith("graph net: 5 nodes, 5 distinct ops, 1 constants (0.0 MiB), ")
    assert lines[0].endswith("GMACs at batch 1")
    assert lines[1] == "inputs:  x: f32[batch,3,8,8]"
    assert lines[2] == "outputs: cumsum: f32[batch,2,4,4], act: f32[batch,4,4,4]"
    assert lines[3] == "op counts:"
    counted = {line.split()[0]: int(line.split()[1]) for line in lines[4:9]}
    assert counted == {"nn.conv2d": 1, "nn.relu": 1, "split": 1, "add": 1, "torch.aten.cumsum.default": 1}
    assert lines[9] == "opaque ops (1 nodes, run through their source framework):"
    assert lines[10] == "  cumsum: torch.aten.cumsum.default"


def test_summary_without_opaque_nodes_says_none():
    summary = net(with_opaque=False).summary()
    assert summary.splitlines()[-1] == "opaque ops: none"
    assert "torch.aten" not in summary


def test_summary_orders_ops_by_count():
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float32", (2,)))
    y = graph.call("exp", graph.call("nn.relu", graph.call("nn.relu", x)))
    graph.set_outputs([y])
    lines = graph.summary().splitlines()
    start = lines.index("op counts:")
    assert [line.split() for line in lines[start + 1 : start + 3]] == [["nn.relu", "2"], ["exp", "1"]]
