"""Invalid ONNX models are refused with `OnnxImportError`, every problem named; valid ones that onnx.checker is
too strict about still import; onnxruntime never writes to stdout.

The model is checked whole before import (`frontends/onnx_validate.py`): `onnx.checker.check_model(full_check=True)`
plus the rules it leaves out. Anything that still goes wrong during import is an `OnnxImportError` naming the
node. The mutation test at the end edits a small valid model at random (fixed seed) and holds the importer to
onnxruntime: what onnxruntime refuses to load is refused, what both accept computes the same.
"""

from __future__ import annotations

import os
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_helpers import FLOAT, assert_matches_onnxruntime, make_model

from tensorforge import ir
from tensorforge.frontends import from_onnx
from tensorforge.frontends.onnx import OnnxImportError
from tensorforge.frontends.onnx_opaque import onnxruntime_session
from tensorforge.frontends.onnx_validate import SWITCH_ATTRIBUTES

node = helper.make_node


def _convnet() -> onnx.ModelProto:
    """Conv -> Relu -> global pool -> Flatten -> Gemm, named nodes, every output typed (a valid model)."""
    rng = np.random.RandomState(0)
    nodes = [
        node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
        node("Relu", ["c"], ["r"], name="relu"),
        node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1, name="fc"),
    ]
    init = [
        ("w", rng.randn(4, 3, 3, 3).astype(np.float32) * 0.3),
        ("b", rng.randn(4).astype(np.float32)),
        ("fc_w", rng.randn(5, 4).astype(np.float32)),
        ("fc_b", rng.randn(5).astype(np.float32)),
    ]
    return make_model(nodes, [("x", FLOAT, ["N", 3, 6, 6])], [("y", FLOAT, ["N", 5])], init)


def _loads_in_onnxruntime(model: onnx.ModelProto) -> bool:
    try:
        onnxruntime_session(model.SerializeToString())
        return True
    except Exception:  # noqa: BLE001
        return False


def _edit(edit):
    model = _convnet()
    edit(model)
    return model


def _by_name(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _float_kernel_shape(model):
    attr = _by_name(model, "conv").attribute
    for i, a in enumerate(attr):
        if a.name == "kernel_shape":
            attr[i].CopyFrom(helper.make_attribute("kernel_shape", [3.0, 3.0]))


def _truncate(model):
    model.graph.initializer[1].raw_data = model.graph.initializer[1].raw_data[:-3]


def _recursive_function(model):
    loop = helper.make_function(
        "local",
        "Loopy",
        ["X"],
        ["Y"],
        [node("Loopy", ["X"], ["Y"], domain="local")],
        [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )
    model.functions.append(loop)
    model.opset_import.append(helper.make_opsetid("local", 1))
    _by_name(model, "relu").op_type, _by_name(model, "relu").domain = "Loopy", "local"


# (id, edit, pattern the message must match): each model onnxruntime refuses too
INVALID = [
    (
        "float-kernel-shape",
        _float_kernel_shape,
        r"node 'conv' \(Conv\): Mismatched attribute type in "
        r"'conv : kernel_shape'\. Expected: 'INTS', actual: 'FLOATS'",
    ),
    (
        "opset-99",
        lambda m: setattr(m.opset_import[0], "version", 99),
        r"opset_import: domain 'ai.onnx' version 99 is newer than onnx [\d.]+ knows \(up to \d+\)",
    ),
    (
        "negative-initializer-dim",
        lambda m: m.graph.initializer[1].dims.__setitem__(0, -4),
        r"initializer 'b': .*[Nn]egative",
    ),
    (
        "duplicate-node-names",
        lambda m: setattr(_by_name(m, "pool"), "name", "relu"),
        r"node names must be unique in a graph \(onnxruntime refuses the model\): 'relu'",
    ),
    ("truncated-initializer", _truncate, r"initializer 'b': its data does not decode to dims \[4\]"),
    (
        "required-input-missing",
        lambda m: _by_name(m, "conv").input.__setitem__(1, ""),
        r"input 1 is marked single but has an empty string",
    ),
    (
        "unknown-default-domain-op",
        lambda m: setattr(_by_name(m, "relu"), "op_type", "Relu6"),
        r"node 'relu' \(Relu6\): No Op registered for Relu6",
    ),
    (
        "dangling-input",
        lambda m: _by_name(m, "pool").input.__setitem__(0, "nothing"),
        r"input 'nothing' of node.*is not output of any previous nodes",
    ),
    ("recursive-function", _recursive_function, r"Cycle detected in model-local function references"),
    (
        "ir-version-beyond-any",
        lambda m: setattr(m, "ir_version", 1 << 62),
        r"ir_version 4611686018427387904 is not one onnx [\d.]+ knows",
    ),
    (
        "type-mismatch",
        lambda m: m.graph.initializer[3].CopyFrom(numpy_helper.from_array(np.ones(5, np.int64), "fc_b")),
        r"\(op_type:Gemm, node name: fc\): C has inconsistent type tensor\(int64\)",
    ),
]


@pytest.mark.parametrize("edit, pattern", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_model_is_refused_naming_the_problem(edit, pattern):
    model = _edit(edit)
    assert not _loads_in_onnxruntime(model), "the edit should make a model onnxruntime refuses"
    with pytest.raises(OnnxImportError, match=pattern):
        from_onnx(model)


def test_a_local_function_named_like_a_standard_op_is_refused():
    """onnxruntime runs the standard Add, not the model's function `Add` (whose body is Identity): an importer that
    inlined the function would answer differently (the fuzzing suite's long run found 59 such answers)."""

    def shadow(model):
        model.functions.append(
            helper.make_function(
                "", "Add", ["A", "B"], ["C"], [node("Identity", ["A"], ["C"])], [helper.make_opsetid("", 17)]
            )
        )

    model = _edit(shadow)
    with pytest.raises(OnnxImportError, match=r"function 'ai.onnx.Add' has the name of a standard ONNX operator"):
        from_onnx(model)


def test_an_input_the_ir_cannot_hold_is_named():
    model = make_model(
        [node("Identity", ["x"], ["y"])], [("x", TensorProto.UINT16, [2])], [("y", TensorProto.UINT16, [2])]
    )
    with pytest.raises(OnnxImportError, match=r"input 'x' is UINT16, which the IR cannot hold"):
        from_onnx(model)


def test_an_error_inside_a_standard_ops_function_body_is_onnxs_own():
    # onnx's inference of MeanVarianceNormalization-13's function body fails (its Constant), so onnx.checker
    # refuses every such model; onnxruntime runs the op with its own kernel, and so does the import
    model = make_model(
        [node("MeanVarianceNormalization", ["x"], ["y"])],
        [("x", FLOAT, [2, 3, 4, 4])],
        [("y", FLOAT, [2, 3, 4, 4])],
        opset=13,
    )
    with pytest.raises(Exception, match="One and only one of the attributes"):
        onnx.checker.check_model(model, full_check=True)
    graph = from_onnx(model)
    assert [n.op for n in graph.opaque_nodes()] == ["onnx.MeanVarianceNormalization"]
    assert_matches_onnxruntime(graph, model, [torch.randn(2, 3, 4, 4)])


def test_undecodable_bytes_are_refused():
    data = _convnet().SerializeToString()
    with pytest.raises(OnnxImportError, match=r"cannot read the ONNX model.*DecodeError"):
        from_onnx(data[: len(data) // 2] + b"\xff\xff\xff")


def test_every_problem_is_reported_at_once():
    def three_problems(model):
        _float_kernel_shape(model)
        model.graph.initializer[1].dims[0] = -4
        _by_name(model, "pool").name = "relu"

    with pytest.raises(OnnxImportError) as err:
        from_onnx(_edit(three_problems))
    message = str(err.value)
    assert message.startswith("the model is not valid ONNX (3 problem(s)")
    for part in ("'conv' (Conv): Mismatched attribute type", "initializer 'b'", "node names must be unique"):
        assert part in message


# -- node names: what onnxruntime refuses, found by trying it (onnxruntime 1.32) --------------------------


def _named(op, inputs, outputs, name, **attrs):
    return node(op, inputs, outputs, name=name, **attrs)


def _names_model(nodes, functions=()):
    """x (2, 3) -> y (2, 3) through `nodes`; an If's condition is the input `cond`."""
    inputs = [("x", FLOAT, [2, 3])] + [("cond", TensorProto.BOOL, [])] * any(n.op_type == "If" for n in nodes)
    opsets = [("local", 1)] if functions else []
    return make_model(nodes, inputs, [("y", FLOAT, [2, 3])], opset=17, extra_opsets=opsets, functions=functions)


def _if(then_nodes, else_nodes, name="if"):
    def branch(nodes, label):
        return helper.make_graph(nodes, label, [], [helper.make_tensor_value_info(nodes[-1].output[0], FLOAT, [2, 3])])

    return _named(
        "If", ["cond"], ["y"], name, then_branch=branch(then_nodes, "then"), else_branch=branch(else_nodes, "else")
    )


def _function(name, nodes, calls=()):
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid("local", 1)] * bool(calls)
    return helper.make_function("local", name, ["i"], ["o"], nodes, opsets)


def _one(value):
    return helper.make_tensor("one", FLOAT, [], [value])


_RELU_NEG = [_named("Relu", ["i"], ["m"], "a"), _named("Neg", ["m"], ["o"], "a")]  # a function body, names clash
# (id, model, pattern of the refusal; None: onnxruntime runs it, and so does the import)
NODE_NAMES = [
    (
        "two-nodes-of-the-graph",
        lambda: _names_model([_named("Relu", ["x"], ["r"], "a"), _named("Neg", ["r"], ["y"], "a")]),
        r"node names must be unique in a graph \(onnxruntime refuses the model\): 'a' names several nodes",
    ),
    (
        "two-nodes-of-one-branch",
        lambda: _names_model(
            [
                _if(
                    [_named("Relu", ["x"], ["t"], "a"), _named("Neg", ["t"], ["t2"], "a")],
                    [_named("Neg", ["x"], ["e"], "b")],
                )
            ]
        ),
        r"subgraph 'then_branch' of node 'if': node names must be unique in a graph .*'a' names several nodes",
    ),
    (
        "two-nodes-of-a-called-function",
        lambda: _names_model([_named("F", ["x"], ["y"], "call", domain="local")], [_function("F", _RELU_NEG)]),
        r"function 'local.F': node names must be unique in a graph .*'a' names several nodes",
    ),
    (
        "two-nodes-of-a-function-a-function-calls",
        lambda: _names_model(
            [_named("F", ["x"], ["y"], "call", domain="local")],
            [_function("F", [_named("G", ["i"], ["o"], "g", domain="local")], calls=True), _function("G", _RELU_NEG)],
        ),
        r"function 'local.G': node names must be unique",
    ),
    # onnxruntime makes Constant nodes initializers before it compares names (silero-vad's OpenVINO export
    # names 15 of them 'F0::anon')
    (
        "constants-named-alike",
        lambda: _names_model(
            [
                _named("Constant", [], ["c1"], "k", value=_one(2.0)),
                _named("Constant", [], ["c2"], "k", value_float=3.0),
                _named("Mul", ["x", "c1"], ["m"], "k"),
                _named("Add", ["m", "c2"], ["y"], "add"),
            ]
        ),
        None,
    ),
    (
        "constants-named-alike-in-a-function",
        lambda: _names_model(
            [_named("F", ["x"], ["y"], "call", domain="local")],
            [
                _function(
                    "F", [_named("Constant", [], ["c"], "a", value_float=2.0), _named("Mul", ["i", "c"], ["o"], "a")]
                )
            ],
        ),
        None,
    ),
    ("unnamed-nodes", lambda: _names_model([node("Relu", ["x"], ["r"]), node("Neg", ["r"], ["y"])]), None),
    (
        "one-name-in-two-branches",
        lambda: _names_model([_if([_named("Relu", ["x"], ["t"], "a")], [_named("Neg", ["x"], ["e"], "a")])]),
        None,
    ),
    (
        "a-branch-node-named-like-the-if",
        lambda: _names_model([_if([_named("Relu", ["x"], ["t"], "a")], [_named("Neg", ["x"], ["e"], "b")], name="a")]),
        None,
    ),
    (
        "a-function-called-twice",
        lambda: _names_model(
            [_named("F", ["x"], ["r"], "c1", domain="local"), _named("F", ["r"], ["y"], "c2", domain="local")],
            [_function("F", [_named("Relu", ["i"], ["o"], "a")])],
        ),
        None,
    ),
    (
        "a-function-nothing-calls",
        lambda: _names_model([_named("Relu", ["x"], ["y"], "r")], [_function("F", _RELU_NEG)]),
        None,
    ),
]


@pytest.mark.parametrize("make, pattern", [c[1:] for c in NODE_NAMES], ids=[c[0] for c in NODE_NAMES])
def test_node_names_clash_where_onnxruntime_says_they_do(make, pattern):
    model = make()
    assert _loads_in_onnxruntime(model) == (pattern is None), "onnxruntime's verdict changed: revisit the rule"
    if pattern is not None:
        with pytest.raises(OnnxImportError, match=pattern):
            from_onnx(model)
        return
    graph = from_onnx(model)
    inputs = [torch.randn(2, 3)] + [torch.tensor(flag) for flag in (True,) if len(graph.inputs) > 1]
    assert_matches_onnxruntime(graph, model, inputs)
    if len(graph.inputs) > 1:  # the If's other branch too
        assert_matches_onnxruntime(graph, model, [inputs[0], torch.tensor(False)])


# switch attributes (0 or 1) given another value: onnxruntime runs them, but tools read them each their own way
def _switch_model(op, **attrs):
    extra = {"ReduceSum": [("axes", np.array([1], np.int64))], "Gemm": [("w", np.ones((4, 3), np.float32))]}[op]
    return make_model(
        [node(op, ["x", extra[0][0]], ["y"], name="n", **attrs)], [("x", FLOAT, [2, 3])], [("y", FLOAT, None)], extra
    )


OUT_OF_RANGE = [
    ("reduce-keepdims-255", lambda: _switch_model("ReduceSum", keepdims=255), "keepdims=255"),
    ("gemm-transB-7", lambda: _switch_model("Gemm", transB=7), "transB=7"),
    (
        "keepdims-minus-1-in-a-branch",
        lambda: _names_model(
            [
                _if(
                    [
                        _named("ReduceMax", ["x"], ["t"], "max", axes=[0, 1], keepdims=-1),
                        _named("Add", ["x", "t"], ["t2"], "add"),
                    ],
                    [_named("Neg", ["x"], ["e"], "neg")],
                )
            ]
        ),
        "subgraph 'then_branch' of node 'if': node 'max' \\(ReduceMax\\): attribute keepdims=-1",
    ),
]


@pytest.mark.parametrize("make, what", [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE])
def test_a_switch_attribute_out_of_its_range_is_named(make, what):
    model = make()
    with pytest.raises(OnnxImportError, match=f"{what} is outside its documented values \\(0 or 1\\)") as err:
        from_onnx(model)
    assert str(err.value).startswith("the model is not valid ONNX (1 problem(s)")  # that one, and nothing else


def test_switch_attributes_are_integer_attributes_onnx_declares():
    declared = {
        name
        for schema in onnx.defs.get_all_schemas_with_history()
        if schema.domain == ""
        for name, attr in schema.attributes.items()
        if attr.type == onnx.defs.OpSchema.AttrType.INT
    }
    assert declared >= SWITCH_ATTRIBUTES, sorted(SWITCH_ATTRIBUTES - declared)


# what onnx.checker refuses but the ONNX spec and onnxruntime accept: these import and match onnxruntime
def _no_output_shape(model):
    model.graph.output[0].type.tensor_type.ClearField("shape")


def _unsorted(model):
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _stale_declared_shapes(model):
    for d, size in zip(model.graph.output[0].type.tensor_type.shape.dim, (7, 9)):
        d.dim_value = size  # declared (7, 9); the model computes (N, 5)
    model.graph.value_info.append(helper.make_tensor_value_info("r", FLOAT, [1, 2, 3, 4]))


def _ai_onnx_domain(model):
    _by_name(model, "relu").domain = "ai.onnx"


TOLERATED = [
    ("output-of-unknown-rank", _no_output_shape),
    ("nodes-out-of-order", _unsorted),
    ("stale-declared-shapes", _stale_declared_shapes),
    ("ai.onnx-domain-name", _ai_onnx_domain),
]


@pytest.mark.parametrize("edit", [c[1] for c in TOLERATED], ids=[c[0] for c in TOLERATED])
def test_what_only_the_checker_refuses_imports(edit):
    model = _edit(edit)
    with pytest.raises(Exception):  # noqa: B017, PT011  (the checker's own verdict: it refuses these)
        onnx.checker.check_model(model, full_check=True)
    assert _loads_in_onnxruntime(model)
    graph = from_onnx(model, strict=True)
    assert graph.outputs[0].type.shape[1:] == (5,)
    for batch in (1, 3):
        assert_matches_onnxruntime(graph, model, [torch.randn(batch, 3, 6, 6)])


def test_a_node_onnxruntime_cannot_load_is_refused_at_import():
    # LayerNormalization with an axis past the rank: onnx.checker accepts it, onnxruntime does not
    model = make_model(
        [node("LayerNormalization", ["x", "s"], ["y"], axis=2**31, name="ln")],
        [("x", FLOAT, [2, 4])],
        [("y", FLOAT, [2, 4])],
        [("s", np.ones(4, np.float32))],
    )
    onnx.checker.check_model(model, full_check=True)
    assert not _loads_in_onnxruntime(model)
    with pytest.raises(
        OnnxImportError,
        match=r"node 'ln' \(LayerNormalization\) runs through onnxruntime, which "
        r"cannot load it",
    ):
        from_onnx(model)


# -- onnxruntime and stdout -----------------------------------------------------------------------


def test_onnxruntime_sessions_print_nothing_on_stdout(capfd, monkeypatch):
    # onnxruntime prints an "EP Error" banner (Python print) when a session falls back to another provider, and
    # native code may write to descriptor 1: stand-in sessions do both, and stdout must stay empty
    def noisy_session(model, options, providers, enable_fallback=1):
        print("*************** EP Error ***************")
        os.write(1, b"native banner\n")
        assert enable_fallback == 0  # the fallback (and its banner) is off
        return type("Session", (), {"disable_fallback": lambda self: None})()

    monkeypatch.setattr(ort, "InferenceSession", noisy_session)
    onnxruntime_session(b"model bytes")
    out, err = capfd.readouterr()
    assert out == "" and "EP Error" in err and "native banner" in err


# -- mutations --------------------------------------------------------------------------------------


def _mutate(rng: random.Random, model: onnx.ModelProto) -> str:
    """One random edit of the kind real files get wrong; returns what it did."""
    nodes, inits = list(model.graph.node), list(model.graph.initializer)
    target = rng.choice(nodes)
    choice = rng.randrange(10)
    if choice == 0:
        attrs = [a for n in nodes for a in n.attribute if a.type == onnx.AttributeProto.INTS]
        attr = rng.choice(attrs)
        values = list(attr.ints)
        attr.CopyFrom(
            rng.choice(
                [
                    helper.make_attribute(attr.name, [float(v) for v in values]),
                    helper.make_attribute(attr.name, [-v for v in values]),
                    helper.make_attribute(attr.name, values[:-1]),
                ]
            )
        )
        return f"attribute {attr.name}"
    if choice == 1:
        model.opset_import[0].version = rng.choice([0, 5, 10, 13, 21, 99, 2**31 - 1])
        return f"opset {model.opset_import[0].version}"
    if choice == 2:
        tensor = rng.choice(inits)
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([-1, 0, 2, 10**6])
        return f"initializer {tensor.name} dims"
    if choice == 3:
        tensor = rng.choice(inits)
        tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data))]
        return f"initializer {tensor.name} truncated"
    if choice == 4:
        target.name = rng.choice([n.name for n in nodes])
        return f"node {target.name} renamed"
    if choice == 5:
        target.input[rng.randrange(len(target.input))] = rng.choice(["", "nowhere", "x", "w"])
        return f"node {target.name} input"
    if choice == 6:
        target.op_type = rng.choice(["Sigmoid", "Conv", "MatMul", "Reshape", "Hardmax", "NoSuchOp", "If"])
        return f"node {target.name} op {target.op_type}"
    if choice == 7:
        rng.shuffle(nodes)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        return "node order"
    if choice == 8:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 2, 5])
        return "input dims"
    tensor = rng.choice(inits)
    tensor.data_type = rng.choice([TensorProto.INT64, TensorProto.FLOAT16, TensorProto.STRING, 99])
    return f"initializer {tensor.name} element type"


def test_mutated_models_are_refused_or_match_onnxruntime(capfd):
    rng = random.Random(20261207)
    outcomes = {"refused": 0, "imported": 0, "compared": 0}
    for case in range(80):
        model = _convnet()
        what = [_mutate(rng, model) for _ in range(rng.choice([1, 1, 1, 2]))]
        loads = _loads_in_onnxruntime(model)
        try:
            graph = from_onnx(model)
        except OnnxImportError:
            outcomes["refused"] += 1
            continue
        outcomes["imported"] += 1
        assert loads, f"case {case} ({what}): onnxruntime refuses the model, the import did not"
        x = torch.randn(2, *[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]])
        try:
            expected = onnxruntime_session(model.SerializeToString()).run(None, {"x": x.numpy()})
        except Exception:  # noqa: BLE001  (loads, fails to run: nothing to compare with)
            continue
        outcomes["compared"] += 1
        for a, e in zip(ir.execute(graph, x), expected):
            torch.testing.assert_close(a, torch.from_numpy(e), rtol=1e-4, atol=1e-5, msg=f"case {case} ({what})")
    # both paths exercised, and imports compared with onnxruntime
    assert outcomes["refused"] >= 10 and outcomes["compared"] >= 5, outcomes
    assert capfd.readouterr().out == ""
