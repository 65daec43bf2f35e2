"""Reduced precision: the assign_precision pass and the BuilderConfig flags fp16 / bf16 / strict_types / tf32.

Hand-built graphs say where every layer runs and where casts land (case table, one id per graph and type), that
weights are stored reduced, that the region keeps its I/O types, the counters, purity, verify, and numerics
against the float32 graph; then plans (layer precisions, arena, save/load) and whole models (torchvision
resnet18, a small BERT) converted, partitioned and built with bf16/fp16 on CPU against PyTorch eager.
"""

from __future__ import annotations

import pytest
import torch

from engine_helpers import BATCH, graph_with_input, relative_error, snapshot
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig, Plan
from tensorforge.engine.passes import PASSES, PassContext, run_passes
from tensorforge.engine.passes.assign_precision import SENSITIVE_OPS, assign_precision, reduced_dtype
from tensorforge.engine.precision import tf32_mode
from tensorforge.ir import TensorType

F32 = "float32"
# max |actual - expected| / max |expected| against the float32 graph, per reduced type (small graphs and models)
REL_TOL = {"float16": 1e-2, "bfloat16": 5e-2}
CONFIG = {"float16": dict(fp16=True), "bfloat16": dict(bf16=True)}
SHORT = {"float16": "fp16", "bfloat16": "bf16"}
R = "R"  # in expected layer lists: the reduced type of the case


def precisions(plan) -> dict[str, set[str]]:
    """op -> the precisions its layers report in the plan."""
    out: dict[str, set[str]] = {}
    for layer in plan.layers:
        out.setdefault(layer.op, set()).add(layer.precision)
    return out


def layers(graph) -> list[tuple[str, str]]:
    """(op, dtype of its first output) per node: what the plan reports as LayerInfo.precision."""
    return [(n.op, n.outputs[0].type.dtype) for n in graph.nodes]


def assign(graph, inputs, dtype, *, strict=False, check_numerics=True):
    """Run the pass the way the builder does and check what it must always keep; returns (graph, counters)."""
    ctx = PassContext(config=BuilderConfig(**CONFIG[dtype], strict_types=strict))
    graph.verify()
    before = snapshot(graph)
    out = assign_precision(graph, ctx)
    assert out is not graph
    out.verify()
    assert snapshot(graph) == before, "assign_precision changed its input graph"
    assert [v.type for v in out.inputs] == [v.type for v in graph.inputs], "the region's input types are kept"
    assert [v.type for v in out.outputs] == [v.type for v in graph.outputs], "the region's output types are kept"
    assert [v.name for v in out.outputs] == [v.name for v in graph.outputs], "outputs keep their names"
    assert_no_cast_ping_pong(out, graph)
    if check_numerics:
        for actual, expected in zip(ir.execute(out, *inputs), ir.execute(graph, *inputs)):
            assert actual.dtype == expected.dtype
            if expected.is_floating_point():
                assert relative_error(actual, expected) <= REL_TOL[dtype], relative_error(actual, expected)
            else:
                assert torch.equal(actual, expected)
    return out, ctx.counters


def assert_no_cast_ping_pong(out, source) -> None:
    """A value is cast at most once per type, never a cast of a cast the pass made, never an integer or bool."""
    source_casts = sum(n.op == "cast" for n in source.nodes)
    seen = set()
    for n in (n for n in out.nodes if n.op == "cast"):
        key = (id(n.inputs[0]), n.attrs["dtype"])
        assert key not in seen, f"%{n.inputs[0].name} is cast to {n.attrs['dtype']} twice"
        seen.add(key)
        assert n.inputs[0].type.dtype in ("float32", "float16", "bfloat16"), f"cast of a {n.inputs[0].type.dtype}"
        producer = n.inputs[0].producer
        if source_casts == 0:
            assert producer is None or producer.op != "cast", f"cast of a cast at {n.name}"


def counters(layers_reduced, casts, weights, clamped=0, float32_weights=0) -> dict[str, int]:
    return {
        "assign_precision": layers_reduced,
        "assign_precision.casts": casts,
        "assign_precision.weights": weights,
        "assign_precision.weights_clamped": clamped,
        "assign_precision.float32_weights": float32_weights,
    }


def expand(expected, dtype):
    return [(op, dtype if d == R else d) for op, d in expected]


# ---------------------------------------------------------------------------------------------
# The case table: hand-built graphs -> (layers, counters) for the default and the strict mode
# ---------------------------------------------------------------------------------------------


def _dense_gelu_dense_softmax():
    g, x = graph_with_input((8,))
    h = g.call(
        "nn.bias_add",
        g.call("nn.dense", x, g.add_constant(torch.randn(16, 8) * 0.3, "w1")),
        g.add_constant(torch.randn(16), "b1"),
        axis=-1,
    )
    y = g.call("nn.dense", g.call("nn.gelu", h), g.add_constant(torch.randn(4, 16) * 0.3, "w2"))
    g.set_outputs([g.call("nn.softmax", y)])
    return g, [torch.randn(3, 8)]


def _conv_relu_add():
    """The residual reads the region input too: one entry cast serves the conv and the add."""
    g, x = graph_with_input((4, 6, 6))
    y = g.call("nn.conv2d", x, g.add_constant(torch.randn(4, 4, 3, 3) * 0.2, "conv.w"), padding=(1, 1))
    g.set_outputs([g.call("add", g.call("nn.relu", y), x)])
    return g, [torch.randn(2, 4, 6, 6)]


def _embedding():
    """int64 ids stay int64: the lookup reads a reduced table, the mask is computed on the ids untouched."""
    g = ir.Graph("embedding")
    ids = g.add_input("ids", TensorType("int64", (BATCH, 6)))
    emb = g.call("take", g.add_constant(torch.randn(20, 8), "emb"), ids, axis=0)
    emb = g.call("add", emb, g.add_constant(torch.randn(6, 8), "pos"))
    norm = g.call(
        "nn.layer_norm", emb, g.add_constant(torch.rand(8) + 0.5, "gamma"), g.add_constant(torch.randn(8), "beta")
    )
    out = g.call("nn.dense", norm, g.add_constant(torch.randn(5, 8) * 0.3, "w"))
    mask = g.call("greater", ids, g.add_constant(torch.tensor(0), "zero"))
    g.set_outputs([out, mask])
    return g, [torch.randint(0, 20, (2, 6))]


def _rms_norm():
    """rsqrt(mean(h**2) + eps) is float32 end to end (no bounce through the reduced type between two casts)."""
    g, x = graph_with_input((8,))
    h = g.call("nn.dense", x, g.add_constant(torch.randn(8, 8) * 0.3, "w"))
    ms = g.call("mean", g.call("power", h, g.add_constant(torch.tensor(2.0), "two")), axis=(-1,), keepdims=True)
    r = g.call("rsqrt", g.call("add", ms, g.add_constant(torch.tensor(1e-6), "eps")))
    g.set_outputs([g.call("multiply", g.call("multiply", h, r), g.add_constant(torch.rand(8) + 0.5, "g"))])
    return g, [torch.randn(3, 8)]


def _one_cast_many_readers():
    """A layer norm read by two dense layers and a residual add: its output is cast down once."""
    g, x = graph_with_input((8,))
    n = g.call("nn.layer_norm", x, g.add_constant(torch.rand(8) + 0.5, "gamma"), g.add_constant(torch.randn(8), "beta"))
    a = g.call("nn.dense", n, g.add_constant(torch.randn(8, 8) * 0.3, "wa"))
    b = g.call("nn.dense", n, g.add_constant(torch.randn(8, 8) * 0.3, "wb"))
    g.set_outputs([g.call("add", g.call("add", a, b), n)])
    return g, [torch.randn(3, 8)]


def _output_read_inside():
    """A reduced value that is both a region output and a softmax input: one cast up serves both."""
    g, x = graph_with_input((8,))
    d = g.call("nn.dense", x, g.add_constant(torch.randn(4, 8) * 0.3, "w"))
    g.set_outputs([g.call("nn.softmax", d), d])
    return g, [torch.randn(3, 8)]


def _shared_weight():
    """A constant read by a reduced add and by a float32 layer norm keeps both copies."""
    g, x = graph_with_input((8,))
    c = g.add_constant(torch.rand(8) + 0.5, "c")
    g.set_outputs([g.call("nn.layer_norm", g.call("add", x, c), c, g.add_constant(torch.randn(8), "beta"))])
    return g, [torch.randn(3, 8)]


CASES = {
    # name: (make, default (layers, counters), strict (layers, counters))
    "dense-gelu-dense-softmax": (
        _dense_gelu_dense_softmax,
        (
            [
                ("cast", R),
                ("nn.dense", R),
                ("nn.bias_add", R),
                ("nn.gelu", R),
                ("nn.dense", R),
                ("cast", F32),
                ("nn.softmax", F32),
            ],
            counters(4, 2, 3),
        ),
        (
            [
                ("cast", R),
                ("nn.dense", R),
                ("nn.bias_add", R),
                ("nn.gelu", R),
                ("nn.dense", R),
                ("nn.softmax", R),
                ("cast", F32),
            ],
            counters(5, 2, 3),
        ),
    ),
    "conv-relu-add": (
        _conv_relu_add,
        ([("cast", R), ("nn.conv2d", R), ("nn.relu", R), ("add", R), ("cast", F32)], counters(3, 2, 1)),
        ([("cast", R), ("nn.conv2d", R), ("nn.relu", R), ("add", R), ("cast", F32)], counters(3, 2, 1)),
    ),
    "int64-take-embedding": (
        _embedding,
        (
            [
                ("take", R),
                ("add", R),
                ("cast", F32),
                ("nn.layer_norm", F32),
                ("cast", R),
                ("nn.dense", R),
                ("greater", "bool"),
                ("cast", F32),
            ],
            counters(3, 3, 3),
        ),
        (
            [("take", R), ("add", R), ("nn.layer_norm", R), ("nn.dense", R), ("greater", "bool"), ("cast", F32)],
            counters(4, 1, 5),
        ),
    ),
    "rms-norm": (
        _rms_norm,
        (
            [
                ("cast", R),
                ("nn.dense", R),
                ("cast", F32),
                ("power", F32),
                ("mean", F32),
                ("add", F32),
                ("rsqrt", F32),
                ("cast", R),
                ("multiply", R),
                ("multiply", R),
                ("cast", F32),
            ],
            counters(3, 4, 2),
        ),
        (
            [
                ("cast", R),
                ("nn.dense", R),
                ("power", R),
                ("mean", R),
                ("add", R),
                ("rsqrt", R),
                ("multiply", R),
                ("multiply", R),
                ("cast", F32),
            ],
            counters(7, 2, 4),
        ),
    ),
    "one-cast-many-readers": (
        _one_cast_many_readers,
        (
            [
                ("nn.layer_norm", F32),
                ("cast", R),
                ("nn.dense", R),
                ("nn.dense", R),
                ("add", R),
                ("add", R),
                ("cast", F32),
            ],
            counters(4, 2, 2),
        ),
        (
            [
                ("cast", R),
                ("nn.layer_norm", R),
                ("nn.dense", R),
                ("nn.dense", R),
                ("add", R),
                ("add", R),
                ("cast", F32),
            ],
            counters(5, 2, 4),
        ),
    ),
    "output-read-inside": (
        _output_read_inside,
        ([("cast", R), ("nn.dense", R), ("cast", F32), ("nn.softmax", F32)], counters(1, 2, 1)),
        ([("cast", R), ("nn.dense", R), ("nn.softmax", R), ("cast", F32), ("cast", F32)], counters(2, 3, 1)),
    ),
    "shared-weight": (
        _shared_weight,
        ([("cast", R), ("add", R), ("cast", F32), ("nn.layer_norm", F32)], counters(1, 2, 1)),
        ([("cast", R), ("add", R), ("nn.layer_norm", R), ("cast", F32)], counters(2, 2, 2)),
    ),
}
PARAMS = [
    pytest.param(name, dtype, strict, id=f"{name}-{SHORT[dtype]}{'-strict' if strict else ''}")
    for name in CASES
    for dtype in REL_TOL
    for strict in (False, True)
]


@pytest.mark.parametrize("name, dtype, strict", PARAMS)
def test_case_table(name, dtype, strict):
    make, default, strict_expected = CASES[name]
    expected_layers, expected_counters = strict_expected if strict else default
    graph, inputs = make()
    out, got = assign(graph, inputs, dtype, strict=strict)
    assert layers(out) == expand(expected_layers, dtype), str(out)
    assert got == expected_counters


@pytest.mark.parametrize("dtype", list(REL_TOL), ids=SHORT.get)
def test_weights_are_stored_reduced_once_under_their_names(dtype):
    out, _ = assign(*_dense_gelu_dense_softmax(), dtype)
    assert {k: str(v.data.dtype).removeprefix("torch.") for k, v in out.constants.items()} == {
        "w1": dtype,
        "b1": dtype,
        "w2": dtype,
    }
    out, _ = assign(*_embedding(), dtype)
    kinds = {k: str(v.data.dtype).removeprefix("torch.") for k, v in out.constants.items()}
    assert kinds == {"emb": dtype, "pos": dtype, "w": dtype, "gamma": F32, "beta": F32, "zero": "int64"}
    assert out.inputs[0].type.dtype == "int64" and not any(
        n.inputs[0] is out.inputs[0] for n in out.nodes if n.op == "cast"
    )
    out, _ = assign(*_shared_weight(), dtype)
    assert out.constants["c"].data.dtype == torch.float32
    reduced_copy = next(v for k, v in out.constants.items() if k.startswith("c.") and k != "c")
    assert reduced_copy.data.dtype == getattr(torch, dtype)
    assert torch.equal(reduced_copy.data, out.constants["c"].data.to(getattr(torch, dtype)))


def test_weights_outside_the_reduced_range_saturate():
    g, x = graph_with_input((4,))
    g.set_outputs([g.call("multiply", x, g.add_constant(torch.tensor([1e6, -1e6, 1.5, float("-inf")]), "scale"))])
    out, got = assign(g, [torch.randn(2, 4)], "float16", check_numerics=False)
    assert got == counters(1, 2, 1, clamped=1)
    assert out.constants["scale"].data.tolist() == [65504.0, -65504.0, 1.5, float("-inf")]
    out, got = assign(g, [torch.randn(2, 4)], "bfloat16", check_numerics=False)  # bfloat16 has float32's range
    assert got == counters(1, 2, 1, clamped=0)
    assert out.constants["scale"].data.tolist() == [999424.0, -999424.0, 1.5, float("-inf")]


def test_sensitive_op_table_is_data_about_real_ops():
    registered = ir.registered_ops()
    for op, why in SENSITIVE_OPS.items():
        assert op in registered, f"{op} is not an IR op"
        assert len(why) > 20, f"{op}: say why it stays float32"
    assert {
        "nn.softmax",
        "nn.log_softmax",
        "nn.layer_norm",
        "nn.group_norm",
        "nn.batch_norm",
        "mean",
        "sum",
        "variance",
        "prod",
        "exp",
        "log",
        "power",
    } <= set(SENSITIVE_OPS)


def _sensitive(op):
    """x -> dense -> sigmoid (positive, so log and power are defined) -> op -> output."""
    g, x = graph_with_input((4, 5))
    h = g.call("sigmoid", g.call("nn.dense", x, g.add_constant(torch.randn(6, 5) * 0.3, "w")))  # (batch, 4, 6)
    channel = [g.add_constant(torch.rand(4) + 0.5, f"p{i}") for i in range(4)]
    calls = {
        "nn.softmax": lambda: g.call(op, h),
        "nn.log_softmax": lambda: g.call(op, h),
        "nn.layer_norm": lambda: g.call(
            op, h, g.add_constant(torch.rand(6) + 0.5, "gamma"), g.add_constant(torch.randn(6), "beta")
        ),
        "nn.group_norm": lambda: g.call(op, h, channel[0], channel[1], num_groups=2),
        "nn.batch_norm": lambda: g.call(op, h, *channel, axis=1),
        "power": lambda: g.call(op, h, g.add_constant(torch.tensor(3.0), "three")),
        "cumsum": lambda: g.call(op, h, axis=-1),
    }
    reduction = op in ("mean", "sum", "variance", "prod")
    y = calls.get(op, lambda: g.call(op, h, axis=(-1,)) if reduction else g.call(op, h))()
    g.set_outputs([y])
    return g, [torch.randn(2, 4, 5)]


@pytest.mark.parametrize("dtype", list(REL_TOL), ids=SHORT.get)
@pytest.mark.parametrize("op", sorted(SENSITIVE_OPS))
def test_every_sensitive_op_stays_float32_unless_strict(op, dtype):
    graph, inputs = _sensitive(op)
    out, _ = assign(graph, inputs, dtype)
    assert dict(layers(out))[op] == F32
    # the reduced sigmoid is cast up before the op, or read as it is where type promotion already computes the op
    # in float32 (batch_norm's float32 statistics promote it)
    assert [o for o, _ in layers(out)] in (
        ["cast", "nn.dense", "sigmoid", "cast", op],
        ["cast", "nn.dense", "sigmoid", op],
    )
    out, _ = assign(graph, inputs, dtype, strict=True)
    assert dict(layers(out))[op] == dtype
    assert [o for o, _ in layers(out)] == ["cast", "nn.dense", "sigmoid", op, "cast"]


# ---------------------------------------------------------------------------------------------
# Graphs that are already reduced, float32 builds, and which type is chosen
# ---------------------------------------------------------------------------------------------


def _half_graph(island: bool):
    """A `.half()` model: float16 throughout; with `island`, a softmax the model itself runs in float32."""
    g, x = graph_with_input((8,), dtype="float16")
    y = g.call("nn.dense", x, g.add_constant(torch.randn(4, 8, dtype=torch.float16), "w"))
    if island:
        y = g.call("cast", g.call("nn.softmax", g.call("cast", y, dtype=F32)), dtype="float16")
    else:
        y = g.call(
            "nn.softmax",
            g.call(
                "nn.layer_norm",
                y,
                g.add_constant(torch.ones(4, dtype=torch.float16), "gamma"),
                g.add_constant(torch.zeros(4, dtype=torch.float16), "beta"),
            ),
        )
    g.set_outputs([y])
    return g, [torch.randn(3, 8, dtype=torch.float16)]


@pytest.mark.parametrize("island", [False, True], ids=["all-fp16", "fp32-island"])
def test_a_float16_graph_changes_only_where_strict_mode_demands(island):
    graph, inputs = _half_graph(island)
    for config in (BuilderConfig(fp16=True), BuilderConfig(bf16=True), BuilderConfig(fp16=True, bf16=True)):
        ctx = PassContext(config=config)
        out = assign_precision(graph, ctx)
        assert snapshot(out) == snapshot(graph), f"{config}: a float16 graph must come out unchanged"
        assert ctx.counters == counters(0, 0, 0)
    out, got = assign(graph, inputs, "float16", strict=True, check_numerics=False)
    if island:  # the model's own float32 softmax is forced down: both of its casts now make float16
        assert layers(out) == [
            ("nn.dense", "float16"),
            ("cast", "float16"),
            ("nn.softmax", "float16"),
            ("cast", "float16"),
        ]
        assert got == counters(3, 0, 0)
    else:
        assert snapshot(out) == snapshot(graph) and got == counters(0, 0, 0)


def test_float32_build_changes_nothing_and_reports_one_counter():
    graph, inputs = _dense_gelu_dense_softmax()
    for config in (BuilderConfig(), BuilderConfig(strict_types=True), BuilderConfig(tf32=False)):
        ctx = PassContext(config=config)
        out = assign_precision(graph, ctx)
        assert out is not graph and snapshot(out) == snapshot(graph)
        assert ctx.counters == {"assign_precision": 0}


def test_which_reduced_type():
    assert reduced_dtype(BuilderConfig()) is None
    assert reduced_dtype(BuilderConfig(bf16=True)) == "bfloat16"
    assert reduced_dtype(BuilderConfig(fp16=True)) == "float16"
    assert reduced_dtype(BuilderConfig(fp16=True, bf16=True)) == "float16", "float16 wins: more mantissa bits"


def test_pass_position():
    names = [p.__name__ for p in PASSES]
    here = names.index("assign_precision")
    assert names.index("fold_batch_norm") < here and names.index("fuse_bias_activation") < here, (
        "precision is assigned to the fused layers, after batch norms are folded into float32 weights"
    )
    for later in ("fuse_pointwise", "dead_code"):
        if later in names:
            assert here < names.index(later), f"{later} must see the casts this pass inserts"


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(REL_TOL), ids=SHORT.get)
def test_plan_reports_layer_precision_and_stores_reduced_weights(dtype):
    graph, _ = _dense_gelu_dense_softmax()
    full = Builder(BuilderConfig()).build(graph, max_batch=4)
    plan = Builder(BuilderConfig(**CONFIG[dtype])).build(graph, max_batch=4)
    by_op = precisions(plan)
    assert by_op.get("nn.softmax", {F32}) == {F32}, "softmax (unless a fusion pass absorbed it) stays float32"
    assert by_op["engine.dense"] == by_op["nn.dense"] == {dtype}, "gelu fused into the first dense, both reduced"
    assert plan.counters["assign_precision.weights"] == 3
    assert {v.data.dtype for v in plan.graph.constants.values()} == {getattr(torch, dtype)}
    assert plan.graph.parameter_bytes() * 2 == full.graph.parameter_bytes()
    assert plan.peak_activation_bytes <= full.peak_activation_bytes
    assert plan.input_types == full.input_types and plan.output_types == full.output_types
    for batch in (1, 4):
        x = torch.randn(batch, 8)
        (actual,), (expected,) = plan.run(x), full.run(x)
        assert actual.dtype == torch.float32 and relative_error(actual, expected) <= REL_TOL[dtype]
    loaded = Plan.from_bytes(plan.to_bytes())
    assert [layer.precision for layer in loaded.layers] == [layer.precision for layer in plan.layers]
    assert {v.data.dtype for v in loaded.graph.constants.values()} == {getattr(torch, dtype)}
    x = torch.randn(2, 8)
    assert torch.equal(loaded.run(x)[0], plan.run(x)[0])


def test_strict_types_builds_and_forces_the_sensitive_layers_down():
    graph, inputs = _one_cast_many_readers()
    loose = Builder(BuilderConfig(fp16=True)).build(graph, max_batch=3)
    strict = Builder(BuilderConfig(fp16=True, strict_types=True)).build(graph, max_batch=3)
    assert precisions(loose).get("nn.layer_norm", {F32}) == {F32}
    assert precisions(strict).get("nn.layer_norm", {"float16"}) == {"float16"}
    # the second dense and the first residual add are one engine.dense by now
    assert loose.counters["assign_precision"] == 3 and strict.counters["assign_precision"] == 4
    assert precisions(strict)["nn.dense"] == precisions(strict)["engine.dense"] == {"float16"}
    (expected,) = ir.execute(graph, *inputs)
    for plan in (loose, strict):
        (actual,) = plan.run(*inputs)
        assert actual.dtype == torch.float32 and relative_error(actual, expected) <= REL_TOL["float16"]


# ---------------------------------------------------------------------------------------------
# TF32
# ---------------------------------------------------------------------------------------------


def _tf32_switches():
    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


def test_tf32_mode_sets_both_switches_and_restores_them():
    before = _tf32_switches()
    with tf32_mode(False):
        assert _tf32_switches() == ("ieee", "ieee")
        with tf32_mode(True):
            assert _tf32_switches() == ("tf32", "tf32")
        assert _tf32_switches() == ("ieee", "ieee")
    assert _tf32_switches() == before
    with pytest.raises(RuntimeError, match="boom"), tf32_mode(True):
        raise RuntimeError("boom")
    assert _tf32_switches() == before
    # the legacy flags PyTorch users read still work afterwards (no "mix of legacy and new APIs" error)
    assert isinstance(torch.backends.cuda.matmul.allow_tf32, bool) and isinstance(torch.backends.cudnn.allow_tf32, bool)


@pytest.mark.gpu
def test_tf32_off_gives_ieee_float32_matmuls():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("TF32 needs an Ampere or newer GPU")
    a, b = torch.randn(512, 512, device="cuda"), torch.randn(512, 512, device="cuda")
    exact = (a.double() @ b.double()).float()
    with tf32_mode(False):
        ieee = a @ b
    with tf32_mode(True):
        tf32 = a @ b
    assert relative_error(ieee, exact) < 1e-5 < relative_error(tf32, exact)


# ---------------------------------------------------------------------------------------------
# Whole models: converted, partitioned, built reduced on CPU, against PyTorch eager in float32
# ---------------------------------------------------------------------------------------------


def _resnet18():
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.resnet18().eval(), (torch.randn(2, 3, 64, 64),)


def _bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=32,
    )
    return transformers.BertModel(config).eval(), (torch.randint(0, 100, (2, 16)),)


MODELS = {"resnet18": _resnet18, "bert": _bert}
# the compute-heavy layers each model has after fusion (all reduced), and layers that keep float32 or integers
MODEL_HEAVY = {"resnet18": {"engine.conv", "engine.dense"}, "bert": {"engine.dense", "nn.scaled_dot_product_attention"}}
MODEL_KEPT = {
    "resnet18": {"cast": {R, F32}, "nn.max_pool2d": {R}, "nn.global_avg_pool2d": {R}},
    "bert": {"nn.layer_norm": {F32}, "take": {R}, "broadcast_to": {"int64", "bool"}},
}
# casts the pass inserts: resnet18 only at the region's input and output; bert around its 5 layer norms (4 in,
# 4 out: the last one is a region output) and around the pooler (its input is cut from the last layer norm)
MODEL_CASTS = {"resnet18": 2, "bert": 11}
HEAVY = {
    "engine.conv",
    "engine.dense",
    "nn.conv2d",
    "nn.dense",
    "matmul",
    "nn.batch_matmul",
    "nn.scaled_dot_product_attention",
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", list(REL_TOL), ids=SHORT.get)
@pytest.mark.parametrize("name", list(MODELS))
def test_whole_model_in_reduced_precision(name, dtype):
    import tensorforge as forge

    torch.manual_seed(0)
    model, example = MODELS[name]()
    partitioned, _ = forge.partition_for_tensorforge(forge.frontends.from_torch(model, example))
    assert [n.op for n in partitioned.nodes] == ["subgraph"], "the whole model is one engine region"
    (region,) = partitioned.subgraphs.values()
    config = BuilderConfig(**CONFIG[dtype])

    # the graph as assign_precision leaves it (later passes may fuse the casts and norms into other layers)
    upto = PASSES[: PASSES.index(assign_precision) + 1]
    assigned = run_passes(region, PassContext(config=config, max_batch=2), upto, verify_each=True)
    assert_no_cast_ping_pong(assigned, region)
    by_op: dict[str, set[str]] = {}
    for op, precision in layers(assigned):
        by_op.setdefault(op, set()).add(precision)
    assert {op for op in by_op if op in HEAVY} == MODEL_HEAVY[name]
    assert all(by_op[op] == {dtype} for op in MODEL_HEAVY[name]), by_op
    for op, expected in MODEL_KEPT[name].items():
        assert by_op[op] == {dtype if p == R else p for p in expected}, (op, by_op[op])
    assert sum(op == "cast" for op, _ in layers(assigned)) == MODEL_CASTS[name]

    plan = Builder(config).build(region, max_batch=2)
    assert all(precision == {dtype} for op, precision in precisions(plan).items() if op in HEAVY)
    assert precisions(plan).get("nn.layer_norm", {F32}) == {F32} and precisions(plan).get("nn.softmax", {F32}) == {F32}
    assert plan.input_types == [v.type for v in region.inputs]
    assert plan.output_types == [v.type for v in region.outputs]
    weights = {v.data.dtype for n in plan.graph.nodes if n.op in HEAVY for v in n.inputs[1:2] if v.data is not None}
    assert weights == {getattr(torch, dtype)}

    with torch.no_grad():
        expected = model(*example)
    expected = (
        [expected] if isinstance(expected, torch.Tensor) else [expected.last_hidden_state, expected.pooler_output]
    )
    actual = plan.run(*example)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == torch.float32 and a.shape == e.shape
        assert relative_error(a, e) <= REL_TOL[dtype], f"{name} {dtype}: {relative_error(a, e)}"


# ---------------------------------------------------------------------------------------------
# Depthwise convolutions keep float32 weights (rule 3's exception)
# ---------------------------------------------------------------------------------------------


def _inverted_residual():
    """MobileNetV2's block: 1x1 expand -> BN -> ReLU6 -> 3x3 depthwise -> BN -> ReLU6 -> 1x1 project -> BN, + x."""

    class Block(torch.nn.Module):
        def __init__(self, c=16, hidden=48):
            super().__init__()
            nn = torch.nn
            self.body = nn.Sequential(
                nn.Conv2d(c, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(),
                nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(),
                nn.Conv2d(hidden, c, 1, bias=False),
                nn.BatchNorm2d(c),
            )

        def forward(self, x):
            return x + self.body(x)

    torch.manual_seed(0)
    block = Block()
    with torch.no_grad():  # statistics that make the folded scales differ from one channel to the next
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.01, 4.0)
                m.running_mean.normal_()
                m.weight.uniform_(0.5, 2.0)
    return block.eval(), (torch.randn(2, 16, 10, 10),)


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_depthwise_convolutions_keep_float32_weights_outside_strict_mode(strict):
    import tensorforge as forge
    from tensorforge.engine.ops import is_depthwise

    model, example = _inverted_residual()
    partitioned, _ = forge.partition_for_tensorforge(forge.frontends.from_torch(model, example))
    (region,) = partitioned.subgraphs.values()
    config = BuilderConfig(fp16=True, strict_types=strict)
    upto = PASSES[: PASSES.index(assign_precision) + 1]
    ctx = PassContext(config=config, max_batch=2)
    assigned = run_passes(region, ctx, upto, verify_each=True)
    convs = [n for n in assigned.nodes if n.op == "engine.conv"]
    assert len(convs) == 3 and sum(map(is_depthwise, convs)) == 1
    for node in convs:
        data, *constants = [v.type.dtype for v in node.inputs[:3]]
        assert data == node.outputs[0].type.dtype == "float16", "activations are reduced either way"
        wide = is_depthwise(node) and not strict
        assert set(constants) == {"float32" if wide else "float16"}, (node.name, constants)
    assert ctx.counters["assign_precision.float32_weights"] == (0 if strict else 1)

    plan = Builder(config).build(region, max_batch=2)
    with torch.no_grad():
        expected = model(*example)
    (actual,) = plan.run(*example)
    assert actual.dtype == torch.float32 and relative_error(actual, expected) <= REL_TOL["float16"]


def test_tf32_mode_from_several_threads_restores_only_after_the_last_leaves():
    """A thread leaving its block must not switch TF32 back on under another thread still inside a tf32=False
    plan (plans run layer by layer from several threads at once, runtime/ threading model)."""
    import threading

    before = _tf32_switches()
    inside, leave_first, first_left = threading.Barrier(2), threading.Event(), threading.Event()
    seen = []

    def first():
        with tf32_mode(False):
            inside.wait()
            leave_first.wait()
        first_left.set()

    def second():
        with tf32_mode(False):
            inside.wait()
            leave_first.set()
            first_left.wait()
            seen.append(_tf32_switches())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [("ieee", "ieee")], "the second thread still runs without TF32 after the first left"
    assert _tf32_switches() == before
