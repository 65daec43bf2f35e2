"""Support rules: each rule and gate decides what it should, with a reason string whenever a node stays out."""

from __future__ import annotations

import pytest
import torch

from partition_helpers import B, f32, one_op_graph, partition_checked, region_of
from tensorforge import ir
from tensorforge.ir import Graph, TensorType
from tensorforge.ir.ops.opaque import encode_output_type
from tensorforge.partition import (
    ENGINE_VERSION,
    SUPPORTED,
    SupportContext,
    get_rule,
    register_supported_op,
    registered_rules,
    rule_table,
    support_reason,
    support_rule,
)

# ---------------------------------------------------------------------------------------------
# Test-only IR ops and rules, registered once at import (registries refuse a second registration)
# ---------------------------------------------------------------------------------------------


@ir.register_op("test_partition.double")
def _double(x):
    """test_partition.double: an IR op the engine has no rule for."""
    return x * 2


@ir.register_op("test_partition.triple", attrs={"ok": True})
def _triple(x, ok):
    """test_partition.triple: an IR op with a capability-gated rule registered by a test (as a plugin would)."""
    return x * 3


@support_rule("test_partition.triple", since=(0, 2, 0), capability=(9, 0), dtypes={"float32"})
def _triple_rule(node, ctx):
    """Only with ok=True."""
    return None if node.attrs["ok"] else "ok=False is not supported"


@ir.register_op("test_partition.bad")
def _bad(x):
    """test_partition.bad: its rule wrongly answers False."""
    return x


register_supported_op("test_partition.bad", check=lambda node, ctx: False)


# ---------------------------------------------------------------------------------------------
# The case table: (id, graph, options, expected reason fragment or None for "offloaded")
# ---------------------------------------------------------------------------------------------


def _conv(dtype="float32", weight_from_input=False, weight_from_consts=False):
    g = Graph()
    x = g.add_input("x", TensorType(dtype, (B, 3, 8, 8)))
    if weight_from_input:
        w = g.add_input("w", TensorType(dtype, (4, 3, 3, 3)))
    elif weight_from_consts:
        w = g.call("multiply", g.add_constant(torch.randn(4, 3, 3, 3)), g.add_constant(torch.tensor(0.5)))
    else:
        w = g.add_constant(torch.randn(4, 3, 3, 3).to(getattr(torch, dtype)), "w")
    g.set_outputs([g.call("nn.conv2d", x, w, padding=(1, 1), name="target")])
    return g


def _dense_weight_input():
    g = Graph()
    x, w = g.add_input("x", f32(B, 6)), g.add_input("w", f32(5, 6))
    g.set_outputs([g.call("nn.dense", x, w, name="target")])
    return g


def _batch_norm(params_from_input: bool):
    g = Graph()
    x = g.add_input("x", f32(B, 4, 5, 5))
    gamma = g.add_input("gamma", f32(4)) if params_from_input else g.add_constant(torch.rand(4) + 0.5)
    rest = [g.add_constant(t) for t in (torch.randn(4), torch.randn(4), torch.rand(4) + 0.5)]
    g.set_outputs([g.call("nn.batch_norm", x, gamma, *rest, name="target")])
    return g


def _opaque_cumsum():
    g = Graph()
    x = g.add_input("x", f32(B, 6))
    y = g.add_node(
        "torch.aten.cumsum.default",
        [x],
        {"args": ({"input": 0}, 1), "kwargs": {}, "output_types": (encode_output_type(x.type),)},
        name="target",
    )
    g.set_outputs(y.outputs)
    return g


def _gather():
    g = Graph()
    x = g.add_input("x", f32(B, 5))
    idx = g.add_input("idx", TensorType("int64", (B, 3)))
    g.set_outputs([g.call("gather", x, idx, axis=1, name="target")])
    return g


# the ops the engine takes from version 0.2.0, each in a small graph
V0_2_OPS = {
    "nn.scaled_dot_product_attention": lambda: one_op_graph(
        "nn.scaled_dot_product_attention", f32(B, 2, 5, 4), f32(B, 2, 5, 4), f32(B, 2, 5, 4)
    ),
    "nn.group_norm": lambda: one_op_graph(
        "nn.group_norm", f32(B, 4, 3, 3), consts={1: torch.rand(4), 2: torch.rand(4)}, num_groups=2
    ),
    "image.resize2d": lambda: one_op_graph("image.resize2d", f32(B, 3, 4, 4), size=(8, 8), method="linear"),
    "gather": lambda: _gather(),
    "where": lambda: one_op_graph("where", TensorType("bool", (B, 5)), f32(B, 5), f32(B, 5)),
}

# the ops the engine takes from version 0.3.0
V0_3_OPS = {
    "trunc_mod": lambda: one_op_graph("trunc_mod", f32(B, 5), consts={1: torch.tensor(0.7)}),
    "roll": lambda: one_op_graph("roll", f32(B, 5, 4), shift=(2, -1), axis=(1, 2)),
    "cumsum": lambda: one_op_graph("cumsum", TensorType("bool", (B, 5)), axis=1),
}

CASES = [
    ("conv2d-fp32", _conv, {}, None),
    ("conv2d-fp16", lambda: _conv("float16"), {}, None),
    ("conv2d-bf16-no-device", lambda: _conv("bfloat16"), {}, None),
    ("conv2d-bf16-sm80", lambda: _conv("bfloat16"), {"device_capability": (8, 0)}, None),
    (
        "conv2d-bf16-sm75",
        lambda: _conv("bfloat16"),
        {"device_capability": (7, 5)},
        "dtype bfloat16 needs compute capability 8.0; the device has 7.5",
    ),
    (
        "conv2d-fp64",
        lambda: _conv("float64"),
        {},
        "dtype float64 is not supported (the engine's nn.conv2d takes bfloat16, float16, float32)",
    ),
    (
        "conv2d-weight-from-input",
        lambda: _conv(weight_from_input=True),
        {"use_implicit_batch": False},
        "the weight is computed from the graph inputs; the engine needs it constant",
    ),
    ("conv2d-weight-from-constants", lambda: _conv(weight_from_consts=True), {}, None),
    (
        "dense-weight-from-input",
        _dense_weight_input,
        {"use_implicit_batch": False},
        "the weight is computed from the graph inputs",
    ),
    ("batch_norm-constant-params", lambda: _batch_norm(False), {}, None),
    (
        "batch_norm-params-from-input",
        lambda: _batch_norm(True),
        {"use_implicit_batch": False},
        "a batch-norm parameter (gamma, beta, mean or variance) is computed from the graph inputs",
    ),
    ("add-int32", lambda: one_op_graph("add", TensorType("int32", (B, 4)), TensorType("int32", (B, 4))), {}, None),
    ("add-int64", lambda: one_op_graph("add", TensorType("int64", (B, 4)), TensorType("int64", (B, 4))), {}, None),
    (
        "add-fp64",
        lambda: one_op_graph("add", TensorType("float64", (B, 4)), TensorType("float64", (B, 4))),
        {},
        "dtype float64 is not supported",
    ),
    ("exp-int64", lambda: one_op_graph("exp", TensorType("int64", (B, 4))), {}, "dtype int64 is not supported"),
    ("less-bool-output", lambda: one_op_graph("less", f32(B, 4), f32(B, 4)), {}, None),
    ("cast-to-fp64", lambda: one_op_graph("cast", f32(B, 4), dtype="float64"), {}, "dtype float64 is not supported"),
    ("cast-to-int8", lambda: one_op_graph("cast", f32(B, 4), dtype="int8"), {}, "dtype int8 is not supported"),
    (
        "relu-forced-out",
        lambda: one_op_graph("nn.relu", f32(B, 4)),
        {"torch_executed_ops": ("nn.relu",)},
        "forced out by torch_executed_ops",
    ),
    ("opaque-cumsum", _opaque_cumsum, {}, "no IR op: torch.aten.cumsum.default runs through PyTorch"),
    (
        "opaque-cumsum-explicit-batch",
        _opaque_cumsum,
        {"use_implicit_batch": False},
        "no IR op: torch.aten.cumsum.default runs through PyTorch",
    ),
    (
        "no-rule",
        lambda: one_op_graph("test_partition.double", f32(B, 4)),
        {},
        "the engine has no support rule for test_partition.double",
    ),
    ("plugin-rule-no-device", lambda: one_op_graph("test_partition.triple", f32(B, 4)), {}, None),
    ("plugin-rule-sm90", lambda: one_op_graph("test_partition.triple", f32(B, 4)), {"device_capability": (9, 0)}, None),
    (
        "plugin-rule-sm80",
        lambda: one_op_graph("test_partition.triple", f32(B, 4)),
        {"device_capability": (8, 0)},
        "test_partition.triple needs compute capability 9.0, the device has 8.0",
    ),
    (
        "plugin-rule-old-engine",
        lambda: one_op_graph("test_partition.triple", f32(B, 4)),
        {"version": (0, 1, 0)},
        "test_partition.triple needs engine version 0.2.0 or newer (targeting 0.1.0)",
    ),
    (
        "plugin-rule-check",
        lambda: one_op_graph("test_partition.triple", f32(B, 4), ok=False),
        {},
        "ok=False is not supported",
    ),
    (
        "plugin-rule-dtype",
        lambda: one_op_graph("test_partition.triple", TensorType("float16", (B, 4))),
        {},
        "dtype float16 is not supported",
    ),
]
CASES += [(f"{op}-v0.3", build, {}, None) for op, build in V0_3_OPS.items()]
CASES += [
    (f"{op}-v0.2", build, {"version": (0, 2, 0)}, f"{op} needs engine version 0.3.0 or newer (targeting 0.2.0)")
    for op, build in V0_3_OPS.items()
]
CASES += [(f"{op}-v0.2", build, {}, None) for op, build in V0_2_OPS.items()]
CASES += [
    (f"{op}-v0.1", build, {"version": (0, 1, 0)}, f"{op} needs engine version 0.2.0 or newer (targeting 0.1.0)")
    for op, build in V0_2_OPS.items()
]


@pytest.mark.parametrize("build,options,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(build, options, expected):
    graph = build()
    new, config = partition_checked(graph, **options)
    if expected is None:
        assert region_of(new, "target") is not None, str(config.report)
        assert config.report.reason_for("target") is None
    else:
        assert region_of(new, "target") is None, str(config.report)
        assert config.report.reason_for("target") == expected or expected in config.report.reason_for("target")


def test_support_reason_directly():
    graph = _conv("bfloat16")
    node = graph.nodes[0]
    assert support_reason(node, SupportContext(graph=graph)) is None
    assert support_reason(node, SupportContext(graph=graph, device_capability=(7, 0))).startswith("dtype bfloat16")
    assert (
        support_reason(node, SupportContext(graph=graph, torch_executed_ops=frozenset({"nn.conv2d"})))
        == "forced out by torch_executed_ops"
    )


def test_rule_answering_false_is_an_error():
    graph = one_op_graph("test_partition.bad", f32(B, 4))
    with pytest.raises(TypeError, match="returns? None or a reason string"):
        support_reason(graph.nodes[0], SupportContext(graph=graph))


def test_registering_a_rule_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        support_rule("nn.conv2d")(lambda node, ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        register_supported_op("nn.relu")


@pytest.mark.parametrize("since", [(0, 1), (0, -1, 0), "0.1.0"])
def test_bad_since_is_an_error(since):
    with pytest.raises(ValueError, match="since must be"):
        register_supported_op("test_partition.never", since=since)
    assert get_rule("test_partition.never") is None


def test_engine_version_and_gates():
    assert ENGINE_VERSION == (0, 3, 0)
    for op in V0_2_OPS:
        assert get_rule(op).since == (0, 2, 0), op
    for op in V0_3_OPS:
        assert get_rule(op).since == (0, 3, 0), op
    assert get_rule("nn.conv2d").since == (0, 1, 0)
    assert get_rule("nn.relu").since == (0, 1, 0)


def test_every_ir_op_has_a_rule_and_every_rule_an_ir_op():
    # "engine." ops are the engine's own fused ops: its passes make them inside plans, no frontend does; ops that
    # tests register (here and in other test modules of the same run) are not tensorforge's
    registered = ir.registered_ops()
    ir_ops = {
        name
        for name, opdef in registered.items()
        if opdef.compute.__module__.startswith("tensorforge.") and not name.startswith("engine.")
    }
    rules = {name for name in registered_rules() if not name.startswith("test_partition.")}
    assert rules <= set(registered), f"rules for ops the IR does not have: {sorted(rules - set(registered))}"
    # `subgraph` is what partitioning produces; it is never offloaded again
    assert ir_ops - rules == {"subgraph"}, f"IR ops without a support rule: {sorted(ir_ops - rules - {'subgraph'})}"


def test_table_is_data_one_line_per_op():
    ops = [op for op, _, _ in SUPPORTED]
    assert len(ops) == len(set(ops))
    for op, dtypes, since in SUPPORTED:
        assert get_rule(op).check is None and get_rule(op).dtypes == dtypes and get_rule(op).since == since


def test_rule_table_rows():
    rows = {row["op"]: row for row in rule_table()}
    assert rows["nn.conv2d"]["restriction"].startswith("The weight (input 1) must be a constant")
    assert rows["nn.conv2d"]["dtypes"] == "bfloat16, float16, float32"
    assert rows["nn.group_norm"]["since"] == "0.2.0"
    assert rows["test_partition.triple"]["capability"] == "9.0"
    assert rows["nn.relu"]["restriction"] == ""
