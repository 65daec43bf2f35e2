"""quantize / dequantize against onnxruntime's QuantizeLinear / DequantizeLinear.

Each case builds the same computation twice: a one-node ONNX model run by onnxruntime (the oracle), and a
one-node IR graph run by `ir.execute` (and through the engine). The values are chosen to hit the places where a
wrong implementation shows: ties (x / scale = k + 0.5 rounds to even), saturation at the type's ends, per-channel
scales along a positive and a negative axis, uint8 with a zero point, float8 at +-448 and beyond (saturated, as
ONNX `saturate=1`). Integer results must be equal; float8 results must have the same bytes.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from engine_cases import check_case_in_engine
from helpers import assert_close, case, check_case, run_single_op
from tensorforge.ir import Graph, TensorType
from tensorforge.ir.registry import ShapeInferenceError

ONNX_TYPES = {
    torch.float32: TensorProto.FLOAT,
    torch.float16: TensorProto.FLOAT16,
    torch.int8: TensorProto.INT8,
    torch.uint8: TensorProto.UINT8,
    torch.int32: TensorProto.INT32,
    torch.float8_e4m3fn: TensorProto.FLOAT8E4M3FN,
}
IR_NAMES = {torch.int8: "int8", torch.uint8: "uint8", torch.float8_e4m3fn: "float8_e4m3fn"}


def _initializer(name: str, t: torch.Tensor) -> onnx.TensorProto:
    if t.dtype == torch.float8_e4m3fn:  # onnx takes float8 as the raw bytes
        return helper.make_tensor(
            name, TensorProto.FLOAT8E4M3FN, list(t.shape), t.view(torch.uint8).numpy().tobytes(), raw=True
        )
    return helper.make_tensor(name, ONNX_TYPES[t.dtype], list(t.shape), t.flatten().tolist())


def _onnxruntime(
    op: str, data: torch.Tensor, params: list[torch.Tensor], out_dtype: torch.dtype, axis: int | None, opset: int
) -> torch.Tensor:
    """What onnxruntime's `op` (QuantizeLinear / DequantizeLinear) gives for `data` with constant scale (and zero
    point); float8 comes back as its bytes, viewed as float8 here."""
    names = ["scale", "zero_point"][: len(params)]
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node(op, ["x", *names], ["y"], **attrs)
    x = helper.make_tensor_value_info("x", ONNX_TYPES[data.dtype], list(data.shape))
    y = helper.make_tensor_value_info("y", ONNX_TYPES[out_dtype], list(data.shape))
    inits = [_initializer(n, p) for n, p in zip(names, params)]
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)]
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if data.dtype == torch.float8_e4m3fn:  # onnxruntime takes float8 as its bytes, with the element type named
        feed = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(data.view(torch.uint8).numpy(), TensorProto.FLOAT8E4M3FN)
        (out,) = session.run_with_ort_values(None, {"x": feed})
        out = out.numpy()
    else:
        (out,) = session.run(None, {"x": data.numpy()})
    result = torch.from_numpy(np.ascontiguousarray(out).view(np.uint8) if out_dtype == torch.float8_e4m3fn else out)
    return result.view(out_dtype) if out_dtype == torch.float8_e4m3fn else result


def _same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal values (float8: equal bytes, since torch has no comparison for float8)."""
    if expected.dtype == torch.float8_e4m3fn:
        assert actual.dtype == expected.dtype
        assert torch.equal(actual.view(torch.uint8), expected.view(torch.uint8)), f"\n{actual}\n{expected}"
    else:
        assert_close(actual, expected, tol=(0.0, 0.0))


# ties at x / scale = k + 0.5 for k from -6 to 5 (half to even: -6 -> -6, -5.5 -> -6, 0.5 -> 0, 1.5 -> 2, ...)
def _ties() -> torch.Tensor:
    return (torch.arange(-12, 12, dtype=torch.float32) + 0.5) * 0.125


# ties over the whole int8 range and past it at scale 0.5: -128.5 saturates, 126.5 rounds to 126, 127.5 to 127 (128)
def _wide_ties() -> torch.Tensor:
    return (torch.arange(-131, 131, dtype=torch.float32) + 0.5) * 0.5


# beyond the int8 range at both ends, at scale 0.1
def _saturating() -> torch.Tensor:
    return torch.tensor([-100.0, -12.85, -12.8, -12.75, 0.0, 12.7, 12.75, 12.8, 100.0, float("inf"), -float("inf")])


def _per_channel_data() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 4, 5) * 4


def _float8_data() -> torch.Tensor:
    # +-448 exactly, between 448 and the next binade, far beyond, and values that round within the type
    return torch.tensor([448.0, -448.0, 460.0, 470.0, -500.0, 1e6, -1e6, 0.1, -0.3, 17.0, 17.5, 18.5, 0.0013, 240.0])


QUANTIZE = [
    # (id, data, scale, zero point, dtype, axis, opset)
    ("int8-ties", _ties, torch.tensor(0.125), None, torch.int8, None, 13),
    ("int8-ties-saturate", _wide_ties, torch.tensor(0.5), None, torch.int8, None, 13),
    ("int8-saturate", _saturating, torch.tensor(0.1), None, torch.int8, None, 13),
    ("uint8-zero-point", _saturating, torch.tensor(0.1), torch.tensor(128, dtype=torch.uint8), torch.uint8, None, 13),
    ("uint8-zero-point-ties", _ties, torch.tensor(0.125), torch.tensor(3, dtype=torch.uint8), torch.uint8, None, 13),
    ("int8-per-channel-axis1", _per_channel_data, torch.tensor([0.05, 0.1, 0.2, 0.03]), None, torch.int8, 1, 13),
    (
        "int8-per-channel-axis-neg1",
        _per_channel_data,
        torch.tensor([0.05, 0.1, 0.2, 0.03, 0.5]),
        None,
        torch.int8,
        -1,
        13,
    ),
    (
        "int8-per-channel-zero-point",
        _per_channel_data,
        torch.tensor([0.05, 0.1, 0.2]),
        torch.tensor([-3, 0, 5], dtype=torch.int8),
        torch.int8,
        0,
        13,
    ),
    (
        "float8",
        _float8_data,
        torch.tensor(1.0),
        torch.tensor(0.0).to(torch.float8_e4m3fn),
        torch.float8_e4m3fn,
        None,
        19,
    ),
    (
        "float8-scaled",
        _float8_data,
        torch.tensor(0.5),
        torch.tensor(0.0).to(torch.float8_e4m3fn),
        torch.float8_e4m3fn,
        None,
        21,
    ),
    (
        "float8-per-channel",
        _per_channel_data,
        torch.tensor([0.01, 0.02, 1.0, 0.005]),
        torch.zeros(4).to(torch.float8_e4m3fn),
        torch.float8_e4m3fn,
        1,
        21,
    ),
]


@pytest.mark.parametrize(
    "make_data, scale, zero_point, dtype, axis, opset", [pytest.param(*row[1:], id=row[0]) for row in QUANTIZE]
)
def test_quantize_matches_onnxruntime(make_data, scale, zero_point, dtype, axis, opset):
    data = make_data()
    params = [scale] if zero_point is None else [scale, zero_point]
    # without a zero point ONNX quantizes to uint8: onnxruntime is told the type by a zero point of 0
    typed = [scale, torch.zeros(scale.shape).to(dtype)] if zero_point is None else params
    expected = _onnxruntime("QuantizeLinear", data, typed, dtype, axis, opset)
    attrs = {"dtype": IR_NAMES[dtype], "axis": axis}
    (actual,) = run_single_op("quantize", [data, *params], attrs, const_inputs=range(1, 1 + len(params)))
    _same(actual, expected)
    # and back: dequantize of onnxruntime's own quantized values
    expected_back = _onnxruntime("DequantizeLinear", expected, params, torch.float32, axis, opset)
    (back,) = run_single_op("dequantize", [expected, *params], {"axis": axis}, const_inputs=range(1, 1 + len(params)))
    _same(back, expected_back)


def test_ties_really_are_ties():
    """The tie cases must hit x / scale = k + 0.5 exactly, or they test nothing."""
    for q in (_ties() / 0.125, _wide_ties() / 0.5):
        assert torch.equal(q - q.floor(), torch.full_like(q, 0.5))


def test_dequantize_int32_bias_matches_onnxruntime():
    """onnxruntime's quantizer stores a quantized layer's bias as int32 (scale = input scale * weight scale)."""
    data = torch.tensor([2**24 + 1, -(2**24) - 3, 7, -1_000_000_001, 0], dtype=torch.int32)
    scale = torch.tensor(1e-4)
    expected = _onnxruntime("DequantizeLinear", data, [scale], torch.float32, None, 13)
    (actual,) = run_single_op("dequantize", [data, scale], {}, const_inputs=(1,))
    _same(actual, expected)


def test_quantize_float16_input_computes_in_float32():
    """x / scale in float16 would round 0.0999... across a .5 boundary; the reference divides in float32, as
    onnxruntime does for float inputs."""
    data = torch.tensor([1.0, 3.0, -5.0, 0.33], dtype=torch.float16)
    scale = torch.tensor(0.6666667)
    (actual,) = run_single_op("quantize", [data, scale], {"dtype": "int8"}, const_inputs=(1,))
    expected = torch.round(data.float() / scale).to(torch.int8)
    _same(actual, expected)


# ---------------------------------------------------------------------------------------------
# The op table (tests/ops/test_coverage.py reads CASES): per-tensor and per-channel, through the engine too
# ---------------------------------------------------------------------------------------------

CASES = [
    case(
        "quantize-int8",
        "quantize",
        lambda: [_ties(), torch.tensor(0.125)],
        lambda x, s: torch.tensor(np.clip(np.round(x.numpy() / np.float32(0.125)), -128, 127).astype(np.int8)),
        {"dtype": "int8"},
        const=(1,),
    ),
    case(
        "quantize-int8-per-channel",
        "quantize",
        lambda: [_per_channel_data(), torch.tensor([0.05, 0.1, 0.2, 0.03])],
        lambda x, s: torch.tensor(np.clip(np.round(x.numpy() / s.numpy()[None, :, None]), -128, 127).astype(np.int8)),
        {"dtype": "int8", "axis": 1},
        const=(1,),
    ),
    case(
        "dequantize-int8-per-channel",
        "dequantize",
        lambda: [torch.randint(-128, 128, (4, 3), dtype=torch.int8), torch.tensor([0.5, 0.25, 2.0, 0.125])],
        lambda q, s: q.float() * s[:, None],
        {"axis": 0},
        const=(1,),
    ),
    case(
        "dequantize-uint8-zero-point",
        "dequantize",
        lambda: [
            torch.randint(0, 256, (2, 5), dtype=torch.uint8),
            torch.tensor(0.5),
            torch.tensor(9, dtype=torch.uint8),
        ],
        lambda q, s, z: (q.float() - 9) * 0.5,
        const=(1, 2),
    ),
    case(
        "dequantize-to-fp16",
        "dequantize",
        lambda: [torch.randint(-128, 128, (3, 4), dtype=torch.int8), torch.tensor(0.25)],
        lambda q, s: (q.float() * 0.25).half(),
        {"dtype": "float16"},
        const=(1,),
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_case(c):
    check_case(c)


@pytest.mark.parametrize("c", CASES)
def test_case_in_engine(c):
    check_case_in_engine(c)


def test_symbolic_batch_keeps_its_symbol():
    from tensorforge.ir import Sym

    graph = Graph("qdq")
    x = graph.add_input("x", TensorType("float32", (Sym("batch"), 4)))
    scale = graph.add_constant(torch.tensor([0.1, 0.2, 0.3, 0.4]), name="scale")
    q = graph.add_node("quantize", [x, scale], {"axis": -1, "dtype": "int8"}).outputs[0]
    dq = graph.add_node("dequantize", [q, scale], {"axis": -1}).outputs[0]
    assert str(q.type) == "i8[batch,4]" and str(dq.type) == "f32[batch,4]"


REFUSALS = [
    # (id, data type, scale, zero point type, attrs, the reason's words)
    (
        "scale-not-float",
        "quantize",
        TensorType("float32", (2, 3)),
        TensorType("int32", ()),
        None,
        {"dtype": "int8"},
        "scale must be a float",
    ),
    (
        "per-tensor-scale-not-scalar",
        "quantize",
        TensorType("float32", (2, 3)),
        TensorType("float32", (3,)),
        None,
        {"dtype": "int8"},
        "per-tensor scale (axis=None) has shape []",
    ),
    (
        "per-channel-scale-wrong-size",
        "quantize",
        TensorType("float32", (2, 3)),
        TensorType("float32", (2,)),
        None,
        {"dtype": "int8", "axis": 1},
        "need shape [3]",
    ),
    (
        "axis-out-of-range",
        "quantize",
        TensorType("float32", (2, 3)),
        TensorType("float32", (3,)),
        None,
        {"dtype": "int8", "axis": 2},
        "out of range",
    ),
    (
        "dtype-not-quantized",
        "quantize",
        TensorType("float32", (2, 3)),
        TensorType("float32", ()),
        None,
        {"dtype": "int16"},
        "not a quantized type",
    ),
    (
        "data-not-float",
        "quantize",
        TensorType("int32", (2, 3)),
        TensorType("float32", ()),
        None,
        {"dtype": "int8"},
        "data must be a float",
    ),
    (
        "zero-point-type",
        "quantize",
        TensorType("float32", (2, 3)),
        TensorType("float32", ()),
        TensorType("int8", ()),
        {"dtype": "uint8"},
        "quantized type uint8",
    ),
    (
        "dequantize-output-not-float",
        "dequantize",
        TensorType("int8", (2, 3)),
        TensorType("float32", ()),
        None,
        {"dtype": "int32"},
        "not an output float type",
    ),
    (
        "dequantize-float-data",
        "dequantize",
        TensorType("float32", (2, 3)),
        TensorType("float32", ()),
        None,
        {},
        "data must be one of",
    ),
]


@pytest.mark.parametrize(
    "op, data, scale, zero_point, attrs, reason", [pytest.param(*row[1:], id=row[0]) for row in REFUSALS]
)
def test_refusals_say_why(op, data, scale, zero_point, attrs, reason):
    graph = Graph("refused")
    inputs = [graph.add_input("x", data), graph.add_input("s", scale)]
    if zero_point is not None:
        inputs.append(graph.add_input("z", zero_point))
    with pytest.raises(ShapeInferenceError, match=re.escape(reason)):
        graph.add_node(op, inputs, attrs)
