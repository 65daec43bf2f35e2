"""Graphs on disk: an exact round trip (text, attributes, constant bits, results), safetensors only, and a
clear GraphFormatError for anything that is not a tensorforge graph file."""

import json
import math
import pickle
import re
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from helpers import BATCH
from tensorforge import ir
from tensorforge.ir import Graph, GraphFormatError, Sym, TensorType, graph_from_json, graph_to_json
from tensorforge.ir.ops.opaque import encode_output_type
from tensorforge.ir.serialize import copy_graph
from test_subgraph import parent


def rich_graph() -> Graph:
    """A graph exercising every kind of thing the format must keep."""
    graph = Graph("rich")
    x = graph.add_input("x", TensorType("float32", (BATCH, 3, 8, 8)))
    ids = graph.add_input("ids", TensorType("int64", (BATCH, 5)))
    weight = graph.add_constant(torch.randn(4, 3, 3, 3), name="conv.weight")
    base = torch.randn(6, 4)
    table_t = graph.add_constant(base.t(), name="table_t")  # a non-contiguous view
    table = graph.add_constant(base, name="table")  # shares storage with table_t
    half = graph.add_constant(torch.randn(4).half(), name="half")
    bf16 = graph.add_constant(torch.randn(4).bfloat16(), name="bf16")
    mask = graph.add_constant(torch.tensor([True, False, True, True]), name="mask")
    scalar = graph.add_constant(torch.tensor(2.5), name="scalar")
    conv = graph.call("nn.conv2d", x, weight, strides=(2, 2), padding=(1, 1), name="conv")
    flat = graph.call("reshape", conv, newshape=(BATCH, -1))
    heads = graph.call("reshape", flat, newshape=(Sym("batch", 4), 16))
    clipped = graph.call("clip", heads, a_min=None, a_max=math.inf)
    parts = graph.call("split", clipped, indices_or_sections=(5, 9), axis=1)
    tail = graph.call("strided_slice", parts[2], begin=(-1,), end=(None,), strides=(-1,), axes=(1,))
    emb = graph.call("take", table, ids)
    emb_t = graph.call("take", table_t, ids, axis=1)
    gated = graph.call(
        "where", mask, graph.call("cast", half, dtype=torch.float32), graph.call("cast", bf16, dtype="float32")
    )
    scaled = graph.call("multiply", graph.call("add", emb, gated), scalar)
    summed = graph.add_node(
        "torch.aten.cumsum.default",
        [scaled],
        {
            "args": ({"input": 0}, 1),
            "kwargs": {"dtype": {"dtype": "float32"}},
            "output_types": (encode_output_type(TensorType("float32", (BATCH, 5, 4))),),
        },
        name="cumsum",
    ).output
    graph.set_outputs([parts[0], tail, summed, emb_t, conv])
    return graph.verify()


def _inputs(batch=2):
    return [torch.randn(batch, 3, 8, 8), torch.randint(-6, 6, (batch, 5))]


def test_rich_graph_is_what_it_claims():
    graph = rich_graph()
    attrs = {n.name: n.attrs for n in graph.nodes}
    assert attrs["clip"]["a_max"] == math.inf and attrs["clip"]["a_min"] is None
    assert any(len(n.outputs) == 3 for n in graph.nodes)
    assert not graph.constants["table_t"].data.is_contiguous()


def test_save_load_round_trip_is_exact(tmp_path):
    graph = rich_graph()
    ir.save(graph, tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge")
    loaded.verify()
    assert str(loaded) == str(graph)
    assert loaded.name == graph.name
    assert [(v.name, v.type) for v in loaded.inputs] == [(v.name, v.type) for v in graph.inputs]
    assert [v.name for v in loaded.outputs] == [v.name for v in graph.outputs]
    # constants: same names, dtypes, shapes and bits
    assert sorted(loaded.constants) == sorted(graph.constants)
    for name, value in graph.constants.items():
        got = loaded.constants[name]
        assert got.type == value.type
        assert got.data.dtype == value.data.dtype and torch.equal(got.data, value.data), name
    # nodes: same names, ops, attributes (with their Python types) and output types
    for a, b in zip(graph.nodes, loaded.nodes):
        assert (a.name, a.op, [v.name for v in a.inputs]) == (b.name, b.op, [v.name for v in b.inputs])
        assert a.attrs == b.attrs
        assert repr(a.attrs) == repr(b.attrs)  # tuples stay tuples, Syms stay Syms, inf stays a float
        assert [(v.name, v.type) for v in a.outputs] == [(v.name, v.type) for v in b.outputs]
    reshape = next(n for n in loaded.nodes if n.attrs.get("newshape") == (Sym("batch", 4), 16))
    assert isinstance(reshape.attrs["newshape"][0], Sym)
    cast = [n for n in loaded.nodes if n.op == "cast"]
    assert [n.attrs["dtype"] for n in cast] == ["float32", "float32"]


@pytest.mark.parametrize("batch", [1, 3])
def test_loaded_graph_computes_the_same(tmp_path, batch):
    graph = rich_graph()
    ir.save(graph, tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge")
    inputs = _inputs(batch)
    before = ir.execute(graph, *inputs)
    after = ir.execute(loaded, *inputs)
    assert len(before) == len(after) == 5
    for a, b in zip(before, after):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_json_round_trip_without_a_file():
    graph = rich_graph()
    doc, tensors = graph_to_json(graph)
    text = json.dumps(doc)  # plain JSON (inf is written as Infinity, which json reads back)
    again = graph_from_json(json.loads(text), tensors)
    assert str(again) == str(graph)


def test_copy_graph_is_the_json_round_trip_made_directly():
    """copy_graph builds what a graph_to_json / graph_from_json round trip would (the same document, constants
    shared, subgraphs and symbol ranges kept), and the copy shares no node, value or mutable attribute."""
    for graph in (rich_graph(), parent()):
        graph.symbol_ranges = {"batch": (1, 64)}
        copy = copy_graph(graph).verify()
        (doc, tensors), (copied_doc, copied_tensors) = graph_to_json(graph), graph_to_json(copy)
        assert copied_doc == doc and copied_doc == graph_to_json(graph_from_json(doc, tensors))[0]
        assert copied_tensors.keys() == tensors.keys() and all(copied_tensors[k] is tensors[k] for k in tensors)
        assert not {id(n) for n in graph.nodes} & {id(n) for n in copy.nodes}
        assert all(copy.value_named(v.name) is not v for n in graph.nodes for v in n.outputs)
    original = rich_graph()
    cumsum = copy_graph(original).node_named("cumsum")
    cumsum.attrs["kwargs"]["dtype"] = {"dtype": "float16"}  # a dict inside the attributes: the copy's own
    assert original.node_named("cumsum").attrs["kwargs"]["dtype"] == {"dtype": "float32"}


def test_saving_is_deterministic(tmp_path):
    """The runtime caches engines under a content hash: the same graph must give the same bytes."""
    graph = rich_graph()
    ir.save(graph, tmp_path / "a.tforge")
    ir.save(graph, tmp_path / "b.tforge")
    ir.save(ir.load(tmp_path / "a.tforge"), tmp_path / "c.tforge")
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.tforge", "b.tforge", "c.tforge"))
    assert a == b == c


def test_loaded_graph_can_be_extended(tmp_path):
    """A loaded graph knows its names: new nodes and constants get fresh ones."""
    ir.save(rich_graph(), tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge")
    extra = loaded.add_node("nn.relu", [loaded.outputs[0]], name="conv")
    const = loaded.add_constant(torch.zeros(1), name="table")
    assert extra.name != "conv" and extra.output.name not in {"conv", "relu"} | {v.name for v in loaded.inputs}
    assert const.name != "table"
    loaded.set_outputs([*loaded.outputs, extra.output, const])
    loaded.verify()


# -- no pickle --------------------------------------------------------------------------------


def test_file_is_safetensors_with_json_metadata(tmp_path):
    path = tmp_path / "g.tforge"
    ir.save(rich_graph(), path)
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80"), "starts with a pickle protocol marker"
    assert not raw.startswith(b"PK"), "is a zip archive (torch.save format)"
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: u64 header length, then a JSON header
    doc = json.loads(header["__metadata__"]["tensorforge.graph"])
    assert doc["format"] == "tensorforge.ir" and doc["name"] == "rich"
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(rich_graph().constants)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "g.tforge"
    ir.save(rich_graph(), path)

    def refuse(*args, **kwargs):
        raise AssertionError("loading a graph must not unpickle anything")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    assert str(ir.load(path)) == str(rich_graph())


# -- files that are not tensorforge graphs ------------------------------------------------------


def test_plain_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(GraphFormatError, match="a safetensors file, but not a tensorforge graph"):
        ir.load(path)


def test_safetensors_with_foreign_metadata_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(GraphFormatError, match="not a tensorforge graph"):
        ir.load(path)


def test_random_bytes_are_rejected(tmp_path):
    path = tmp_path / "junk.tforge"
    path.write_bytes(b"this is not a graph at all" * 10)
    with pytest.raises(GraphFormatError, match="not a readable tensorforge graph file"):
        ir.load(path)


def test_pickle_file_is_rejected(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(GraphFormatError, match="not a readable tensorforge graph file"):
        ir.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file_is_rejected(tmp_path, keep):
    path = tmp_path / "g.tforge"
    ir.save(rich_graph(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(GraphFormatError, match=str(path)):
        ir.load(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(GraphFormatError, match="missing.tforge"):
        ir.load(tmp_path / "missing.tforge")


def _save_with_doc(path, doc, tensors):
    save_file(tensors, str(path), metadata={"tensorforge.graph": doc if isinstance(doc, str) else json.dumps(doc)})


def test_corrupt_graph_json_is_rejected(tmp_path):
    path = tmp_path / "g.tforge"
    _save_with_doc(path, '{"format": "tensorforge.ir", "version": 1, "nodes": [', {"w": torch.zeros(1)})
    with pytest.raises(GraphFormatError, match="JSON"):
        ir.load(path)


def test_incomplete_graph_json_is_rejected(tmp_path):
    path = tmp_path / "g.tforge"
    _save_with_doc(path, {"format": "tensorforge.ir", "version": 1, "name": "g"}, {"w": torch.zeros(1)})
    with pytest.raises(GraphFormatError, match="inputs"):
        ir.load(path)


def test_future_format_version_is_rejected(tmp_path):
    graph = rich_graph()
    doc, tensors = graph_to_json(graph)
    doc["version"] = 99
    path = tmp_path / "g.tforge"
    _save_with_doc(path, doc, {k: v.contiguous().clone() for k, v in tensors.items()})
    with pytest.raises(GraphFormatError, match="version 99 is not supported"):
        ir.load(path)


def test_missing_constant_is_rejected(tmp_path):
    doc, tensors = graph_to_json(rich_graph())
    tensors = {k: v.contiguous().clone() for k, v in tensors.items() if k != "conv.weight"}
    path = tmp_path / "g.tforge"
    _save_with_doc(path, doc, tensors)
    with pytest.raises(GraphFormatError, match="constant 'conv.weight' is missing"):
        ir.load(path)


def test_dangling_value_is_rejected():
    doc, tensors = graph_to_json(rich_graph())
    doc["nodes"][1]["inputs"] = ["nowhere"]
    with pytest.raises(GraphFormatError, match="node 'reshape' uses undefined value 'nowhere'"):
        graph_from_json(doc, tensors)


def _nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def _deep_subgraphs(doc, depth: int):
    inner = {**doc, "subgraphs": {}}
    for _ in range(depth):
        inner = {**doc, "subgraphs": {"s": inner}}
    return inner


# edits a hostile or damaged file could make, each refused as GraphFormatError (never KeyError, TypeError,
# AttributeError or RecursionError from deep inside)
MALFORMED_DOCS = {
    "attr-nested-deep": (lambda d: d["nodes"][1]["attrs"].update(newshape=_nested(900)), "nested more than 32"),
    "subgraphs-nested-deep": (lambda d: d.update(_deep_subgraphs(d, 20)), "subgraphs nest more than 8 levels"),
    "op-not-a-string": (lambda d: d["nodes"][0].update(op=7), "node 'conv': op must be a JSON str, got 7"),
    "node-not-an-object": (lambda d: d["nodes"].__setitem__(0, ["conv"]), "a node must be a JSON dict"),
    "inputs-not-a-list": (lambda d: d.update(inputs={"x": 1}), "inputs must be a JSON list"),
    "input-name-not-a-string": (lambda d: d["inputs"][0].update(name=["x"]), "a graph input's name must be"),
    "shape-not-a-list": (lambda d: d["inputs"][0]["type"].update(shape=8), "a tensor type is"),
    "outputs-not-names": (lambda d: d.update(outputs=[{"name": "conv"}]), "each of graph 'rich': outputs must be"),
    "attrs-not-an-object": (lambda d: d["nodes"][0].update(attrs=[]), "node 'conv': attrs must be a JSON dict"),
    "subgraphs-not-an-object": (lambda d: d.update(subgraphs=[]), "subgraphs must be a JSON dict"),
    "name-not-a-string": (lambda d: d.update(name=None), "the graph's name must be a JSON str"),
}


@pytest.mark.parametrize("edit, message", MALFORMED_DOCS.values(), ids=MALFORMED_DOCS.keys())
def test_malformed_document_is_a_graph_format_error(edit, message):
    doc, tensors = graph_to_json(rich_graph())
    doc = json.loads(json.dumps(doc))
    edit(doc)
    with pytest.raises(GraphFormatError, match=re.escape(message)):
        graph_from_json(doc, tensors)
