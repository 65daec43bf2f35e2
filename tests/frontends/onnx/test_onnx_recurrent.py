"""LSTM, GRU and RNN, which the IR has no op for: unrolled over a sequence whose length is known at import into one
input projection, a dense of the hidden state per step and pointwise gates. And OneHot: the indices compared with the
classes, selecting on_value or off_value.

Each case is a one-node model (weights as initializers, initial states as graph inputs of a symbolic batch), imported
with no opaque node, partitioned into one engine region, built on the CPU, and compared with onnxruntime at the
float32 tolerance, at two batch sizes. onnxruntime runs no batch-major (layout=1) layer, so those cases are compared
with its run of the layout=0 twin between transposes. The cases the lowering refuses run through onnxruntime, with a
reason that names what they lack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_helpers import (
    FLOAT,
    INT64,
    TOLERANCES,
    assert_matches_onnxruntime,
    make_model,
    one_engine_region,
    onnxruntime_outputs,
)

import tensorforge
from tensorforge import ir
from tensorforge.frontends import from_onnx
from tensorforge.frontends.onnx import OnnxImportError, check_onnx_model
from tensorforge.frontends.onnx_ops import lookup, recurrent

node = helper.make_node

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTPUTS = {"LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h"), "RNN": ("Y", "Y_h")}
INPUT_SIZE, HIDDEN = 5, 6


@dataclass(frozen=True)
class Layer:
    """One recurrent node and its inputs. `read`: the outputs the model reads (None: all of them)."""

    op: str
    direction: str = "forward"
    layout: int = 0
    bias: bool = True
    initial_h: bool = False
    initial_c: bool = False
    peepholes: bool = False
    sequence_lens: np.ndarray | None = None  # an initializer (the batch is then static)
    read: tuple[str, ...] | None = None
    attrs: tuple[tuple[str, object], ...] = ()
    steps: int = 4
    batch: int | str = "N"
    weights_at_run_time: bool = False  # W, R, B fed as graph inputs, as ONNX's own node tests do
    opset: int = 17

    @property
    def directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.read if self.read is not None else OUTPUTS[self.op]


def _weights(layer: Layer) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    rows = GATES[layer.op] * HIDDEN
    d = layer.directions
    out = {
        "W": rng.randn(d, rows, INPUT_SIZE).astype(np.float32),
        "R": (0.5 * rng.randn(d, rows, HIDDEN)).astype(np.float32),
    }
    if layer.bias:
        out["B"] = rng.randn(d, 2 * rows).astype(np.float32)
    if layer.peepholes:
        out["P"] = rng.randn(d, 3 * HIDDEN).astype(np.float32)
    return out


def _model(layer: Layer, layout: int | None = None) -> onnx.ModelProto:
    """The layer's model; with `layout=0` for a batch-major layer, its layout=0 twin between transposes."""
    layout = layer.layout if layout is None else layout
    twin = layout != layer.layout
    seq, batch, d = layer.steps, layer.batch, layer.directions
    x_shape = [batch, seq, INPUT_SIZE] if layer.layout else [seq, batch, INPUT_SIZE]
    state_shape = [batch, d, HIDDEN] if layer.layout else [d, batch, HIDDEN]
    weights = _weights(layer)
    inputs = [("X", FLOAT, x_shape)]
    initializers = []
    for name, array in weights.items():
        if layer.weights_at_run_time and name != "P":
            inputs.append((name, FLOAT, list(array.shape)))
        else:
            initializers.append((name, array))
    if layer.sequence_lens is not None:
        initializers.append(("sequence_lens", layer.sequence_lens.astype(np.int32)))
    for name, wanted in (("initial_h", layer.initial_h), ("initial_c", layer.initial_c)):
        if wanted:
            inputs.append((name, FLOAT, state_shape))
    nodes = []
    names = {"X": "X", "initial_h": "initial_h", "initial_c": "initial_c"}
    if twin:  # batch-major to sequence-major in front, back behind
        for name in names:
            if name == "X" or getattr(layer, name):
                nodes.append(node("Transpose", [name], [f"{name}_t"], perm=[1, 0, 2]))
                names[name] = f"{name}_t"
    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][: 6 if layer.op != "LSTM" else 8]
    present = {"X", "W", "R", *weights, "initial_h" if layer.initial_h else "", "initial_c" if layer.initial_c else ""}
    if layer.sequence_lens is not None:
        present.add("sequence_lens")
    node_inputs = [names.get(s, s) if s in present else "" for s in slots]
    while node_inputs[-1] == "":
        node_inputs.pop()
    node_outputs = [(f"{o}_t" if twin else o) if o in layer.outputs else "" for o in OUTPUTS[layer.op]]
    while node_outputs[-1] == "":
        node_outputs.pop()
    attrs = dict(layer.attrs, hidden_size=HIDDEN, direction=layer.direction)
    if layout:
        attrs["layout"] = 1
    nodes.append(node(layer.op, node_inputs, node_outputs, **attrs))
    if twin:
        for o in layer.outputs:
            nodes.append(node("Transpose", [f"{o}_t"], [o], perm=[2, 0, 1, 3] if o == "Y" else [1, 0, 2]))
    return make_model(nodes, inputs, [(o, FLOAT, None) for o in layer.outputs], initializers, opset=layer.opset)


def _inputs(model: onnx.ModelProto, batch: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    return [
        torch.randn([batch if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim], generator=gen)
        for v in model.graph.input
    ]


def _denses(layer: Layer) -> int:
    """The dense layers of the lowering: one input projection, then per direction one per step (GRU without
    linear_before_reset: two) whose hidden state is not the zero initial state."""
    if layer.weights_at_run_time:
        return 0
    per_step = 2 if layer.op == "GRU" and not dict(layer.attrs).get("linear_before_reset") else 1
    return 1 + layer.directions * per_step * (layer.steps - (0 if layer.initial_h else 1))


def _assert_one_region_and_matches(model: onnx.ModelProto, reference: onnx.ModelProto) -> ir.Graph:
    """Imported with no opaque node, partitioned into one engine region, the IR and a CPU plan equal to onnxruntime's
    run of `reference` (the model itself, or its layout=0 twin), at batch 1 and 3 (or once, for a static batch)."""
    graph, partitioned, config = one_engine_region(model)
    dynamic = any(d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim)
    for batch in (1, 3) if dynamic else (2,):
        inputs = _inputs(model, batch)
        expected = onnxruntime_outputs(reference, inputs)
        module = tensorforge.build(partitioned, config, device="cpu")
        with torch.no_grad():
            built = module(*inputs)
        built = list(built) if isinstance(built, (tuple, list)) else [built]
        for actual in (ir.execute(graph, *inputs), built):
            assert len(actual) == len(expected)
            for a, e in zip(actual, expected):
                rtol, atol = TOLERANCES[e.dtype]
                torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
    return graph


def _case(name: str, op: str, **fields) -> pytest.param:
    return pytest.param(Layer(op, **fields), id=name)


BOTH_STATES = {"initial_h": True, "initial_c": True}

LAYER_CASES = [
    # LSTM
    _case("lstm-forward-no-bias", "LSTM", bias=False),
    _case("lstm-forward", "LSTM"),
    _case("lstm-reverse-initial-states", "LSTM", direction="reverse", **BOTH_STATES),
    _case("lstm-bidirectional", "LSTM", direction="bidirectional"),
    _case("lstm-bidirectional-initial-states", "LSTM", direction="bidirectional", **BOTH_STATES),
    _case("lstm-bidirectional-initial-h-only", "LSTM", direction="bidirectional", initial_h=True),
    _case("lstm-peepholes", "LSTM", peepholes=True, **BOTH_STATES),
    _case("lstm-peepholes-zero-start-bidirectional", "LSTM", direction="bidirectional", peepholes=True),
    _case("lstm-input-forget", "LSTM", attrs=(("input_forget", 1),), **BOTH_STATES),
    _case("lstm-clip", "LSTM", attrs=(("clip", 0.3),), **BOTH_STATES),
    _case("lstm-batch-major-bidirectional", "LSTM", layout=1, direction="bidirectional", **BOTH_STATES),
    _case("lstm-batch-major-zero-start", "LSTM", layout=1),
    _case(
        "lstm-activations",
        "LSTM",
        attrs=(
            ("activations", ["HardSigmoid", "LeakyRelu", "Softsign"]),
            ("activation_alpha", [0.3, 0.1]),
            ("activation_beta", [0.4]),
        ),
        **BOTH_STATES,
    ),
    _case("lstm-sequence-lens-of-the-full-length", "LSTM", sequence_lens=np.array([4, 4]), batch=2),
    _case("lstm-only-y_h-read", "LSTM", read=("Y_h",), direction="bidirectional"),
    _case("lstm-only-y_c-read", "LSTM", read=("Y_c",), initial_h=True),
    _case("lstm-one-step", "LSTM", steps=1, direction="bidirectional", **BOTH_STATES),
    _case("lstm-weights-at-run-time", "LSTM", weights_at_run_time=True, direction="bidirectional", initial_h=True),
    _case("lstm-7", "LSTM", opset=11, direction="reverse", initial_h=True),
    _case("lstm-22", "LSTM", opset=22, direction="bidirectional", initial_h=True),
    # GRU
    _case("gru-forward", "GRU"),
    _case("gru-forward-no-bias", "GRU", bias=False, initial_h=True),
    _case("gru-reverse-initial-state", "GRU", direction="reverse", initial_h=True),
    _case("gru-bidirectional", "GRU", direction="bidirectional"),
    _case("gru-linear-before-reset", "GRU", attrs=(("linear_before_reset", 1),), initial_h=True),
    _case(
        "gru-linear-before-reset-bidirectional-zero-start",
        "GRU",
        attrs=(("linear_before_reset", 1),),
        direction="bidirectional",
    ),
    _case("gru-linear-before-reset-no-bias", "GRU", attrs=(("linear_before_reset", 1),), bias=False),
    _case("gru-clip", "GRU", attrs=(("clip", 0.3),), initial_h=True),
    _case("gru-batch-major-bidirectional", "GRU", layout=1, direction="bidirectional", initial_h=True),
    _case(
        "gru-activations-bidirectional",
        "GRU",
        direction="bidirectional",
        attrs=(
            ("activations", ["Affine", "ScaledTanh", "ThresholdedRelu", "Elu"]),
            ("activation_alpha", [0.5, 0.7, 0.2, 0.9]),
            ("activation_beta", [0.1, 0.6]),
        ),
    ),
    _case("gru-only-y_h-read", "GRU", read=("Y_h",), initial_h=True),
    _case("gru-weights-at-run-time", "GRU", weights_at_run_time=True, initial_h=True),
    _case("gru-7", "GRU", opset=11, attrs=(("linear_before_reset", 1),), initial_h=True),
    _case("gru-22", "GRU", opset=22, direction="bidirectional"),
    # RNN
    _case("rnn-forward", "RNN"),
    _case("rnn-reverse-initial-state", "RNN", direction="reverse", initial_h=True),
    _case("rnn-bidirectional", "RNN", direction="bidirectional", initial_h=True),
    _case(
        "rnn-relu-softplus-bidirectional",
        "RNN",
        direction="bidirectional",
        attrs=(("activations", ["Relu", "Softplus"]),),
    ),
    # the schema's default activations name two functions; one direction reads the first, as onnxruntime does
    _case("rnn-forward-reads-the-first-of-two-activations", "RNN", attrs=(("activations", ["Relu", "Tanh"]),)),
    _case("rnn-clip", "RNN", attrs=(("clip", 0.3),), initial_h=True),
    _case("rnn-batch-major", "RNN", layout=1, initial_h=True),
    _case("rnn-weights-at-run-time", "RNN", weights_at_run_time=True, direction="bidirectional"),
    _case("rnn-7", "RNN", opset=11, direction="bidirectional"),
    _case("rnn-22", "RNN", opset=22, initial_h=True),
]


@pytest.mark.parametrize("layer", LAYER_CASES)
def test_recurrent_layer_unrolls_into_one_engine_region(layer: Layer):
    model = _model(layer)
    graph = _assert_one_region_and_matches(model, _model(layer, layout=0))
    ops = [n.op for n in graph.nodes]
    assert ops.count("nn.dense") == _denses(layer), "\n".join(ops)
    if layer.weights_at_run_time:
        assert "matmul" in ops


class _Sequence(torch.nn.Module):
    """A batch-first, bidirectional, two-layer recurrent layer, as timm's sequencer2d writes its LSTMs."""

    def __init__(self, layer_class):
        super().__init__()
        self.layer = layer_class(INPUT_SIZE, HIDDEN, num_layers=2, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.layer(x)[0]


@pytest.mark.parametrize("layer_class", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN], ids=["lstm", "gru", "rnn"])
def test_exported_recurrent_layers_are_one_engine_region(layer_class, tmp_path):
    """torch.onnx.export writes each layer as a node whose zero initial states it computes from the batch size
    (ConstantOfShape of a Shape): those states are recognized as zeros, so the first step of each direction needs
    no dense; a GRU is written with linear_before_reset."""
    path = tmp_path / "layer.onnx"
    torch.manual_seed(0)
    module = _Sequence(layer_class).eval()
    steps = 7
    torch.onnx.export(
        module,
        (torch.randn(2, steps, INPUT_SIZE),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    model = onnx.load(str(path))
    assert sum(n.op_type == layer_class.__name__ for n in model.graph.node) == 2
    graph = _assert_one_region_and_matches(model, model)
    denses = [n.op for n in graph.nodes].count("nn.dense")
    assert denses == 2 * (1 + 2 * (steps - 1)), denses  # per layer: the projection, then one per step after the first
    x = torch.randn(3, steps, INPUT_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(ir.execute(graph, x)[0], module(x))  # and PyTorch's own result


# -- refused: the node runs through onnxruntime with the reason -----------------------------------------------


def _opaque_reason(model: onnx.ModelProto, inputs: list[torch.Tensor], **options) -> str:
    graph = from_onnx(model, **options)
    (opaque,) = graph.opaque_nodes()
    assert_matches_onnxruntime(graph, model, inputs)
    return opaque.attrs["reason"]


def test_sequence_length_unknown_at_import_runs_through_onnxruntime():
    layer = Layer("LSTM", direction="bidirectional")
    model = _model(layer)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"  # X: [T, N, 5]; the leading size is `batch`
    reason = _opaque_reason(model, [torch.randn(3, 2, INPUT_SIZE)])
    assert reason == (
        "a sequence length not known at import (batch): the layer is unrolled over its steps (give the model a fixed "
        "sequence length, input_shapes=...)"
    )


def test_padded_sequences_run_through_onnxruntime():
    model = _model(Layer("GRU", sequence_lens=np.array([4, 2]), batch=2))
    reason = _opaque_reason(model, [torch.randn(4, 2, INPUT_SIZE)])
    assert reason == (
        "sequence_lens other than the sequence length (4) for some sequence: padded sequences, each stopping at its "
        "own step, are not unrolled"
    )
    (found,) = check_onnx_model(model)  # the whole-model check says so before anything is imported
    assert found.reason == reason


def test_sequence_lens_at_run_time_runs_through_onnxruntime():
    layer = Layer("RNN", batch=2)
    model = _model(layer)
    (rnn_node,) = model.graph.node
    assert list(rnn_node.input) == ["X", "W", "R", "B"]
    rnn_node.input.append("sequence_lens")
    model.graph.input.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [2]))
    lengths = torch.tensor([4, 4], dtype=torch.int32)
    reason = _opaque_reason(model, [torch.randn(4, 2, INPUT_SIZE), lengths])
    assert reason == (
        "sequence_lens computed at run time: only sequences that all run the whole length, 4, are unrolled, and that "
        "must be known at import"
    )


def test_a_sequence_longer_than_the_unroll_limit_runs_through_onnxruntime(monkeypatch):
    monkeypatch.setattr(recurrent, "UNROLL_LIMIT", 3)
    reason = _opaque_reason(_model(Layer("RNN")), [torch.randn(4, 2, INPUT_SIZE)])
    assert reason == "a sequence of 4 steps: from 1 to UNROLL_LIMIT (3) are unrolled"


@pytest.mark.parametrize(
    "op, attrs, reason",
    [
        ("LSTM", {}, None),
        ("LSTM", {"direction": "sideways"}, "direction 'sideways'"),
        ("GRU", {"layout": 2}, "layout 2"),
        ("RNN", {"clip": -1.0}, "clip -1.0: the threshold must be positive"),
        (
            "LSTM",
            {"activations": ("Sigmoid", "Tanh")},
            "2 activations (Sigmoid, Tanh); a LSTM of 1 direction(s) takes 3",
        ),
        ("GRU", {"activations": ("Sigmoid", "Swish")}, "activation 'Swish' is not one of the spec's"),
        (
            "RNN",
            {"activations": ("ThresholdedRelu",)},
            "activation ThresholdedRelu without its alpha in activation_alpha: no default is agreed on",
        ),
        ("RNN", {"activations": ("Affine",), "activation_alpha": (2.0,)}, "activation Affine without its beta"),
        ("RNN", {"activations": ("Affine",), "activation_alpha": (2.0,), "activation_beta": (1.0,)}, None),
        ("RNN", {"activations": ("leakyrelu",)}, None),  # names in any case, LeakyRelu's default alpha
    ],
)
def test_recurrent_check_names_what_it_refuses(op, attrs, reason):
    check = lookup(op, "", 14).check
    assert check is not None
    found = check(**attrs)
    assert found == reason if reason is None else found.startswith(reason), found


# -- OneHot ----------------------------------------------------------------------------------------------------


def _one_hot_model(indices_type, shape, depth: np.ndarray, values: np.ndarray | None, axis: int | None):
    """OneHot of run-time indices; values an initializer, or a graph input where None."""
    attrs = {} if axis is None else {"axis": axis}
    inputs = [("indices", indices_type, shape)] + ([("values", FLOAT, [2])] if values is None else [])
    value_type = FLOAT if values is None else helper.np_dtype_to_tensor_dtype(values.dtype)
    initializers = [("depth", depth)] + ([] if values is None else [("values", values)])
    return make_model(
        [node("OneHot", ["indices", "depth", "values"], ["y"], **attrs)],
        inputs,
        [("y", value_type, None)],
        initializers,
        opset=11,
    )


FLOAT_VALUES = np.array([-1.5, 2.0], np.float32)
ONE_HOT_CASES = [
    # (id, indices type, shape, depth, values, axis)
    ("last-axis", INT64, ["N", 3], np.array(5, np.int64), FLOAT_VALUES, None),
    ("axis-0", INT64, ["N", 3], np.array(5, np.int64), FLOAT_VALUES, 0),
    ("axis-1-of-3", INT64, ["N", 3, 2], np.array(4, np.int64), FLOAT_VALUES, 1),
    ("negative-axis", INT64, ["N", 3], np.array(5, np.int64), FLOAT_VALUES, -2),
    ("int64-values", INT64, ["N", 4], np.array([6], np.int64), np.array([0, 7], np.int64), None),
    ("int32-indices", TensorProto.INT32, ["N", 4], np.array(6, np.int32), FLOAT_VALUES, -1),
    ("float-indices-and-depth", FLOAT, ["N", 4], np.array(6.0, np.float32), FLOAT_VALUES, None),
    ("values-at-run-time", INT64, ["N", 3], np.array(5, np.int64), None, None),
]


@pytest.mark.parametrize(
    "indices_type, shape, depth, values, axis", [c[1:] for c in ONE_HOT_CASES], ids=[c[0] for c in ONE_HOT_CASES]
)
def test_one_hot_lowers_into_one_engine_region(indices_type, shape, depth, values, axis):
    model = _one_hot_model(indices_type, shape, depth, values, axis)
    graph = from_onnx(model, strict=True)
    assert graph.opaque_nodes() == [], str(graph)
    assert {"equal", "where"} <= {n.op for n in graph.nodes}
    partitioned, config = tensorforge.partition_for_tensorforge(graph, use_implicit_batch=False)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    size = int(depth.reshape(-1)[0])
    for batch in (1, 3):
        gen = torch.Generator().manual_seed(batch)
        # every class, negative indices (wrapped) and indices out of range either way (all off_value)
        indices = torch.randint(-size - 2, size + 2, [batch, *shape[1:]], generator=gen)
        if indices_type == FLOAT:
            indices = indices + 0.6 * torch.sign(indices)  # truncated toward zero, as the spec casts
        indices = indices.to({INT64: torch.int64, TensorProto.INT32: torch.int32, FLOAT: torch.float32}[indices_type])
        inputs = [indices] + ([torch.tensor([0.25, -3.0])] if values is None else [])
        assert_matches_onnxruntime(graph, model, inputs)
        module = tensorforge.build(partitioned, config, device="cpu")
        with torch.no_grad():
            assert torch.equal(module(*inputs), onnxruntime_outputs(model, inputs)[0])


def test_one_hot_depth_at_run_time_is_refused_with_the_reason():
    """A depth fed at run time sizes the output by data: no converter and no opaque node can type it."""
    model = _one_hot_model(INT64, ["N", 3], np.array(5, np.int64), FLOAT_VALUES, None)
    model.graph.initializer.pop(0)
    model.graph.input.append(helper.make_tensor_value_info("depth", INT64, []))
    with pytest.raises(
        OnnxImportError, match="OneHot's depth is computed at run time; it must be known when the model"
    ):
        from_onnx(model)
