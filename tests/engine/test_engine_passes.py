"""Each pass on hand-built graphs: what it rewrites (its counter), what it must leave alone, purity, verify, and
numerics against `ir.execute` of the unoptimized graph."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import BATCH, FUSED_TOL, batch_norm_params, check_pass, graph_with_input, ops
from tensorforge import ir
from tensorforge.engine.epilogue import FUSABLE_ACTIVATIONS
from tensorforge.engine.passes import (
    PASSES,
    PassContext,
    constant_folding,
    dead_code,
    fold_batch_norm,
    fuse_bias_activation,
    run_passes,
)
from tensorforge.ir import Graph, ShapeInferenceError, TensorType


def test_pass_list_order_and_docstrings():
    assert [p.__name__ for p in PASSES] == [
        "constant_folding",
        "fold_batch_norm",
        "dense_from_matmul",
        "fuse_bias_activation",
        "sink_dequantize",
        "fuse_quantized_layers",
        "fuse_horizontal_dense",
        "assign_precision",
        "sink_transposes",
        "reorder_dense_rows",
        "fuse_layer_norm",
        "hoist_attention_masks",
        "fuse_pointwise",
        "fold_view_chains",
        "dead_code",
    ]
    for p in PASSES:
        assert p.__module__.endswith(p.__name__), "one file per pass, named after it"
        module = __import__(p.__module__, fromlist=["_"])
        assert module.__doc__ and "Why" in module.__doc__, f"{p.__name__}: the docstring must say why it exists"


# ---------------------------------------------------------------------------------------------
# constant_folding
# ---------------------------------------------------------------------------------------------


def _positions():
    """BERT's position-id chain: arange -> expand_dims -> broadcast, added to an input."""
    g, x = graph_with_input((8,))
    pos = g.call("expand_dims", g.call("cast", g.call("arange", stop=8), dtype="float32"), axis=0)
    g.set_outputs([g.call("add", x, g.call("broadcast_to", pos, shape=(1, 8)))])
    return g, [torch.randn(3, 8)], 4


def _symbolic_full():
    """`full` of a batch-sized shape depends on the batch: it must stay."""
    g, x = graph_with_input((4,))
    g.set_outputs([g.call("add", x, g.call("full", shape=(BATCH, 4), fill_value=2.0))])
    return g, [torch.randn(2, 4)], 0


def _split_weights():
    """A multi-output node on a constant: every output becomes a constant."""
    g, x = graph_with_input((3,))
    a, b = g.call("split", g.add_constant(torch.randn(2, 3), "w"), indices_or_sections=2, axis=0)
    g.set_outputs([g.call("multiply", g.call("add", x, a), b)])
    return g, [torch.randn(2, 3)], 1


def _transposed_weight():
    g, x = graph_with_input((5,))
    w = g.call("transpose", g.add_constant(torch.randn(5, 4), "w"), axes=(1, 0))
    g.set_outputs([g.call("nn.dense", x, w)])
    return g, [torch.randn(2, 5)], 1


def _constant_output():
    """A whole output computed from constants: the graph returns a constant afterwards."""
    g, x = graph_with_input((3,))
    g.set_outputs([g.call("nn.relu", x), g.call("arange", stop=5)])
    return g, [torch.randn(2, 3)], 1


CONSTANT_FOLDING = [
    pytest.param(_positions, id="arange-broadcast-chain"),
    pytest.param(_symbolic_full, id="batch-shaped-full-stays"),
    pytest.param(_split_weights, id="split-of-weight"),
    pytest.param(_transposed_weight, id="transposed-weight"),
    pytest.param(_constant_output, id="constant-output"),
]


@pytest.mark.parametrize("make", CONSTANT_FOLDING)
def test_constant_folding(make):
    graph, inputs, count = make()
    out = check_pass(constant_folding, graph, inputs, count=count)
    assert len(out.nodes) == len(graph.nodes) - count


def test_constant_folding_respects_the_size_limit():
    g, x = graph_with_input((64, 64))
    g.set_outputs([g.call("add", x, g.call("broadcast_to", g.add_constant(torch.randn(1, 64), "row"), shape=(64, 64)))])
    assert PassContext().fold_limit_bytes == 64 << 20
    out = check_pass(constant_folding, g, [torch.randn(2, 64, 64)], count=0, ctx=PassContext(fold_limit_bytes=1024))
    assert "broadcast_to" in ops(out)
    check_pass(constant_folding, g, [torch.randn(2, 64, 64)], count=1)


# ---------------------------------------------------------------------------------------------
# dead_code
# ---------------------------------------------------------------------------------------------


def test_dead_code_removes_unused_nodes_and_constants():
    g, x = graph_with_input((4,))
    used = g.call("nn.relu", x)
    g.call("tanh", g.call("multiply", x, g.add_constant(torch.randn(4), "unused_w")))  # a dead branch of 2 nodes
    first, _ = g.call("split", used, indices_or_sections=2, axis=1)  # half of a multi-output node is used
    g.set_outputs([first])
    out = check_pass(dead_code, g, [torch.randn(2, 4)], count=2)
    assert ops(out) == ["nn.relu", "split"]
    assert "unused_w" not in out.constants


def test_dead_code_keeps_every_input():
    g, x = graph_with_input((4,))
    g.add_input("unused", TensorType("float32", (BATCH, 2)))
    g.set_outputs([g.call("nn.relu", x)])
    out = check_pass(dead_code, g, [torch.randn(2, 4), torch.randn(2, 2)], count=0)
    assert [v.name for v in out.inputs] == ["x", "unused"]


# ---------------------------------------------------------------------------------------------
# fold_batch_norm
# ---------------------------------------------------------------------------------------------


def _conv_bn(ndim=2, bias=False, groups=1, extra_user=False, bn_input_param=False):
    spatial = (6,) * ndim
    g, x = graph_with_input((4,) + spatial)
    w = g.add_constant(torch.randn(8, 4 // groups, *(3,) * ndim) * 0.3, "conv.w")
    y = g.call(f"nn.conv{ndim}d", x, w, padding=(1,) * ndim, strides=(1,) * ndim, dilation=(1,) * ndim, groups=groups)
    conv_out = y
    if bias:
        y = g.call("nn.bias_add", y, g.add_constant(torch.randn(8), "conv.b"), axis=1)
    params = batch_norm_params(g, 8)
    inputs = [torch.randn(2, 4, *spatial)]
    if bn_input_param:
        params[0] = g.add_input("gamma", TensorType("float32", (8,)))
        inputs.append(torch.randn(8))
    out = g.call("nn.batch_norm", y, *params, axis=1, epsilon=1e-3)
    g.set_outputs([out, conv_out] if extra_user else [out])
    return g, inputs


def _dense_bn(bias=False, rank=2, axis=1):
    g, x = graph_with_input((5,) * (rank - 1))
    y = g.call("nn.dense", x, g.add_constant(torch.randn(5, 5), "fc.w"))
    if bias:
        y = g.call("nn.bias_add", y, g.add_constant(torch.randn(5), "fc.b"), axis=-1)
    g.set_outputs([g.call("nn.batch_norm", y, *batch_norm_params(g, 5), axis=axis)])
    return g, [torch.randn(3, *(5,) * (rank - 1))]


def _bn_after_relu():
    g, x = graph_with_input((4, 5, 5))
    g.set_outputs([g.call("nn.batch_norm", g.call("nn.relu", x), *batch_norm_params(g, 4))])
    return g, [torch.randn(2, 4, 5, 5)]


FOLD_BATCH_NORM = [
    pytest.param(lambda: _conv_bn(2), 1, id="conv2d-bn"),
    pytest.param(lambda: _conv_bn(2, bias=True), 1, id="conv2d-bias-bn"),
    pytest.param(lambda: _conv_bn(1), 1, id="conv1d-bn"),
    pytest.param(lambda: _conv_bn(3, bias=True), 1, id="conv3d-bias-bn"),
    pytest.param(lambda: _conv_bn(2, groups=4), 1, id="depthwise-conv2d-bn"),
    pytest.param(lambda: _dense_bn(), 1, id="dense-bn"),
    pytest.param(lambda: _dense_bn(bias=True), 1, id="dense-bias-bn"),
    pytest.param(lambda: _conv_bn(2, extra_user=True), 0, id="conv-output-used-elsewhere"),
    pytest.param(lambda: _conv_bn(2, bn_input_param=True), 0, id="bn-gamma-not-constant"),
    pytest.param(lambda: _dense_bn(rank=3, axis=1), 0, id="dense-bn-on-another-axis"),
    pytest.param(_bn_after_relu, 0, id="bn-after-relu"),
]


@pytest.mark.parametrize("make, count", FOLD_BATCH_NORM)
def test_fold_batch_norm(make, count):
    graph, inputs = make()
    out = check_pass(fold_batch_norm, graph, inputs, count=count, tol=FUSED_TOL)
    assert ops(out).count("nn.batch_norm") == ops(graph).count("nn.batch_norm") - count
    if count:
        assert ops(out)[-1] == "nn.bias_add" and out.outputs[0].name == graph.outputs[0].name


# ---------------------------------------------------------------------------------------------
# fuse_bias_activation
# ---------------------------------------------------------------------------------------------

ACTIVATION_ATTRS = {
    "clip": {"a_min": 0.0, "a_max": 6.0},
    "nn.leaky_relu": {"alpha": 0.2},
    "nn.gelu": {"approximate": "tanh"},
}


def _conv_chain(*steps, residual_shape=(8, 6, 6), residual_first=False, dense=False):
    """conv2d (or dense) followed by `steps`: "bias", "add" (a residual input) or an activation op name."""
    shape = (6,) if dense else (4, 6, 6)
    g, x = graph_with_input(shape)
    inputs = [torch.randn(2, *shape)]
    if dense:
        y = g.call("nn.dense", x, g.add_constant(torch.randn(6, 6), "w"))
    else:
        y = g.call("nn.conv2d", x, g.add_constant(torch.randn(8, 4, 3, 3), "w"), padding=(1, 1))
    for step in steps:
        if step == "bias":
            y = g.call(
                "nn.bias_add",
                y,
                g.add_constant(torch.randn(y.type.shape[-1 if dense else 1]), "b"),
                axis=-1 if dense else 1,
            )
        elif step == "add":
            r = g.add_input("r", TensorType("float32", (BATCH,) + tuple(residual_shape)))
            inputs.append(torch.randn(2, *residual_shape))
            y = g.call("add", r, y) if residual_first else g.call("add", y, r)
        else:
            y = g.call(step, y, **ACTIVATION_ATTRS.get(step, {}))
    g.set_outputs([y])
    return g, inputs


FUSION = [  # (make, fused layers, expected attributes of the one fused node or None)
    *[
        pytest.param(
            lambda act=act: _conv_chain("bias", act), 1, {"activation": act, "has_bias": True}, id=f"conv-bias-{act}"
        )
        for act in sorted(FUSABLE_ACTIVATIONS)
    ],
    pytest.param(
        lambda: _conv_chain("bias", "add", "nn.relu"),
        1,
        {"has_residual": True, "residual_position": "pre_activation", "activation": "nn.relu"},
        id="resnet-conv-bias-add-relu",
    ),
    pytest.param(
        lambda: _conv_chain("bias", "add", "nn.relu", residual_first=True),
        1,
        {"has_residual": True, "residual_position": "pre_activation"},
        id="residual-first-operand",
    ),
    pytest.param(
        lambda: _conv_chain("bias", "add"), 1, {"has_residual": True, "activation": None}, id="mobilenet-conv-bias-add"
    ),
    pytest.param(
        lambda: _conv_chain("nn.relu", "add"),
        1,
        {"has_bias": False, "residual_position": "post_activation", "activation": "nn.relu"},
        id="conv-relu-add",
    ),
    pytest.param(
        lambda: _conv_chain("bias", "add", residual_shape=(8, 1, 1)),
        1,
        {"has_bias": True, "has_residual": False},
        id="broadcast-add-not-fused",
    ),
    pytest.param(
        lambda: _conv_chain("bias", "nn.relu", "sigmoid"), 1, {"activation": "nn.relu"}, id="only-one-activation"
    ),
    pytest.param(
        lambda: _conv_chain("bias", "add", "nn.gelu", dense=True, residual_shape=(6,)),
        1,
        {"has_residual": True, "activation": "nn.gelu"},
        id="dense-bias-add-gelu",
    ),
    pytest.param(lambda: _conv_chain("bias", dense=True), 1, {"has_bias": True}, id="dense-bias"),
    pytest.param(
        lambda: _conv_chain(), 1, {"has_bias": False, "activation": None}, id="conv-alone-becomes-engine-conv"
    ),
    pytest.param(lambda: _conv_chain("nn.softplus"), 1, {"activation": None}, id="softplus-not-fusable"),
    pytest.param(lambda: _conv_chain("nn.softplus", dense=True), 0, None, id="dense-alone-stays"),
]


@pytest.mark.parametrize("make, count, attrs", FUSION)
def test_fuse_bias_activation(make, count, attrs):
    graph, inputs = make()
    out = check_pass(fuse_bias_activation, graph, inputs, count=count, tol=FUSED_TOL)
    fused = [n for n in out.nodes if n.op.startswith("engine.")]
    assert len(fused) == count
    if attrs:
        assert fused[0].attrs.items() >= attrs.items(), fused[0].attrs
    assert [v.name for v in out.outputs] == [v.name for v in graph.outputs], "the fused layer keeps the value's name"


def test_fusion_stops_at_a_value_with_two_users():
    g, x = graph_with_input((4, 6, 6))
    y = g.call(
        "nn.bias_add",
        g.call("nn.conv2d", x, g.add_constant(torch.randn(8, 4, 1, 1), "w")),
        g.add_constant(torch.randn(8), "b"),
        axis=1,
    )
    g.set_outputs([g.call("nn.relu", y), g.call("sigmoid", y)])
    out = check_pass(fuse_bias_activation, g, [torch.randn(2, 4, 6, 6)], count=1, tol=FUSED_TOL)
    assert ops(out) == ["engine.conv", "nn.relu", "sigmoid"]
    assert out.nodes[0].attrs["activation"] is None


def test_fusion_of_an_intermediate_graph_output_stops_there():
    g, x = graph_with_input((4, 6, 6))
    y = g.call(
        "nn.bias_add",
        g.call("nn.conv2d", x, g.add_constant(torch.randn(8, 4, 1, 1), "w")),
        g.add_constant(torch.randn(8), "b"),
        axis=1,
    )
    g.set_outputs([g.call("nn.relu", y), y])
    out = check_pass(fuse_bias_activation, g, [torch.randn(2, 4, 6, 6)], count=1, tol=FUSED_TOL)
    assert ops(out) == ["engine.conv", "nn.relu"]


def test_all_passes_verify_after_each_and_count_everything():
    graph, inputs = _conv_bn(2, bias=True)
    ctx = PassContext()
    out = run_passes(graph, ctx, verify_each=True)
    assert ctx.counters == {
        "constant_folding": 0,
        "fold_batch_norm": 1,
        "dense_from_matmul": 0,
        "fuse_bias_activation": 1,
        "sink_dequantize": 0,
        "fuse_quantized_layers": 0,
        "fuse_horizontal_dense": 0,
        "assign_precision": 0,
        "sink_transposes": 0,
        "reorder_dense_rows": 0,
        "fuse_layer_norm": 0,
        "hoist_attention_masks": 0,
        "fuse_pointwise": 0,
        "fold_view_chains": 0,
        "dead_code": 0,
    }
    assert ops(out) == ["engine.conv"]
    assert set(out.constants) == {v.name for v in out.nodes[0].inputs[1:]}, "batch-norm leftovers are dropped"


# ---------------------------------------------------------------------------------------------
# The fused ops themselves
# ---------------------------------------------------------------------------------------------


def test_engine_conv_reference_matches_torch_in_both_residual_orders():
    F = torch.nn.functional  # noqa: N806 - torch's usual name
    x, w, b, r = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(6), torch.randn(2, 6, 5, 5)
    for position, expected in (
        ("pre_activation", F.relu(F.conv2d(x, w, b, padding=1) + r)),
        ("post_activation", F.relu(F.conv2d(x, w, b, padding=1)) + r),
    ):
        g = Graph("fused")
        vals = [g.add_input(n, TensorType.of(t)) for n, t in zip("xwbr", (x, w, b, r))]
        g.set_outputs(
            [
                g.call(
                    "engine.conv",
                    *vals,
                    ndim=2,
                    strides=(1, 1),
                    padding=(1, 1),
                    dilation=(1, 1),
                    has_bias=True,
                    has_residual=True,
                    activation="nn.relu",
                    residual_position=position,
                )
            ]
        )
        torch.testing.assert_close(ir.execute(g.verify(), x, w, b, r)[0], expected)


def test_engine_dense_with_wrong_input_count_fails_verification():
    g = Graph("bad")
    x = g.add_input("x", TensorType("float32", (2, 3)))
    w = g.add_constant(torch.randn(4, 3), "w")
    with pytest.raises(ShapeInferenceError, match="has_bias=True and has_residual=False need 3 inputs, got 2"):
        g.call("engine.dense", x, w, has_bias=True)
