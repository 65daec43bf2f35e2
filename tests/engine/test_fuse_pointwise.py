"""fuse_pointwise and engine.pointwise: grouping on hand-built graphs (convexity, one domain, multi-output,
broadcasting, literals), the program's reference against the unfused graph in fp32/fp16/bf16, random graphs,
serialization, and a small BERT built into a plan that matches eager."""

from __future__ import annotations

import json
import random

import pytest
import torch

from engine_helpers import BATCH, check_pass, graph_with_input, ops, relative_error
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig, Plan
from tensorforge.engine.passes import PassContext, fuse_pointwise, run_passes
from tensorforge.ir import Graph, TensorType, VerificationError
from tensorforge.ir.execute import bind_symbols

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fused_nodes(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op == "engine.pointwise"]


def _chain(dtype="float32"):
    """bias_add -> gelu -> * 0.5 -> relu, with sigmoid(gelu) a second output: one group, two outputs."""
    g, x = graph_with_input((8, 16), dtype)
    td = TensorType(dtype, ()).torch_dtype
    y = g.call("nn.gelu", g.call("nn.bias_add", x, g.add_constant(torch.randn(16, dtype=td), "b"), axis=-1))
    z = g.call("nn.relu", g.call("multiply", y, g.add_constant(torch.tensor(0.5, dtype=td), "half")), name="out")
    g.set_outputs([z, g.call("sigmoid", y, name="side")])
    return g, [torch.randn(2, 8, 16, dtype=td)], 1


def _diamond_through_conv():
    """relu feeds a conv and an add the conv also feeds: relu and add in one group would need themselves."""
    g, x = graph_with_input((4, 6, 6))
    a = g.call("nn.relu", x)
    s = g.call("sigmoid", a)
    c = g.call("nn.conv2d", a, g.add_constant(torch.randn(4, 4, 3, 3), "w"), padding=(1, 1))
    g.set_outputs([g.call("tanh", g.call("add", s, c))])
    return g, [torch.randn(2, 4, 6, 6)], 2


def _broadcast_inputs():
    """per-channel vector, a 0-d constant (a literal), a bias on axis 1 and an input smaller than the domain."""
    g, x = graph_with_input((4, 8))
    gate = g.add_input("gate", TensorType("float32", (BATCH, 1, 8)))
    y = g.call("nn.bias_add", x, g.add_constant(torch.randn(4), "b"), axis=1)
    y = g.call("multiply", y, g.add_constant(torch.randn(4, 1), "scale"))
    y = g.call("add", y, g.add_constant(torch.tensor(3.0), "three"))
    m = g.call("sigmoid", gate, name="mask")  # [batch, 1, 8]: an output smaller than the domain
    g.set_outputs([g.call("multiply", y, m), m])
    return g, [torch.randn(2, 4, 8), torch.randn(2, 1, 8)], 1


def _no_common_domain():
    """relu(q) feeds [4] and [5] results: one group cannot write both, the second add stays alone."""
    g = Graph("g")
    q, a, b = (g.add_input(n, TensorType("float32", s)) for n, s in (("q", (1,)), ("a", (4,)), ("b", (5,))))
    r = g.call("nn.relu", q)
    g.set_outputs([g.call("add", r, a), g.call("add", r, b)])
    return g, [torch.randn(1), torch.randn(4), torch.randn(5)], 1


def _computed_bias():
    """a bias computed inside would sit on another axis than the values around it: it stays outside."""
    g, x = graph_with_input((3, 5))
    bias = g.call("sigmoid", g.add_input("v", TensorType("float32", (3,))))
    g.set_outputs([g.call("nn.relu", g.call("nn.bias_add", x, bias, axis=1))])
    return g, [torch.randn(2, 3, 5), torch.randn(3)], 1


def _late_input():
    """the group's second node reads a value made after its first: the fused node moves after it."""
    g, x = graph_with_input((8,))
    a = g.call("nn.relu", x)
    u = g.call("nn.softmax", g.add_input("y", TensorType("float32", (BATCH, 8))))
    g.set_outputs([g.call("add", a, u), g.call("nn.softmax", a)])
    return g, [torch.randn(2, 8), torch.randn(2, 8)], 1


def _mask_arithmetic():
    """BERT's extended mask: (1 - cast(mask)) * min, added to scores, with int and bool values on the way."""
    g, x = graph_with_input((2, 4, 4))
    mask = g.add_input("mask", TensorType("int64", (BATCH, 1, 1, 4)))
    keep = g.call("cast", g.call("greater", mask, g.add_constant(torch.tensor(0), "zero")), dtype="float32")
    bias = g.call(
        "multiply",
        g.call("subtract", g.add_constant(torch.tensor(1.0), "one"), keep),
        g.add_constant(torch.tensor(torch.finfo(torch.float32).min), "min"),
    )
    scores = g.call("divide", x, g.add_constant(torch.tensor(8.0), "scale"))
    g.set_outputs([g.call("nn.softmax", g.call("add", scores, bias))])
    return g, [torch.randn(3, 2, 4, 4), torch.randint(0, 2, (3, 1, 1, 4))], 1


def _dead_and_single():
    """a node nothing reads is left to dead_code; a lone elementwise op is not worth a fused layer."""
    g, x = graph_with_input((8,))
    g.call("exp", x, name="unused")
    g.set_outputs([g.call("nn.softmax", g.call("tanh", x))])
    return g, [torch.randn(2, 8)], 0


CASES = [
    pytest.param(_chain, id="chain-multi-output"),
    pytest.param(_diamond_through_conv, id="diamond-through-conv"),
    pytest.param(_broadcast_inputs, id="broadcast-inputs"),
    pytest.param(_no_common_domain, id="no-common-domain"),
    pytest.param(_computed_bias, id="computed-bias-stays-out"),
    pytest.param(_late_input, id="reordered-after-late-input"),
    pytest.param(_mask_arithmetic, id="mask-arithmetic"),
    pytest.param(_dead_and_single, id="dead-and-single"),
]


@pytest.mark.parametrize("make", CASES)
def test_fuse_pointwise_cases(make):
    graph, inputs, count = make()
    out = check_pass(fuse_pointwise, graph, inputs, count=count)
    assert len(fused_nodes(out)) == count
    assert [v.name for v in out.outputs] == [v.name for v in graph.outputs], "fused values keep their names"
    for node in fused_nodes(out):
        assert len([i for i in node.attrs["program"] if i[0] not in ("load", "const")]) >= 2


def test_chain_program_and_outputs():
    graph, inputs, _ = _chain()
    out = check_pass(fuse_pointwise, graph, inputs, count=1)
    (node,) = out.nodes
    program = node.attrs["program"]
    assert [i[0] for i in program] == [
        "load",
        "load",
        "nn.bias_add",
        "nn.gelu",
        "const",
        "multiply",
        "nn.relu",
        "sigmoid",
    ]
    assert program[4] == ("const", 0.5, "float32", ()), "a 1-element constant becomes a literal"
    assert [v.name for v in node.outputs] == ["out", "side"] and node.attrs["outputs"] == (6, 7)
    assert [v.name for v in node.inputs] == ["x", "b"]


def test_diamond_keeps_the_conv_between_two_groups():
    graph, inputs, _ = _diamond_through_conv()
    out = check_pass(fuse_pointwise, graph, inputs, count=2)
    assert ops(out) == ["engine.pointwise", "nn.conv2d", "engine.pointwise"]
    first = out.nodes[0]
    assert [v.name for v in first.outputs] == ["relu", "sigmoid"], "relu is read by the conv: an output too"


def test_no_common_domain_leaves_the_second_add():
    graph, inputs, _ = _no_common_domain()
    out = check_pass(fuse_pointwise, graph, inputs, count=1)
    assert sorted(ops(out)) == ["add", "engine.pointwise"]


def test_computed_bias_stays_outside():
    graph, inputs, _ = _computed_bias()
    out = check_pass(fuse_pointwise, graph, inputs, count=1)
    assert ops(out) == ["sigmoid", "engine.pointwise"]


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_reduced_precision_programs_match_the_unfused_graph(dtype):
    graph, inputs, _ = _chain({"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype])
    out = check_pass(fuse_pointwise, graph, inputs, count=1)
    for a, e in zip(ir.execute(out, *inputs), ir.execute(graph, *inputs)):
        assert torch.equal(a, e), "the reference interprets the same ops: bit for bit"


def test_float64_and_engine_layers_are_left_alone():
    g, x = graph_with_input((6,), "float64")
    g.set_outputs([g.call("nn.relu", g.call("exp", x))])
    check_pass(fuse_pointwise, g, [torch.randn(2, 6, dtype=torch.float64)], count=0)
    g, x = graph_with_input((6,))
    h = g.call(
        "nn.bias_add",
        g.call("nn.dense", x, g.add_constant(torch.randn(5, 6), "w")),
        g.add_constant(torch.randn(5), "b"),
        axis=-1,
    )
    g.set_outputs([g.call("multiply", g.call("nn.relu", h), g.add_input("s", TensorType("float32", (BATCH, 5))))])
    ctx = PassContext()
    out = run_passes(g, ctx, verify_each=True)
    assert ops(out) == ["engine.dense", "multiply"], "the epilogue went to the dense; one op is left"
    assert ctx.counters["fuse_bias_activation"] == 1 and ctx.counters["fuse_pointwise"] == 0


def test_malformed_programs_fail_verification_with_the_reason():
    g, x = graph_with_input((4,))
    g.set_outputs([g.call("engine.pointwise", x, program=(("load", 0), ("nn.relu", (0,), ())), outputs=(1,))])
    g.verify()
    for program, outputs, message in (
        ((("load", 1), ("nn.relu", (0,), ())), (1,), "a load names one of the 1 inputs"),
        ((("load", 0), ("nn.softmax", (0,), ())), (1,), "not a load, a const, or one of the pointwise ops"),
        ((("load", 0), ("nn.relu", (1,), ())), (1,), "arguments must be earlier SSA values"),
        ((("load", 0), ("nn.relu", (0,), ())), (2,), "must name SSA values of the program"),
    ):
        g.nodes[0].attrs = {"program": program, "outputs": outputs}
        with pytest.raises(VerificationError, match=message):
            g.verify()


def test_fused_graphs_serialize_and_plans_round_trip(tmp_path):
    graph, inputs, _ = _broadcast_inputs()
    out = fuse_pointwise(graph, PassContext())
    doc, _ = ir.graph_to_json(out)
    json.loads(json.dumps(doc))  # the program is plain JSON
    ir.save(out, tmp_path / "g.tforge")
    again = ir.load(tmp_path / "g.tforge")
    assert again.nodes[0].attrs == out.nodes[0].attrs
    plan = Builder(BuilderConfig()).build(graph, max_batch=2)
    assert plan.counters["fuse_pointwise"] == 1 and "engine.pointwise" in [layer.op for layer in plan.layers]
    loaded = Plan.from_bytes(plan.to_bytes())
    for a, b in zip(loaded.run(*inputs), ir.execute(graph, *inputs)):
        torch.testing.assert_close(a, b)


def _random_graph(rng: random.Random):
    """Elementwise ops mixed with softmax barriers, some inputs broadcast: convexity gets tested for real."""
    g, x = graph_with_input((6,))
    values = [x, g.add_input("v", TensorType("float32", (6,))), g.add_constant(torch.randn(1, 6), "row")]
    for _ in range(rng.randint(4, 24)):
        kind = rng.random()
        if kind < 0.25:
            values.append(g.call("nn.softmax", rng.choice(values)))
        elif kind < 0.55:
            values.append(g.call(rng.choice(["nn.relu", "sigmoid", "tanh", "negative"]), rng.choice(values)))
        else:
            a, b = rng.choice(values), rng.choice(values)
            values.append(g.call(rng.choice(["add", "multiply", "subtract", "maximum"]), a, b))
    made = values[3:]
    g.set_outputs(rng.sample(made, k=min(len(made), rng.randint(1, 3))) if made else [x])
    return g


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_fuse_into_convex_groups(seed):
    rng = random.Random(seed)
    graph = _random_graph(rng)
    inputs = [torch.randn(3, 6), torch.randn(6)]
    ctx = PassContext()
    out = fuse_pointwise(graph, ctx)
    out.verify()  # a cycle would leave a node before its inputs
    assert ctx.counters["fuse_pointwise"] == len(fused_nodes(out))
    for a, e in zip(ir.execute(out, *inputs), ir.execute(graph, *inputs)):
        torch.testing.assert_close(a, e)


@pytest.mark.slow
def test_small_bert_builds_with_fused_groups_and_matches_eager():
    transformers = pytest.importorskip("transformers")
    import tensorforge
    from tensorforge.frontends import from_torch

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=500
    )
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 500, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 11:] = 0
    graph = from_torch(model, (ids, mask))
    partitioned, _ = tensorforge.partition_for_tensorforge(graph)
    plans = {name: Builder().build(region, max_batch=2) for name, region in partitioned.subgraphs.items()}
    assert sum(plan.counters["fuse_pointwise"] for plan in plans.values()) > 0, "the embedding sums fuse"
    assert any("engine.pointwise" in [layer.op for layer in plan.layers] for plan in plans.values())
    for batch in (2, 1):
        inputs = (ids[:batch], mask[-batch:])
        with torch.no_grad():
            expected = model(*inputs)
        actual = _run_with_plans(partitioned, plans, inputs)
        assert relative_error(actual[0], expected.last_hidden_state) <= 1e-4
        assert relative_error(actual[1], expected.pooler_output) <= 1e-4


def _run_with_plans(graph: Graph, plans: dict, inputs) -> tuple:
    """The partitioned graph with every engine region run by its plan, the rest by the reference."""
    env = bind_symbols(graph, inputs)
    values = {id(v): t for v, t in zip(graph.inputs, inputs)}
    values.update({id(v): v.data for v in graph.constants.values()})
    for node in graph.nodes:
        args = [values[id(v)] for v in node.inputs]
        if node.op == "subgraph":
            outs = plans[node.attrs["callee"]].run(*args)
        else:
            outs = node.opdef.run(args, node.attrs, env, args[0].device if args else "cpu")
        values.update({id(v): t for v, t in zip(node.outputs, outs)})
    return tuple(values[id(v)] for v in graph.outputs)


def test_torch_out_tactic_writes_into_the_offered_views():
    """The CUDA fallback, run here on CPU tensors (it uses no device API): out= where the op has it."""
    from tensorforge.engine.tactics import get_tactic

    graph, inputs, _ = _chain()
    (node,) = fuse_pointwise(graph, PassContext()).nodes
    tactic = get_tactic("engine.pointwise", "torch_out")
    assert tactic.devices == ("cuda",)
    views = [torch.empty(2, 8, 16), torch.empty(2, 8, 16)]
    results = tactic.bind(node, None)([inputs[0], node.inputs[1].data], views, {"batch": 2})
    assert results[1] is views[1], "sigmoid has an out= form: written in place"
    for a, e in zip(results, ir.execute(graph, *inputs)):
        assert torch.equal(a, e)
