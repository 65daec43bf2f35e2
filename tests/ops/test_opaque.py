"""Opaque nodes: a torch operator the IR has no name for, built by hand as a frontend would build it.

Each row names the ATen operator, its encoded arguments (`{"input": i}` for the node's i-th input) and the
eager computation it must reproduce; the recorded output types come from that eager result, as the
frontend takes them from the exported program.
"""

import pytest
import torch

from helpers import BATCH, assert_close, randn, run_graph
from tensorforge import ir
from tensorforge.ir import Graph, Sym, TensorType
from tensorforge.ir.ops.opaque import encode_output_type
from tensorforge.ir.registry import UnknownOpError

FP32 = torch.float32


def opaque_graph(op, inputs, args, kwargs, output_types, *, dynamic_batch=False):
    graph = Graph("opaque")
    values = []
    for i, t in enumerate(inputs):
        tt = TensorType.of(t)
        if dynamic_batch:
            tt = TensorType(tt.dtype, (BATCH,) + tt.shape[1:])
        values.append(graph.add_input(f"x{i}", tt))
    attrs = {"args": args, "kwargs": kwargs, "output_types": tuple(encode_output_type(t) for t in output_types)}
    node = graph.add_node(op, values, attrs, name="node")
    graph.set_outputs(node.outputs)
    return graph.verify()


def _types(out):
    outs = out if isinstance(out, tuple) else (out,)
    return [TensorType.of(t) for t in outs]


# (id, operator, input maker, args, kwargs, eager computation)
CASES = [
    (
        "cumsum-dim1",
        "torch.aten.cumsum.default",
        lambda: [randn(2, 5)],
        ({"input": 0}, 1),
        {},
        lambda x: torch.cumsum(x, 1),
    ),
    (
        "cumsum-dtype-kwarg",
        "torch.aten.cumsum.default",
        lambda: [torch.arange(6).reshape(2, 3)],
        ({"input": 0}, 0),
        {"dtype": {"dtype": "float64"}},
        lambda x: torch.cumsum(x, 0, dtype=torch.float64),
    ),
    (
        "roll-list-args",
        "torch.aten.roll.default",
        lambda: [randn(3, 4)],
        ({"input": 0}, {"list": [1, -1]}, {"list": [0, 1]}),
        {},
        lambda x: torch.roll(x, shifts=(1, -1), dims=(0, 1)),
    ),
    (
        "topk-two-outputs",
        "torch.aten.topk.default",
        lambda: [randn(3, 6)],
        ({"input": 0}, 2),
        {},
        lambda x: tuple(torch.topk(x, 2)),
    ),
    (
        "cumprod-two-ops-one-graph",
        "torch.aten.cumprod.default",
        lambda: [1 + 0.1 * randn(4)],
        ({"input": 0}, 0),
        {},
        lambda x: torch.cumprod(x, 0),
    ),
    (
        "zeros-no-inputs",
        "torch.aten.zeros.default",
        lambda: [],
        ({"list": [2, 3]},),
        {"dtype": {"dtype": "float32"}, "device": {"device": None}},
        lambda: torch.zeros(2, 3),
    ),
    (
        "contiguous-memory-format",
        "torch.aten.clone.default",
        lambda: [randn(1, 3, 2, 2)],
        ({"input": 0},),
        {"memory_format": {"memory_format": "contiguous_format"}},
        lambda x: x.clone(),
    ),
]


@pytest.mark.parametrize("name, op, make, args, kwargs, eager", CASES, ids=[c[0] for c in CASES])
def test_opaque(name, op, make, args, kwargs, eager):
    inputs = make()
    expected = eager(*[t.clone() for t in inputs])
    graph = opaque_graph(op, inputs, args, kwargs, _types(expected))
    actual = run_graph(graph, inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e)
    assert [n.op for n in graph.opaque_nodes()] == [op]


def _cumsum_graph(dynamic_batch=False):
    x = randn(2, 5)
    return opaque_graph(
        "torch.aten.cumsum.default",
        [x],
        ({"input": 0}, 1),
        {},
        [TensorType("float32", (BATCH if dynamic_batch else 2, 5))],
        dynamic_batch=dynamic_batch,
    )


def test_opaque_node_is_listed_and_summarized():
    graph = Graph("mixed")
    x = graph.add_input("x", TensorType("float32", (2, 5)))
    y = graph.call("nn.relu", x)
    node = graph.add_node(
        "torch.aten.cumsum.default",
        [y],
        {"args": ({"input": 0}, 1), "kwargs": {}, "output_types": (encode_output_type(TensorType("float32", (2, 5))),)},
        name="cumsum",
    )
    graph.set_outputs([graph.call("exp", node.output)])
    graph.verify()
    assert graph.opaque_nodes() == [node]
    assert node.opdef.opaque and not graph.nodes[0].opdef.opaque
    summary = graph.summary()
    assert "opaque ops (1 nodes" in summary
    assert "cumsum: torch.aten.cumsum.default" in summary
    x_val = randn(2, 5)
    (out,) = run_graph(graph, [x_val])
    assert_close(out, torch.exp(torch.cumsum(torch.relu(x_val), 1)))


def test_opaque_node_survives_save_and_load(tmp_path):
    graph = _cumsum_graph()
    ir.save(graph, tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge").verify()
    assert str(loaded) == str(graph)
    assert loaded.nodes[0].attrs == graph.nodes[0].attrs
    assert [n.op for n in loaded.opaque_nodes()] == ["torch.aten.cumsum.default"]
    x = randn(2, 5)
    assert torch.equal(run_graph(loaded, [x])[0], torch.cumsum(x, 1))


def test_opaque_node_with_dynamic_batch():
    graph = _cumsum_graph(dynamic_batch=True)
    assert graph.outputs[0].type.shape == (Sym("batch"), 5)
    for batch in (1, 4):
        x = randn(batch, 5)
        (out,) = run_graph(graph, [x])
        assert_close(out, torch.cumsum(x, 1))


def test_opaque_creation_follows_the_graph_device():
    """An opaque op without inputs must create its result where the graph runs (meta stands in for a GPU)."""
    graph = Graph("device")
    x = graph.add_input("x", TensorType("float32", (2, 3)))
    zeros = graph.add_node(
        "torch.aten.zeros.default",
        [],
        {
            "args": ({"list": [2, 3]},),
            "kwargs": {"dtype": {"dtype": "float32"}, "device": {"device": None}},
            "output_types": (encode_output_type(TensorType("float32", (2, 3))),),
        },
        name="zeros",
    )
    graph.set_outputs([graph.call("add", x, zeros.output)])
    graph.verify()
    (out,) = ir.execute(graph, torch.empty(2, 3, device="meta"))
    assert out.device.type == "meta"


def _opaque_node(graph, op, inputs):
    return graph.add_node(
        op,
        inputs,
        {"args": ({"input": 0},), "kwargs": {}, "output_types": (encode_output_type(TensorType("float32", (2,))),)},
    )


def test_unknown_torch_operator_fails_with_its_name():
    """Op names are checked against the dispatcher when the node is made (or read), not at its first run."""
    graph = Graph("unknown")
    x = graph.add_input("x", TensorType("float32", (2,)))
    with pytest.raises(UnknownOpError, match="no_such_op_xyz"):
        _opaque_node(graph, "torch.aten.no_such_op_xyz.default", [x])


# Names a file could carry to reach code through attribute walking, or registered operators with side effects.
HOSTILE_NAMES = [
    ("dunder-walk", "torch.__class__.__init__.__getattribute__", "dunders"),
    ("dunder-op", "torch.aten.__dict__.default", "dunders"),
    ("dunder-overload", "torch.aten.cumsum.__globals__", "dunders"),
    ("module-attribute", "torch.os.system.default", "no operator"),
    ("ops-attribute", "torch.ops.aten.add", "no operator"),
    ("too-long", "torch.aten.add.Tensor.__call__", "look like"),
    ("dotted-empty", "torch..add.Tensor", "look like"),
    ("writes-a-file", "torch.aten.save.default", "files"),
    ("reads-a-file", "torch.aten.from_file.default", "files"),
    ("in-place", "torch.aten.add_.Tensor", "writes to its arguments"),
    ("out-variant", "torch.aten.add.out", "writes to its arguments"),
    ("no-result", "torch.aten._print.default", "does not return tensors"),
    ("seeds-the-rng", "torch.aten.manual_seed.default", "does not return tensors"),
    ("torchscript-prim", "torch.prim.Print.default", "namespace"),
    ("unknown-overload", "torch.aten.cumsum.evil", "has default"),
]


@pytest.mark.parametrize("op, message", [c[1:] for c in HOSTILE_NAMES], ids=[c[0] for c in HOSTILE_NAMES])
def test_hostile_torch_op_names_are_refused_before_anything_runs(op, message):
    graph = Graph("hostile")
    x = graph.add_input("x", TensorType("float32", (2,)))
    with pytest.raises(UnknownOpError, match=message):
        _opaque_node(graph, op, [x])


HOSTILE_ONNX_NAMES = [
    ("not-an-onnx-op", "onnx.NoSuchOperator", "defines no operator"),
    ("dunder", "onnx.__class__", "look like"),
    ("dunder-domain", "onnx.__builtins__.exec", "look like"),
    ("empty", "onnx.", "look like"),
    ("ml-domain-unknown", "onnx.ai.onnx.ml.NoSuchOperator", "defines no operator"),
]


@pytest.mark.parametrize("op, message", [c[1:] for c in HOSTILE_ONNX_NAMES], ids=[c[0] for c in HOSTILE_ONNX_NAMES])
def test_hostile_onnx_op_names_are_refused(op, message):
    pytest.importorskip("onnx")
    with pytest.raises(UnknownOpError, match=message):
        ir.get_op(op)


def test_onnx_node_must_be_the_op_its_name_says():
    """A graph whose `onnx.Relu` node carries the bytes of another ONNX node is refused when it runs."""
    onnx = pytest.importorskip("onnx")
    from tensorforge.frontends.onnx_opaque import encode_node

    graph = Graph("swapped")
    x = graph.add_input("x", TensorType("float32", (2,)))
    node = graph.add_node(
        "onnx.Relu",
        [x],
        {
            "node": encode_node(onnx.helper.make_node("Neg", ["a"], ["b"])),
            "opset_imports": (("", 17),),
            "ir_version": 8,
            "input_names": ("a",),
            "output_names": ("b",),
            "output_types": (encode_output_type(TensorType("float32", (2,))),),
        },
    )
    graph.set_outputs(node.outputs)
    with pytest.raises(ValueError, match="inconsistent"):
        ir.execute(graph, torch.ones(2))


def test_output_types_read_size_expressions_in_every_spelling():
    """A dimension of an output type may be an int, (symbol, scale), a SymExpr, or SymExpr's JSON form (a name, or
    {"+": ...}) as a writer that never built a SymExpr spells it; the node types and runs at several sizes."""
    from tensorforge.ir.ops.opaque import decode_output_type
    from tensorforge.ir.serialize import graph_from_json, graph_to_json

    seq = ir.SymExpr.symbol("seq")
    decoded = decode_output_type(("float32", (("batch", 1), "seq", {"+": ["seq", -1]}, seq - 1, 3)))
    assert decoded.shape == (Sym("batch"), seq, seq - 1, seq - 1, 3)
    with pytest.raises(ValueError, match="not a size expression"):
        decode_output_type(("float32", ({"sqrt": ["seq"]},)))

    graph = Graph("opaque_expr")
    x = graph.add_input("x", TensorType("float32", (Sym("batch"), seq)))
    sliced = graph.call("strided_slice", x, begin=(1,), end=(2**63 - 1,), axes=(1,))
    attrs = {"args": ({"input": 0}, 1), "kwargs": {}, "output_types": (("float32", ("batch", {"+": ["seq", -1]})),)}
    node = graph.add_node("torch.aten.cumsum.default", [sliced], attrs, name="node")
    assert node.outputs[0].type.shape == (Sym("batch"), seq - 1)
    graph.set_outputs(node.outputs)
    graph = graph_from_json(*graph_to_json(graph.verify()))
    assert graph.outputs[0].type.shape == (Sym("batch"), seq - 1)
    for batch, n in ((2, 5), (3, 8), (1, 13)):
        data = randn(batch, n)
        (got,) = ir.execute(graph, data)
        assert_close(got, torch.cumsum(data[:, 1:], 1))
