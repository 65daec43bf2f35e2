"""The ONNX frontend's driver: typed inputs, folding of shape computations, the opaque path through
onnxruntime, the whole-model check, the registry's rules, refused models, external data.

Every imported graph is compared with onnxruntime running the same model on the same inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from onnx_helpers import FLOAT, INT64, assert_matches_onnxruntime, make_model, onnxruntime_outputs

import tensorforge
from tensorforge import ir
from tensorforge.frontends import from_onnx
from tensorforge.frontends.onnx import OnnxImportError, check_onnx_model
from tensorforge.frontends.onnx_ops import Unsupported, mapped_versions, onnx_converter
from tensorforge.ir import Sym, SymExpr

BATCH = Sym("batch")
node = helper.make_node


def _shape_chain_reshape():
    """Flatten all but the batch the way exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Unsqueeze", ["n", "axes"], ["n1"]),
        node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
        node("Reshape", ["x", "shape"], ["y"]),
    ]
    init = [("zero", np.array(0, np.int64)), ("axes", np.array([0], np.int64)), ("minus_one", np.array([-1], np.int64))]
    return make_model(nodes, [("x", FLOAT, ["N", 3, 4])], [("y", FLOAT, None)], init)


def _expand_like():
    nodes = [node("Shape", ["y"], ["s"]), node("Expand", ["x", "s"], ["z"])]
    return make_model(nodes, [("x", FLOAT, [1, 4]), ("y", FLOAT, ["N", 4])], [("z", FLOAT, None)])


def _constant_of_batch_shape():
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", FLOAT, [1], [2.0])),
        node("Add", ["x", "c"], ["y"]),
    ]
    return make_model(nodes, [("x", FLOAT, ["N", 5])], [("y", FLOAT, None)])


def _range_of_batch():
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Range", ["start", "n", "step"], ["r"]),
        node("Cast", ["r"], ["rf"], to=FLOAT),
        node("Unsqueeze", ["rf", "one"], ["col"]),
        node("Add", ["x", "col"], ["y"]),
    ]
    init = [
        ("zero", np.array(0, np.int64)),
        ("start", np.array(0, np.int64)),
        ("step", np.array(1, np.int64)),
        ("one", np.array([1], np.int64)),
    ]
    return make_model(nodes, [("x", FLOAT, ["N", 5])], [("y", FLOAT, None)], init)


def _reshape_zero_copies():
    init = [("shape", np.array([0, -1, 2], np.int64))]
    return make_model([node("Reshape", ["x", "shape"], ["y"])], [("x", FLOAT, ["N", 4, 3])], [("y", FLOAT, None)], init)


def _softmax_11_flattens():
    # before opset 13, Softmax(axis=1) normalizes over every axis from 1 on, not axis 1 alone
    return make_model(
        [node("Softmax", ["x"], ["y"], axis=1)], [("x", FLOAT, ["N", 3, 4])], [("y", FLOAT, None)], opset=11
    )


def _unsqueeze_11_attribute():
    return make_model(
        [node("Unsqueeze", ["x"], ["y"], axes=[0, 3])], [("x", FLOAT, [2, 3])], [("y", FLOAT, None)], opset=11
    )


def _split_18_uneven():
    return make_model(
        [node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)],
        [("x", FLOAT, ["N", 7])],
        [("a", FLOAT, None), ("b", FLOAT, None), ("c", FLOAT, None)],
        opset=18,
    )


def _conv_same_upper():
    w = np.random.RandomState(0).randn(4, 3, 3, 3).astype(np.float32)
    return make_model(
        [node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
        [("x", FLOAT, ["N", 3, 8, 8])],
        [("y", FLOAT, None)],
        [("w", w)],
    )


def _max_pool_asymmetric():
    return make_model(
        [node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[0, 0, 2, 1])],
        [("x", FLOAT, ["N", 2, 6, 6])],
        [("y", FLOAT, None)],
    )


def _avg_pool_asymmetric_exclude_pad():
    return make_model(
        [node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 0, 0, 1], strides=[2, 2])],
        [("x", FLOAT, ["N", 2, 5, 5])],
        [("y", FLOAT, None)],
    )


def _gemm_all_attributes():
    rng = np.random.RandomState(0)
    init = [("b", rng.randn(6, 4).astype(np.float32)), ("c", rng.randn(6).astype(np.float32))]
    return make_model(
        [node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)],
        [("a", FLOAT, [4, 3])],
        [("y", FLOAT, None)],
        init,
    )


def _clip_runtime_bounds():
    return make_model(
        [node("Clip", ["x", "lo", "hi"], ["y"])],
        [("x", FLOAT, [2, 5]), ("lo", FLOAT, []), ("hi", FLOAT, [])],
        [("y", FLOAT, None)],
    )


def _reduce_axes_input_keepdims():
    return make_model(
        [node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
        [("x", FLOAT, ["N", 3, 4])],
        [("y", FLOAT, None)],
        [("axes", np.array([-1, 1], np.int64))],
        opset=18,
    )


def _resize_nearest_exact():
    init = [("roi", np.array([], np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32))]
    return make_model(
        [node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest", nearest_mode="round_prefer_ceil")],
        [("x", FLOAT, ["N", 2, 3, 3])],
        [("y", FLOAT, None)],
        init,
        opset=13,
    )


def _resize_linear_asymmetric():
    init = [("roi", np.array([], np.float32)), ("scales", np.array([1, 1, 1.5, 0.5], np.float32))]
    return make_model(
        [node("Resize", ["x", "roi", "scales"], ["y"], mode="linear", coordinate_transformation_mode="asymmetric")],
        [("x", FLOAT, ["N", 2, 4, 6])],
        [("y", FLOAT, None)],
        init,
        opset=13,
    )


def _reshape_from_data():
    # the target shape is data: it cannot become an attribute, so the node runs through onnxruntime
    return make_model(
        [node("Reshape", ["x", "shape"], ["y"])], [("x", FLOAT, [2, 6]), ("shape", INT64, [2])], [("y", FLOAT, [3, 4])]
    )


def _unsupported_op_on_constants_folds():
    init = [("c", np.arange(6, dtype=np.float32).reshape(2, 3))]
    return make_model(
        [node("Shrink", ["c"], ["s"], lambd=1.5), node("Add", ["x", "s"], ["y"])],
        [("x", FLOAT, ["N", 2, 3])],
        [("y", FLOAT, None)],
        init,
    )


def _batch_inputs(model, batch: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    out = []
    for v in model.graph.input:
        if v.name in {t.name for t in model.graph.initializer}:
            continue
        dims = [batch if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        if v.type.tensor_type.elem_type == INT64:
            out.append(torch.tensor([3, 4]))  # the only int input here: a target shape
        else:
            out.append(torch.randn(dims, generator=gen))
    return out


# (id, model, IR ops the graph must hold exactly (None: not checked), opaque op names)
CASES = [
    ("shape-chain-folds-to-one-reshape", _shape_chain_reshape, {"reshape"}, []),
    ("expand-to-a-batch-shape", _expand_like, {"broadcast_to"}, []),
    ("constant-of-a-batch-shape", _constant_of_batch_shape, {"full", "add"}, []),
    ("range-up-to-the-batch", _range_of_batch, {"arange", "cast", "expand_dims", "add"}, []),
    ("reshape-zero-copies-a-size", _reshape_zero_copies, {"reshape"}, []),
    ("softmax-opset11-flattens", _softmax_11_flattens, {"reshape", "nn.softmax"}, []),
    ("unsqueeze-opset11-attribute", _unsqueeze_11_attribute, {"expand_dims"}, []),
    ("split-opset18-uneven", _split_18_uneven, {"split"}, []),
    ("conv-same-upper-asymmetric-pad", _conv_same_upper, {"nn.pad", "nn.conv2d"}, []),
    ("max-pool-asymmetric-pad", _max_pool_asymmetric, {"nn.pad", "nn.max_pool2d"}, []),
    (
        "avg-pool-asymmetric-pad-not-counted",
        _avg_pool_asymmetric_exclude_pad,
        {"nn.pad", "nn.avg_pool2d", "divide"},
        [],
    ),
    ("gemm-transposes-alpha-beta", _gemm_all_attributes, {"transpose", "nn.dense", "multiply", "nn.bias_add"}, []),
    ("clip-run-time-bounds", _clip_runtime_bounds, {"maximum", "minimum"}, []),
    ("reduce-axes-input", _reduce_axes_input_keepdims, {"mean"}, []),
    ("resize-nearest-half-pixel-ceil", _resize_nearest_exact, {"image.resize2d"}, []),
    ("resize-linear-asymmetric", _resize_linear_asymmetric, None, []),
    ("reshape-from-data-runs-in-onnxruntime", _reshape_from_data, set(), ["onnx.Reshape"]),
    ("unsupported-op-on-constants-folds", _unsupported_op_on_constants_folds, {"add"}, []),
]


@pytest.mark.parametrize("make, ops, opaque", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_import_matches_onnxruntime(make, ops, opaque):
    model = make()
    graph = from_onnx(model)
    assert sorted(n.op for n in graph.opaque_nodes()) == opaque, str(graph)
    if ops is not None:
        assert {n.op for n in graph.nodes if not n.opdef.opaque} == ops, str(graph)
    dynamic = any(isinstance(d, Sym) for v in graph.inputs for d in v.type.shape)
    for batch in (1, 3) if dynamic else (2,):
        assert_matches_onnxruntime(graph, model, _batch_inputs(model, batch))


def test_shape_chain_becomes_a_symbolic_attribute():
    graph = from_onnx(_shape_chain_reshape())
    assert graph.inputs[0].type.shape == (BATCH, 3, 4)
    (reshape,) = graph.nodes
    assert reshape.attrs["newshape"] == (BATCH, -1)
    assert graph.outputs[0].type.shape == (BATCH, 12)


def test_nodes_no_output_depends_on_are_erased():
    # onnxruntime drops them too; left in the graph, they would run in PyTorch or in an engine region of their own
    nodes = [node("Relu", ["x"], ["r"]), node("Shrink", ["r"], ["unread"]), node("Neg", ["x"], ["y"])]
    graph = from_onnx(make_model(nodes, [("x", FLOAT, ["N", 3])], [("y", FLOAT, None)]))
    assert [n.op for n in graph.nodes] == ["negative"] and not graph.constants


# -- the opaque path and the whole-model check ----------------------------------------------------


def _mixed_unsupported_model():
    """Hardmax and Shrink (standard ops without a converter) and a custom op of another domain."""
    nodes = [
        node("Relu", ["x"], ["r"]),
        node("Hardmax", ["r"], ["h"], axis=1, name="hardmax"),
        node("Shrink", ["h"], ["c"], name="shrink"),
        node("Gelu", ["c"], ["g"], domain="com.microsoft", name="ms_gelu"),
        node("Shrink", ["g"], ["y"], lambd=0.1, name="shrink_again"),
    ]
    return make_model(nodes, [("x", FLOAT, ["N", 5])], [("y", FLOAT, ["N", 5])], extra_opsets=[("com.microsoft", 1)])


def test_every_unsupported_node_is_reported_at_once():
    found = check_onnx_model(_mixed_unsupported_model())
    assert [(u.node, u.op_type, u.domain) for u in found] == [
        ("hardmax", "Hardmax", ""),
        ("shrink", "Shrink", ""),
        ("ms_gelu", "Gelu", "com.microsoft"),
        ("shrink_again", "Shrink", ""),
    ]
    assert found[0].version == 13 and "no converter for Hardmax-13" in found[0].reason
    assert "custom op" in found[2].reason
    with pytest.raises(OnnxImportError) as err:
        from_onnx(_mixed_unsupported_model(), strict=True)
    for name in ("hardmax", "shrink", "ms_gelu", "shrink_again"):
        assert repr(name) in str(err.value)


def test_unsupported_nodes_run_through_onnxruntime(caplog):
    model = _mixed_unsupported_model()
    with caplog.at_level("WARNING", logger="tensorforge"):
        graph = from_onnx(model)
    assert "4 ONNX node(s) have no IR mapping" in caplog.text  # one warning, every node in it
    assert [n.op for n in graph.opaque_nodes()] == [
        "onnx.Hardmax",
        "onnx.Shrink",
        "onnx.com.microsoft.Gelu",
        "onnx.Shrink",
    ]
    assert graph.opaque_nodes()[0].attrs["reason"].startswith("no converter for Hardmax-13")
    assert graph.outputs[0].type.shape == (BATCH, 5)
    for batch in (1, 4):
        assert_matches_onnxruntime(graph, model, [torch.randn(batch, 5)])


def test_opaque_nodes_stay_out_of_the_engine_and_the_plan_runs():
    model = _mixed_unsupported_model()
    graph, config = tensorforge.partition_for_tensorforge(from_onnx(model), use_implicit_batch=False)
    reasons = config.report.reasons()
    assert set(reasons) >= {"onnx.Hardmax", "onnx.Shrink", "onnx.com.microsoft.Gelu"}
    assert "nn.relu" not in reasons  # the mapped node did go to the engine
    assert all("runs through onnxruntime" in reason for reason in reasons["onnx.Hardmax"])
    module = tensorforge.build(graph, config, device="cpu")
    x = torch.randn(3, 5)
    torch.testing.assert_close(module(x), onnxruntime_outputs(model, [x])[0], rtol=1e-5, atol=1e-5)


def test_opaque_nodes_survive_save_and_load(tmp_path):
    model = _mixed_unsupported_model()
    graph = from_onnx(model)
    ir.save(graph, tmp_path / "g.tfir")
    loaded = ir.load(tmp_path / "g.tfir").verify()
    assert str(loaded) == str(graph)
    assert_matches_onnxruntime(loaded, model, [torch.randn(2, 5)])


def test_control_flow_runs_through_onnxruntime_with_the_values_its_branches_read():
    # the branches read %r from the enclosing graph: the opaque node takes it as an extra input
    then_branch = helper.make_graph(
        [node("Relu", ["r"], ["t"])], "then", [], [helper.make_tensor_value_info("t", FLOAT, None)]
    )
    else_branch = helper.make_graph(
        [node("Neg", ["r"], ["e"])], "else", [], [helper.make_tensor_value_info("e", FLOAT, None)]
    )
    nodes = [
        node("Exp", ["x"], ["r"]),
        node("Greater", ["c", "zero"], ["cond"]),
        node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="branch"),
    ]
    model = make_model(
        nodes, [("x", FLOAT, ["N", 3]), ("c", FLOAT, [])], [("y", FLOAT, ["N", 3])], [("zero", np.array(0, np.float32))]
    )
    graph = from_onnx(model)
    (opaque,) = graph.opaque_nodes()
    assert opaque.op == "onnx.If" and opaque.attrs["input_names"] == ("cond", "r")
    for c in (1.0, -1.0):
        assert_matches_onnxruntime(graph, model, [torch.randn(2, 3), torch.tensor(c)])


def _branch(nodes, output, name):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, FLOAT, None)])


def _if_on_shape_model():
    """A branch chosen by a size, the way exporters test shapes: If(Equal(Gather(Shape(x), 1), 1))."""
    then_branch = _branch(
        [node("ReduceMean", ["x"], ["t0"], axes=[1], keepdims=0), node("Relu", ["t0"], ["t"])], "t", "then"
    )
    else_branch = _branch([node("ReduceSum", ["x", "one"], ["e"], keepdims=0)], "e", "else")
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "one_scalar"], ["d"], axis=0),
        node("Equal", ["d", "one_scalar"], ["cond"]),
        node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="squeeze_if"),
    ]

    def make(width):
        return make_model(
            nodes,
            [("x", FLOAT, ["N", width, 5])],
            [("y", FLOAT, None)],
            [("one", np.array([1], np.int64)), ("one_scalar", np.array(1, np.int64))],
        )

    return make


@pytest.mark.parametrize("width, taken", [(1, {"mean", "nn.relu"}), (3, {"sum"})])
def test_if_on_shapes_folds_into_its_taken_branch(width, taken):
    model = _if_on_shape_model()(width)
    graph = from_onnx(model, strict=True)
    assert graph.opaque_nodes() == [] and {n.op for n in graph.nodes} == taken, str(graph)
    assert graph.outputs[0].type.shape == (BATCH, 5)
    for batch in (1, 3):
        assert_matches_onnxruntime(graph, model, [torch.randn(batch, width, 5)])


# every since-version of If (ONNX's one tensor If case is written at opset 11; the conformance table names these)
@pytest.mark.parametrize("opset", [11, 13, 16, 19, 21, 23, 24, 25])
def test_if_on_a_constant_nested_in_a_taken_branch_folds_too(opset):
    inner = helper.make_node(
        "If",
        ["inner_cond"],
        ["i"],
        then_branch=_branch([node("Neg", ["x"], ["n"])], "n", "t"),
        else_branch=_branch([node("Exp", ["x"], ["ex"])], "ex", "e"),
    )
    outer_then = _branch(
        [
            node("Constant", [], ["inner_cond"], value=helper.make_tensor("v", onnx.TensorProto.BOOL, [], [False])),
            inner,
            node("Relu", ["i"], ["r"]),
        ],
        "r",
        "outer_then",
    )
    outer_else = _branch([node("Sigmoid", ["x"], ["sg"])], "sg", "outer_else")
    model = make_model(
        [
            node("Greater", ["two", "one"], ["c"]),
            node("If", ["c"], ["y"], then_branch=outer_then, else_branch=outer_else),
        ],
        [("x", FLOAT, ["N", 4])],
        [("y", FLOAT, None)],
        [("one", np.array(1.0, np.float32)), ("two", np.array(2.0, np.float32))],
        opset=opset,
    )
    model.ir_version = max(helper.find_min_ir_version_for(list(model.opset_import)), 8)
    graph = from_onnx(model, strict=True)
    assert [n.op for n in graph.nodes] == ["exp", "nn.relu"]
    assert_matches_onnxruntime(graph, model, [torch.randn(2, 4)])


def _if_on_data_model():
    """A run-time condition; shape inference cannot type the output (the else branch reshapes by a computed shape)."""
    then_branch = _branch([node("Flatten", ["x"], ["t"], axis=1)], "t", "then")
    else_branch = _branch(
        [
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "zero"], ["n"], axis=0),
            node("Unsqueeze", ["n", "axes"], ["n1"]),
            node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
            node("Reshape", ["x", "shape"], ["e0"]),
            node("Neg", ["e0"], ["e"]),
        ],
        "e",
        "else",
    )
    nodes = [
        node("ReduceMax", ["x"], ["m"], keepdims=0),
        node("Greater", ["m", "zero_f"], ["cond"]),
        node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="data_if"),
    ]
    init = [
        ("zero", np.array(0, np.int64)),
        ("axes", np.array([0], np.int64)),
        ("minus_one", np.array([-1], np.int64)),
        ("zero_f", np.array(0.0, np.float32)),
    ]
    return make_model(nodes, [("x", FLOAT, ["N", 3, 4])], [("y", FLOAT, None)], init)


def test_if_on_data_runs_through_onnxruntime_typed_from_its_branches(monkeypatch):
    from tensorforge.frontends import onnx as onnx_frontend

    def no_probing(*args, **kwargs):
        raise AssertionError("an If's output types come from its branches, not from running it")

    monkeypatch.setattr(onnx_frontend._Importer, "_probe_types", no_probing)
    model = _if_on_data_model()
    graph = from_onnx(model)
    (opaque,) = graph.opaque_nodes()
    assert opaque.op == "onnx.If" and "computed at run time" in opaque.attrs["reason"]
    assert graph.outputs[0].type.shape == (BATCH, 12)
    for batch, sign in ((1, 1.0), (3, -1.0)):  # a positive input takes the then branch, a negative one the else
        assert_matches_onnxruntime(graph, model, [sign * (torch.rand(batch, 3, 4) + 0.1)])


def test_if_whose_branches_disagree_on_types_is_refused():
    then_branch = _branch([node("Flatten", ["x"], ["t"], axis=1)], "t", "then")
    else_branch = _branch([node("Flatten", ["x"], ["e"], axis=2)], "e", "else")
    model = make_model(
        [
            node("Greater", ["c", "zero"], ["cond"]),
            node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="mixed"),
        ],
        [("x", FLOAT, [2, 3, 4]), ("c", FLOAT, [])],
        [("y", FLOAT, None)],
        [("zero", np.array(0, np.float32))],
    )
    with pytest.raises(
        OnnxImportError,
        match=r"node 'mixed' \(If\): its branches give different output types "
        r"\(output 0: then f32\[2,12\], else f32\[6,4\]\)",
    ):
        from_onnx(model)


def test_data_dependent_output_shape_is_probed_through_onnxruntime():
    # NonZero's output size depends on the data: shape inference leaves it open, and running the node on two
    # samples shows it, so the import says so instead of guessing a type
    model = make_model([node("NonZero", ["x"], ["y"])], [("x", FLOAT, ["N", 3])], [("y", INT64, None)])
    with pytest.raises(OnnxImportError, match="NonZero.*depend on the data"):
        from_onnx(model)


# -- the registry ---------------------------------------------------------------------------------


def test_registering_a_key_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        onnx_converter("Relu", since=14)(lambda ctx, *, X: X)  # noqa: N803 - ONNX's input name


def test_registration_checks_the_since_version():
    with pytest.raises(ValueError, match="not a since-version of Relu: opset 15 resolves to Relu-14"):
        onnx_converter("Relu", since=15)(lambda ctx, *, X: X)  # noqa: N803
    with pytest.raises(ValueError, match="custom op names its inputs"):
        onnx_converter("Triple", since=1, domain="com.tensorforge.test")(lambda ctx, *, X: X)  # noqa: N803


def test_a_since_version_newer_than_the_installed_onnx_is_left_out():
    """Range-27 under onnx 1.21 (whose opsets end before 27): tensorforge still imports, that version unregistered."""
    from tensorforge.frontends.onnx_ops import registry

    newer = registry._known("") + 1
    before = dict(registry._CONVERTERS)
    onnx_converter("Relu", since=newer)(lambda ctx, *, X: X)  # noqa: N803
    assert before == registry._CONVERTERS


def test_an_older_since_version_binds_its_inputs_by_position():
    # BatchNormalization-9 (opsets 9-13) names its statistics mean/var; the converter takes input_mean/input_var
    rng = np.random.RandomState(0)
    stats = [(name, rng.rand(4).astype(np.float32) + 0.5) for name in ("scale", "bias", "mean", "var")]
    model = make_model(
        [node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3)],
        [("x", FLOAT, ["N", 4, 3, 3])],
        [("y", FLOAT, None)],
        stats,
        opset=13,
    )
    graph = from_onnx(model, strict=True)
    assert [n.op for n in graph.nodes] == ["nn.batch_norm"]
    assert_matches_onnxruntime(graph, model, [torch.randn(2, 4, 3, 3)])


def test_group_normalization_18_scales_per_group():
    # GroupNormalization-18 (deprecated by 21, which scales per channel) takes one scale and bias per group;
    # onnx.checker refuses deprecated ops, so no conformance case reaches it, but onnxruntime runs it
    rng = np.random.RandomState(0)
    params = [("scale", rng.rand(2).astype(np.float32) + 0.5), ("bias", rng.rand(2).astype(np.float32))]
    model = make_model(
        [node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=2, epsilon=1e-5)],
        [("x", FLOAT, ["N", 6, 5])],
        [("y", FLOAT, ["N", 6, 5])],
        params,
        opset=18,
    )
    graph = from_onnx(model, strict=True)
    assert graph.opaque_nodes() == []
    assert_matches_onnxruntime(graph, model, [torch.randn(3, 6, 5)])


def test_registration_checks_the_signature_against_every_since_version():
    # Hardmax-1/11/13 (no converter is registered for it) take `input` and the attribute `axis`
    with pytest.raises(ValueError, match=r"Hardmax-13: input 0 \('input'\) has no parameter"):
        onnx_converter("Hardmax", since=13)(lambda ctx, *, X, axis: X)  # noqa: N803
    with pytest.raises(ValueError, match=r"Hardmax-11: no parameter for the attribute\(s\) \['axis'\]"):
        onnx_converter("Hardmax", since=(11, 13))(lambda ctx, *, input: input)  # noqa: A006 - ONNX's input name
    with pytest.raises(ValueError, match=r"Hardmax-13: the schema gives no \['keepdims'\]; give them defaults"):
        onnx_converter("Hardmax", since=13)(lambda ctx, *, input, axis, keepdims: input)  # noqa: A006
    assert mapped_versions("Hardmax") == []  # nothing half-registered


def test_custom_domain_converter_is_used():
    @onnx_converter("ScaleBy", since=1, domain="com.tensorforge.test", inputs=("X",))
    def scale_by(ctx, *, X, factor=2.0):  # noqa: N803
        return ctx.emit("multiply", X, ctx.const(float(factor)))

    model = make_model(
        [node("ScaleBy", ["x"], ["y"], domain="com.tensorforge.test", factor=3.0)],
        [("x", FLOAT, ["N", 4])],
        [("y", FLOAT, ["N", 4])],
        extra_opsets=[("com.tensorforge.test", 1)],
    )
    assert check_onnx_model(model) == []
    graph = from_onnx(model)
    assert [n.op for n in graph.nodes] == ["multiply"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(ir.execute(graph, x)[0], 3 * x)


def test_a_converter_bug_is_caught_at_import():
    @onnx_converter("WrongShape", since=1, domain="com.tensorforge.test", inputs=("X",))
    def wrong_shape(ctx, *, X):  # noqa: N803
        return ctx.emit("transpose", X, axes=(1, 0))  # the declared output is not transposed

    model = make_model(
        [node("WrongShape", ["x"], ["y"], domain="com.tensorforge.test")],
        [("x", FLOAT, [2, 3])],
        [("y", FLOAT, [2, 3])],
        extra_opsets=[("com.tensorforge.test", 1)],
    )
    with pytest.raises(OnnxImportError, match="converter bug"):
        from_onnx(model)


def test_a_converter_that_gives_up_leaves_nothing_behind():
    # com.microsoft.QuickGelu: an op onnxruntime runs (the node must load there once the converter gives up)
    @onnx_converter("QuickGelu", since=1, domain="com.microsoft", inputs=("X",))
    def gives_up(ctx, *, X, alpha=1.702):  # noqa: N803
        ctx.emit("exp", ctx.emit("add", X, ctx.const(torch.ones(3))))
        raise Unsupported("changed its mind")

    model = make_model(
        [node("QuickGelu", ["x"], ["y"], domain="com.microsoft")],
        [("x", FLOAT, [2, 3])],
        [("y", FLOAT, [2, 3])],
        extra_opsets=[("com.microsoft", 1)],
    )
    graph = from_onnx(model)
    assert [(n.op, n.attrs["reason"]) for n in graph.nodes] == [("onnx.com.microsoft.QuickGelu", "changed its mind")]
    assert graph.constants == {}
    assert_matches_onnxruntime(graph, model, [torch.randn(2, 3)])


# -- refused models and typed inputs --------------------------------------------------------------


def test_an_opset_9_model_is_converted_and_imports():
    """Model zoos still ship opset 7-9 files: onnx's version converter brings them to 11 (here Upsample-9 becomes
    Resize, and BatchNormalization loses its old attributes), and the result must match onnxruntime on the original."""
    rng = np.random.default_rng(0)
    inits = [(name, rng.standard_normal(4).astype(np.float32)) for name in ("s", "b", "m")]
    inits += [("v", rng.uniform(0.5, 2, 4).astype(np.float32)), ("scales", np.array([1, 1, 2, 2], np.float32))]
    model = make_model(
        [
            node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
            node("Relu", ["n"], ["r"]),
            node("Upsample", ["r", "scales"], ["y"], mode="nearest"),
        ],
        [("x", FLOAT, [1, 4, 3, 3])],
        [("y", FLOAT, [1, 4, 6, 6])],
        opset=9,
        initializers=inits,
    )
    graph = from_onnx(model, dynamic_batch=False)
    assert not any(n.op.startswith("onnx.") for n in graph.nodes), "everything mapped after the conversion"
    assert_matches_onnxruntime(graph, model, [torch.randn(1, 4, 3, 3)])


def test_an_old_opset_the_converter_cannot_take_is_refused_naming_why():
    model = make_model([node("Relu", ["x"], ["y"])], [("x", FLOAT, [2])], [("y", FLOAT, [2])], opset=9)
    model.opset_import[0].version = 0  # no version converter adapter starts there
    with pytest.raises(OnnxImportError):
        from_onnx(model)


def test_symbolic_non_batch_axis_is_kept_or_needs_a_size_without_dynamic_shapes():
    model = make_model([node("Relu", ["x"], ["y"])], [("x", FLOAT, ["N", "seq"])], [("y", FLOAT, None)])
    assert from_onnx(model).inputs[0].type.shape == (BATCH, SymExpr.symbol("seq"))  # named as in the file
    with pytest.raises(OnnxImportError, match=r"(?s)input 'x' axis 1 is symbolic \('seq'\).*input_shapes"):
        from_onnx(model, dynamic_shapes=False)
    graph = from_onnx(model, input_shapes={"x": (-1, 7)})
    assert graph.inputs[0].type.shape == (BATCH, 7)
    graph = from_onnx(model, dynamic_batch=False, input_shapes={"x": (2, 7)})
    assert graph.inputs[0].type.shape == (2, 7)


def test_symbolic_batch_without_dynamic_batch_needs_a_size():
    model = make_model([node("Relu", ["x"], ["y"])], [("x", FLOAT, ["N", 4])], [("y", FLOAT, None)])
    with pytest.raises(OnnxImportError, match=r"axis 0 is symbolic \('N'\) \(dynamic_batch=False\)"):
        from_onnx(model, dynamic_batch=False, dynamic_shapes=False)
    assert from_onnx(model, dynamic_batch=False).inputs[0].type.shape == (
        SymExpr.symbol("N"),
        4,
    )  # named as in the file
    assert from_onnx(model).inputs[0].type.shape == (BATCH, 4)


def test_initializer_listed_as_graph_input_is_a_constant():
    model = make_model(
        [node("Add", ["x", "w"], ["y"])],
        [("x", FLOAT, [2, 3]), ("w", FLOAT, [3])],
        [("y", FLOAT, None)],
        [("w", np.ones(3, np.float32))],
    )
    graph = from_onnx(model)
    assert [v.name for v in graph.inputs] == ["x"]
    assert len(graph.constants) == 1


def test_local_functions_are_inlined():
    function = helper.make_function(
        "local",
        "Swish",
        ["X"],
        ["Y"],
        [node("Sigmoid", ["X"], ["s"]), node("Mul", ["X", "s"], ["Y"])],
        [helper.make_opsetid("", 17)],
    )
    model = make_model(
        [node("Swish", ["x"], ["y"], domain="local")],
        [("x", FLOAT, ["N", 4])],
        [("y", FLOAT, None)],
        extra_opsets=[("local", 1)],
        functions=[function],
    )
    graph = from_onnx(model)
    assert graph.opaque_nodes() == [] and {n.op for n in graph.nodes} == {"sigmoid", "multiply"}
    assert_matches_onnxruntime(graph, model, [torch.randn(3, 4)])


def test_external_data_model_loads(tmp_path):
    w = np.random.RandomState(0).randn(64, 32).astype(np.float32)
    model = make_model([node("MatMul", ["x", "w"], ["y"])], [("x", FLOAT, ["N", 64])], [("y", FLOAT, None)], [("w", w)])
    path = tmp_path / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (tmp_path / "weights.bin").stat().st_size == w.nbytes
    x = torch.randn(3, 64)
    for graph in (
        from_onnx(path),  # a path: the data is found next to it
        from_onnx(onnx.load(str(path), load_external_data=False), base_dir=str(tmp_path)),
    ):
        torch.testing.assert_close(ir.execute(graph, x)[0], x @ torch.from_numpy(w), rtol=1e-5, atol=1e-5)


def test_op_table_lists_every_converter_with_its_restrictions():
    from tensorforge.frontends.onnx_ops import onnx_op_table, registered_converters

    rows = {(r["domain"], r["op"]): r for r in onnx_op_table()}
    for (domain, op, version), conv in registered_converters().items():
        row = rows[(domain or "ai.onnx", op)]
        assert str(version) in row["versions"].split(", ")
        if conv.check is not None and version == max(
            c.since for (d, o, _), c in registered_converters().items() if (d, o) == (domain, op)
        ):
            assert row["restriction"], f"{op}: a check without a docstring leaves the table's restriction empty"
    assert rows[("ai.onnx", "Reshape")]["restriction"] == "the target shape known at import"
