"""The graph editing API: exact and fresh names, renames, insertion before/after, erasure, replace_all_uses, set_order,
the def-use index kept current through every edit (against a recount from scratch), rename_output, and the output
renaming of both frontends (a tensor returned twice, an input returned as an output) against eager / onnxruntime."""

from __future__ import annotations

import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from tensorforge import ir
from tensorforge.frontends import from_onnx, from_torch
from tensorforge.ir import Graph, TensorType, Value

F32 = "float32"
T = TensorType(F32, (2, 3))


def chain() -> tuple[Graph, dict[str, Value]]:
    """x -> a = relu(x) -> b = exp(a) -> c = add(b, a) -> output c, with constant w unused."""
    g = Graph("g")
    x = g.add_input("x", T)
    w = g.add_constant(torch.ones(2, 3), "w")
    a = g.call("nn.relu", x, name="a")
    b = g.call("exp", a, name="b")
    c = g.call("add", b, a, name="c")
    g.set_outputs([c])
    return g, {"x": x, "w": w, "a": a, "b": b, "c": c}


def recount(graph: Graph) -> tuple[dict, dict]:
    """Who reads what, from scratch: per value, (reader, slot count) pairs in node order; per value, output count."""
    readers: dict[Value, dict] = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v, {})
            readers[v][node] = readers[v].get(node, 0) + 1
    returned: dict[Value, int] = {}
    for v in graph.outputs:
        returned[v] = returned.get(v, 0) + 1
    return readers, returned


def assert_index_current(graph: Graph) -> None:
    """Every query of the def-use index agrees with a recount, for every value of the graph."""
    readers, returned = recount(graph)
    values = [*graph.inputs, *graph.constants.values(), *(v for n in graph.nodes for v in n.outputs)]
    for v in values:
        expected = readers.get(v, {})
        assert graph.users_of(v) == list(expected), v
        assert graph.use_count(v) == sum(expected.values()) + returned.get(v, 0), v
        assert graph.is_output(v) == (v in returned), v
        only = (
            next(iter(expected)) if len(expected) == 1 and sum(expected.values()) == 1 and v not in returned else None
        )
        assert graph.sole_user(v) is only, v
    assert {v: users for v, users in graph.users().items() if users} == {
        v: [n for n in r for _ in range(r[n])] for v, r in readers.items()
    }
    assert graph.index_problems() == []
    graph.verify()


# -- names ---------------------------------------------------------------------------------------

CLASHES = [
    ("input-vs-input", lambda g, v: g.add_input("x", T), "already has a value named 'x': input %x"),
    (
        "constant-vs-constant",
        lambda g, v: g.add_constant(torch.zeros(1), "w", exact=True),
        "already has a value named 'w': constant @w",
    ),
    (
        "constant-vs-node-output",
        lambda g, v: g.add_constant(torch.zeros(1), "a", exact=True),
        "already has a value named 'a': the output %a of node 'a' (nn.relu)",
    ),
    (
        "node-name",
        lambda g, v: g.add_node("nn.relu", [v["x"]], name="b", output_names=["fresh"], exact=True),
        "already has a node named 'b' (exp)",
    ),
    (
        "node-output-name",
        lambda g, v: g.add_node("nn.relu", [v["x"]], name="new", output_names=["x"], exact=True),
        "already has a value named 'x': input %x",
    ),
    (
        "default-output-name",
        lambda g, v: (
            g.add_node("nn.relu", [v["x"]], name="nope", output_names=None, exact=True)
            and g.add_node("nn.relu", [v["x"]], name="nope2", output_names=["nope"], exact=True)
        ),
        "already has a value named 'nope': the output %nope of node 'nope' (nn.relu)",
    ),
    (
        "create-node",
        lambda g, v: g.create_node("a", "nn.relu", [v["x"]], {}, [("a2", T)]),
        "already has a node named 'a' (nn.relu)",
    ),
    (
        "output-names-repeat",
        lambda g, v: g.add_node(
            "split", [v["x"]], {"indices_or_sections": 3, "axis": 1}, name="s", output_names=["p", "q", "p"], exact=True
        ),
        "value name 'p' is given twice",
    ),
    (
        "rename-value",
        lambda g, v: g.rename_value(v["a"], "b"),
        "already has a value named 'b': the output %b of node 'b' (exp)",
    ),
    ("rename-node", lambda g, v: g.rename_node(v["a"].producer, "c"), "already has a node named 'c' (add)"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in CLASHES], ids=[c[0] for c in CLASHES])
def test_an_exact_name_that_is_taken_is_an_error_naming_what_holds_it(make, message):
    g, v = chain()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(g, v)
    assert_index_current(g)


def test_a_refused_edit_leaves_the_graph_as_it_was():
    g, v = chain()
    nodes, names = g.nodes, [x.name for n in g.nodes for x in n.outputs]
    with pytest.raises(ValueError, match="already has a value named 'a'"):
        g.add_node("nn.relu", [v["x"]], name="new", output_names=["a"], exact=True)
    with pytest.raises(ValueError, match="cannot go there: it would read %c before node 'c'"):
        g.add_node("nn.relu", [v["c"]], before=v["a"].producer)  # reads c before it is made
    assert g.nodes == nodes and [x.name for n in g.nodes for x in n.outputs] == names
    g.add_node("nn.relu", [v["x"]], name="new", output_names=["new"], exact=True)  # "new" was never taken
    assert_index_current(g)


def test_fresh_names_are_free_variants_and_reserve_nothing():
    g, v = chain()
    assert g.fresh_name("zzz") == "zzz" == g.fresh_name("zzz")  # free, and still free: nothing was reserved
    taken = g.fresh_name("a")
    assert taken.startswith("a_") and taken not in {x.name for x in v.values()}
    assert g.fresh_name("zzz", avoid={"zzz"}) != "zzz"
    assert g.fresh_node_name("c") != "c" and g.fresh_node_name("x") == "x"  # node and value names apart
    node = g.add_node("nn.relu", [v["a"]], name="a")  # not exact: fresh variants for the node and its output
    assert node.name != "a" and node.output.name != "a" and node.output.name == node.name
    assert_index_current(g)


def test_add_node_names_and_inference():
    g, v = chain()
    parts = g.add_node("split", [v["x"]], {"indices_or_sections": 3, "axis": 1}, name="s")
    assert [p.name for p in parts.outputs] == ["s.0", "s.1", "s.2"] and parts.outputs[0].type.shape == (2, 1)
    named = g.add_node(
        "split", [v["x"]], {"indices_or_sections": 3, "axis": 1}, name="t", output_names=["p", "q", "r"], exact=True
    )
    assert named.name == "t" and [p.name for p in named.outputs] == ["p", "q", "r"]
    with pytest.raises(ValueError, match="has 3 outputs, 2 names were given"):
        g.add_node("split", [v["x"]], {"indices_or_sections": 3, "axis": 1}, output_names=["m", "n"])
    raw = g.create_node("raw", "nn.relu", [v["x"]], {"extra": 1}, [("raw_out", TensorType(F32, (9,)))])
    assert raw.attrs == {"extra": 1} and raw.output.type == TensorType(F32, (9,))  # as given: verify judges it
    assert g.node_named("raw") is raw and g.value_named("raw_out") is raw.output
    with pytest.raises(KeyError, match="has no node named 'nowhere'"):
        g.node_named("nowhere")
    with pytest.raises(KeyError, match="has no value named 'nowhere'"):
        g.value_named("nowhere")


def test_renames_keep_the_lookups_and_the_constants_current():
    g, v = chain()
    g.rename_value(v["w"], "weight")
    assert "weight" in g.constants and "w" not in g.constants and g.constants["weight"] is v["w"]
    g.rename_value(v["a"], "relu_out")
    g.rename_node(v["a"].producer, "relu")
    assert g.value_named("relu_out") is v["a"] and g.node_named("relu") is v["a"].producer
    with pytest.raises(KeyError):
        g.value_named("a")
    assert g.rename_value(v["b"], "b") is v["b"]  # its own name: nothing to do
    g.add_constant(torch.zeros(1), "w", exact=True)  # the old names are free again
    g.add_node("nn.relu", [v["x"]], name="a", exact=True)
    assert_index_current(g)
    with pytest.raises(ValueError, match="not a value of this graph"):
        g.rename_value(Value("stray", T), "s")
    with pytest.raises(ValueError, match="is not in this graph"):
        chain()[0].rename_node(v["a"].producer, "z")


def test_structure_is_read_only_from_outside():
    g, v = chain()
    assert isinstance(g.nodes, tuple) and isinstance(g.inputs, tuple) and isinstance(g.outputs, tuple)
    assert isinstance(v["c"].producer.inputs, tuple) and isinstance(v["c"].producer.outputs, tuple)
    with pytest.raises(AttributeError):
        g.nodes = ()
    with pytest.raises(AttributeError):
        v["a"].name = "other"
    with pytest.raises(AttributeError):
        v["a"].producer.name = "other"
    with pytest.raises(TypeError):
        g.constants["w2"] = v["w"]


# -- placing, rewiring, erasing ------------------------------------------------------------------


def test_insert_before_and_after_keeps_a_topological_order():
    g, v = chain()
    a, b, c = (v[k].producer for k in "abc")
    g.add_node("nn.relu", [v["x"]], name="first", before=a)
    mid = g.add_node("nn.relu", [v["a"]], name="mid", after=a)
    last = g.add_node("nn.relu", [v["c"]], name="last")
    assert [n.name for n in g.nodes] == ["first", "a", "mid", "b", "c", "last"]
    with pytest.raises(
        ValueError,
        match=r"node 'late' \(exp\) cannot go there: it would read %b before node 'b' "
        r"\(exp\) makes it",
    ):
        g.add_node("exp", [v["b"]], name="late", before=b)
    with pytest.raises(ValueError, match="before one node or after one, not both"):
        g.add_node("exp", [v["x"]], before=b, after=a)
    with pytest.raises(ValueError, match="is not in this graph"):
        g.add_node("exp", [v["x"]], before=chain()[1]["a"].producer)
    with pytest.raises(ValueError, match="cannot read %stray: not a value of this graph"):
        g.add_node("exp", [Value("stray", T)])
    for _ in range(40):  # many insertions at one spot: the order keys are spread out again when they run out
        g.add_node("nn.relu", [v["a"]], after=a)
    assert [n.name for n in g.nodes][:2] == ["first", "a"] and g.nodes[-2:] == (c, last) and mid in g.nodes
    assert_index_current(g)


def test_node_inputs_are_rewired_through_the_graph():
    g, v = chain()
    c = v["c"].producer
    c.inputs = [v["a"], v["x"]]
    assert g.users_of(v["b"]) == [] and g.users_of(v["x"]) == [v["a"].producer, c]
    assert c.replace_input(v["a"], v["x"]) == 1 and c.inputs == (v["x"], v["x"])
    assert g.use_count(v["x"]) == 3 and g.sole_user(v["x"]) is None
    c.replace_input_at(1, v["w"])
    assert c.inputs == (v["x"], v["w"])
    with pytest.raises(ValueError, match=r"node 'a' \(nn\.relu\) cannot read it: it would read %c before node 'c'"):
        v["a"].producer.inputs = [v["c"]]
    with pytest.raises(ValueError, match="cannot read %stray: not a value of this graph"):
        c.inputs = [Value("stray", T), v["x"]]
    assert_index_current(g)


def test_replace_all_uses_moves_node_inputs_and_graph_outputs():
    g, v = chain()
    g.set_outputs([v["a"], v["c"], v["a"]])
    relu2 = g.add_node("nn.relu", [v["x"]], name="relu2", before=v["b"].producer)
    assert g.replace_all_uses(v["a"], relu2.output, skip=[v["c"].producer]) == 1 + 2  # exp's slot, two outputs
    assert v["b"].producer.inputs == (relu2.output,) and v["c"].producer.inputs == (v["b"], v["a"])
    assert g.outputs == (relu2.output, v["c"], relu2.output)
    assert g.replace_all_uses(v["a"], v["a"]) == 0
    with pytest.raises(ValueError, match=r"node 'b' \(exp\) cannot read it instead of %relu2: it would read %c"):
        g.replace_all_uses(relu2.output, v["c"])
    assert_index_current(g)


def test_erase_refuses_while_outputs_are_used_and_frees_the_names():
    g, v = chain()
    a, b, c = (v[k].producer for k in "abc")
    with pytest.raises(
        ValueError,
        match=r"cannot erase node 'a' \(nn\.relu\): its output %a is still read by node "
        r"'b' \(exp\)",
    ):
        g.erase_node(a)
    with pytest.raises(ValueError, match=r"cannot erase node 'c' \(add\): its output %c is a graph output"):
        g.erase_node(c)
    with pytest.raises(ValueError, match="still read by node 'c'"):
        g.erase_nodes([a, b])
    g.set_outputs([v["x"]])
    g.erase_nodes([c, a, b])  # in any order: they read only each other
    assert g.nodes == () and a.graph is None
    with pytest.raises(ValueError, match="is in no graph"):
        a.inputs = [v["x"]]
    with pytest.raises(ValueError, match="is not in this graph"):
        g.erase_node(a)
    g.add_node("nn.relu", [v["x"]], name="a", output_names=["b"], exact=True)  # the names are free again
    assert_index_current(g)


def test_constants_are_erased_only_when_unused():
    g, v = chain()
    used = g.add_constant(torch.ones(2, 3), "used")
    g.add_node("add", [v["x"], used], name="reads_it")
    with pytest.raises(ValueError, match=r"cannot erase constant @used: node 'reads_it' \(add\) reads it"):
        g.erase_constant(used)
    with pytest.raises(ValueError, match="%a is not a constant of this graph"):
        g.erase_constant(v["a"])
    assert g.erase_unused_constants() == 1 and set(g.constants) == {"used"}
    assert_index_current(g)


def test_set_order_takes_a_topological_permutation_only():
    g, v = chain()
    side = g.add_node("nn.relu", [v["x"]], name="side")
    a, b, c = (v[k].producer for k in "abc")
    g.set_order([side, a, b, c])
    assert g.nodes == (side, a, b, c)
    with pytest.raises(ValueError, match=r"node 'b' \(exp\) reads %a before node 'a' \(nn\.relu\) makes it"):
        g.set_order([side, b, a, c])
    with pytest.raises(ValueError, match="takes each of the graph's 4 nodes once"):
        g.set_order([side, a, b])
    with pytest.raises(ValueError, match="takes each of the graph's 4 nodes once"):
        g.set_order([side, a, a, c])
    assert g.nodes == (side, a, b, c)
    g.add_node("nn.relu", [v["x"]], name="after_reorder", before=a)  # order keys are consistent after set_order
    assert [n.name for n in g.nodes] == ["side", "after_reorder", "a", "b", "c"]
    assert_index_current(g)


def test_set_outputs_refuses_values_of_other_graphs():
    g, v = chain()
    with pytest.raises(ValueError, match="output %c is not a value of this graph"):
        g.set_outputs([chain()[1]["c"]])
    g.outputs = [v["b"], v["b"]]
    assert g.use_count(v["b"]) == 3 and g.outputs == (v["b"], v["b"])
    assert_index_current(g)


def test_defined_before():
    g, v = chain()
    a, b = v["a"].producer, v["b"].producer
    assert g.defined_before(v["x"], a) and g.defined_before(v["w"], a) and g.defined_before(v["a"], b)
    assert not g.defined_before(v["b"], a) and not g.defined_before(v["a"], a)
    assert not g.defined_before(Value("stray", T), b)


@pytest.mark.parametrize("seed", range(12))
def test_the_index_stays_current_through_random_edit_sequences(seed):
    """Random valid edits of every kind; after each one every index query agrees with a recount from scratch."""
    rng = random.Random(seed)
    g, v = chain()

    def values_before(node):
        return [
            x
            for x in (*g.inputs, *g.constants.values(), *(o for n in g.nodes for o in n.outputs))
            if g.defined_before(x, node)
        ]

    for step in range(60):
        nodes = list(g.nodes)
        kind = rng.choice(["add", "insert", "rewire", "replace", "erase", "outputs", "rename", "constant", "order"])
        if kind == "add" or not nodes:
            pool = [*g.inputs, *g.constants.values(), *(o for n in nodes for o in n.outputs)]
            g.add_node("add", [rng.choice(pool), rng.choice(pool)])
        elif kind == "insert":
            anchor = rng.choice(nodes)
            pool = values_before(anchor)
            g.add_node("multiply", [rng.choice(pool), rng.choice(pool)], before=anchor)
        elif kind == "rewire":
            node = rng.choice(nodes)
            pool = values_before(node)
            if node.op in ("add", "multiply"):
                node.inputs = [rng.choice(pool), rng.choice(pool)]
            else:
                node.replace_input_at(0, rng.choice(pool))
        elif kind == "replace":
            old = rng.choice([o for n in nodes for o in n.outputs])
            later = [n for n in nodes if g.defined_before(old, n)]
            candidates = [x for x in (*g.inputs, *g.constants.values()) if x.type == old.type]
            if later:
                candidates += [o for o in values_before(later[0]) if o.type == old.type and o is not old]
            g.replace_all_uses(
                old, rng.choice(candidates), skip=rng.sample(later, k=min(len(later), rng.randint(0, 1)))
            )
        elif kind == "erase":
            dead = [n for n in nodes if all(g.use_count(o) == 0 for o in n.outputs)]
            if dead:
                g.erase_nodes(rng.sample(dead, k=rng.randint(1, len(dead))))
        elif kind == "outputs":
            pool = [*g.inputs, *(o for n in nodes for o in n.outputs)]
            g.set_outputs(rng.choices(pool, k=rng.randint(1, 3)))
        elif kind == "rename":
            target = rng.choice([o for n in nodes for o in n.outputs] + list(g.constants.values()))
            g.rename_value(target, g.fresh_name(f"r{step}"))
            g.rename_node(rng.choice(nodes), g.fresh_node_name(f"n{step}"))
        elif kind == "constant":
            g.add_constant(torch.randn(2, 3), f"k{step}")
            g.erase_unused_constants()
        elif kind == "order":  # move one node to the earliest position its inputs allow
            node = rng.choice(nodes)
            rest = [n for n in nodes if n is not node]
            at = max((rest.index(x.producer) + 1 for x in node.inputs if x.producer is not None), default=0)
            g.set_order(rest[:at] + [node] + rest[at:])
        if not g.outputs:
            g.set_outputs([g.inputs[0]])
        assert_index_current(g)
    x = torch.randn(2, 3)
    ir.execute(g, x)  # the edited graph still runs


# -- rename_output -------------------------------------------------------------------------------


def test_rename_output_cases():
    g, v = chain()
    g.set_outputs([v["c"], v["c"], v["x"], v["w"], v["b"]])
    assert g.rename_output(0, "first") is v["c"] and v["c"].name == "first"  # renamed in place
    second = g.rename_output(1, "second")  # the same tensor again: a copy keeps its own name
    assert second is not v["c"] and second.producer.op == "copy" and second.producer.inputs == (v["c"],)
    returned_input = g.rename_output(2, "x_out")  # an input keeps its name: a copy
    assert returned_input.producer.op == "copy" and v["x"].name == "x"
    assert g.rename_output(3, "w_out").producer.op == "copy" and v["w"].name == "w"
    assert g.rename_output(4, "a").name == "a" and v["a"].name != "a"  # an intermediate value steps aside
    assert [o.name for o in g.outputs] == ["first", "second", "x_out", "w_out", "a"]
    assert g.rename_output(0, "first") is g.outputs[0]  # already so named: nothing changes
    clash = g.rename_output(1, "x")  # held by an input: the output takes a fresh variant
    assert clash.name != "x" and clash.name.startswith("x") and v["x"].name == "x"
    assert_index_current(g)
    x = torch.randn(2, 3)
    a = torch.relu(x)
    c = torch.exp(a) + a
    for got, want in zip(ir.execute(g, x), [c, c, x, torch.ones(2, 3), torch.exp(a)]):
        assert torch.equal(got, want)


class ReturnsTwice(torch.nn.Module):
    def forward(self, x):
        y = torch.relu(x) * 2
        return y, y


class ReturnsItsInput(torch.nn.Module):
    def forward(self, x):
        return x, torch.sigmoid(x), x


@pytest.mark.parametrize(
    "model, names",
    [(ReturnsTwice(), ["first", "second"]), (ReturnsItsInput(), ["same", "sig", "again"])],
    ids=["value-returned-twice", "input-returned"],
)
def test_torch_output_names_for_a_tensor_returned_twice(model, names):
    x = torch.randn(3, 5)
    graph = from_torch(model, (x,), output_names=names)
    assert [v.name for v in graph.outputs] == names
    assert len({id(v) for v in graph.outputs}) == len(names), "each position has a value of its own"
    assert_index_current(graph)
    for got, want in zip(ir.execute(graph, x), model(x)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_torch_output_name_held_by_an_intermediate_value():
    class TwoRelus(torch.nn.Module):
        def forward(self, x):
            return torch.relu(torch.relu(x) - 1)

    x = torch.randn(2, 4)
    graph = from_torch(TwoRelus(), (x,), output_names=["relu"])  # "relu" names the first relu's output in FX
    assert [v.name for v in graph.outputs] == ["relu"]
    torch.testing.assert_close(ir.execute(graph, x)[0], TwoRelus()(x))


def _onnx_model(outputs: list[str]) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"), helper.make_node("Neg", ["y"], ["z"], name="neg")]
    graph = helper.make_graph(
        nodes,
        "twice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", 4]) for o in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(
    "outputs",
    [["y", "y"], ["z", "y", "z"], ["x", "y"], ["y", "x", "x"]],
    ids=["listed-twice", "listed-twice-apart", "input-as-output", "input-twice"],
)
def test_onnx_outputs_listed_twice_or_graph_inputs(outputs):
    model = _onnx_model(outputs)
    graph = from_onnx(model)
    assert len(graph.outputs) == len(outputs)
    assert len({id(v) for v in graph.outputs}) == len(outputs), "each position has a value of its own"
    first_seen = [o for i, o in enumerate(outputs) if o not in outputs[:i] and o != "x"]
    assert [v.name for v in graph.outputs if v.name in outputs] == first_seen, "first listings keep their names"
    assert [v.name for v in graph.inputs] == ["x"]
    assert_index_current(graph)
    x = torch.randn(3, 4)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.numpy()})
    for got, want in zip(ir.execute(graph, x), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_erase_unread_nodes_keeps_what_outputs_and_kept_nodes_read():
    """Nodes no output depends on go (chains of them too), with the constants only they read; a node `keep`
    keeps stays, and so does what it reads."""
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float32", (2, 3)))
    unused_weight = graph.add_constant(torch.randn(3), name="unused_weight")
    dead_chain = graph.call("exp", graph.call("add", x, unused_weight))
    kept_read = graph.call("negative", x)
    kept = graph.add_node("sigmoid", [kept_read], name="kept").output
    graph.set_outputs([graph.call("nn.relu", x)])
    assert dead_chain.producer is not None and kept.producer is not None
    assert graph.erase_unread_nodes(keep=lambda node: node.name == "kept") == 2
    assert [n.op for n in graph.nodes] == ["negative", "sigmoid", "nn.relu"]
    assert "unused_weight" not in graph.constants
    assert graph.erase_unread_nodes() == 2 and [n.op for n in graph.nodes] == ["nn.relu"]
    graph.verify()
