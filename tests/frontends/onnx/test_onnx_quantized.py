"""Dynamically quantized ONNX models (the pattern of onnxruntime's `quantize_dynamic`): DynamicQuantizeLinear,
ConvInteger and MatMulInteger have no IR op and run through onnxruntime, the float glue around them in the IR.

DynamicQuantizeLinear's y_scale and y_zero_point are scalars (ONNX spec). They come back from onnxruntime as
0-d arrays, and stay 0-d in the IR both where shape inference types them and where the importer must run the
node to learn its types (an input sized only at run time, as in ddddocr's common_old.onnx).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from onnx_helpers import FLOAT, assert_matches_onnxruntime, make_model

from tensorforge.frontends import from_onnx

node = helper.make_node
UINT8 = TensorProto.UINT8


def _quantize(x: str) -> list:
    """x -> x_q (uint8), x_scale, x_zero (scalars)."""
    return [node("DynamicQuantizeLinear", [x], [f"{x}_q", f"{x}_scale", f"{x}_zero"], name=f"{x}_quantize")]


def _sized_at_run_time(x: str, out: str) -> list:
    """`out` is `x` flattened to (1, -1) through a shape computed from data: shape inference leaves its sizes open."""
    return [
        node("Shape", [x], [f"{x}_shape"]),
        node("Gather", [f"{x}_shape", "zero"], [f"{x}_n"], axis=0),
        node("Unsqueeze", [f"{x}_n", "zeros"], [f"{x}_n1"]),
        node("Concat", [f"{x}_n1", "minus_one"], [f"{x}_flat_shape"], axis=0),
        node("Reshape", [x, f"{x}_flat_shape"], [out]),
    ]


def _quantize_outputs(sized_at_run_time: bool):
    """DynamicQuantizeLinear's three outputs, each a graph output."""
    nodes = (_sized_at_run_time("x", "v") if sized_at_run_time else [node("Identity", ["x"], ["v"])]) + _quantize("v")
    init = [
        ("zero", np.array(0, np.int64)),
        ("zeros", np.array([0], np.int64)),
        ("minus_one", np.array([-1], np.int64)),
    ]
    return make_model(
        nodes,
        [("x", FLOAT, [2, 3, 4])],
        [("v_q", UINT8, None), ("v_scale", FLOAT, None), ("v_zero", UINT8, None)],
        init,
        opset=13,
    )


def _conv_matmul_integer():
    """quantize_dynamic's rewrite of Conv -> Relu -> flatten -> MatMul: each float input quantized on the fly,
    the integer op's int32 result cast to float and scaled by (input scale x weight scale). Relu, not Sigmoid:
    the float ops before a quantization must round alike here and in onnxruntime, or a value may land in the
    next quantization step."""
    rng = np.random.RandomState(0)
    w, m = rng.randint(0, 256, (4, 1, 3, 3)).astype(np.uint8), rng.randint(0, 256, (4 * 6 * 8, 5)).astype(np.uint8)
    init = [
        ("w", w),
        ("w_zero", np.uint8(130)),
        ("w_scale", np.float32(0.01)),
        ("b", rng.randn(4).astype(np.float32)),
        ("m", m),
        ("m_zero", np.uint8(125)),
        ("m_scale", np.float32(0.002)),
        ("bias_shape", np.array([1, 4, 1, 1])),
        ("zero", np.array(0, np.int64)),
        ("zeros", np.array([0], np.int64)),
        ("minus_one", np.array([-1], np.int64)),
    ]
    nodes = (
        _quantize("x")
        + [
            node("ConvInteger", ["x_q", "w", "x_zero", "w_zero"], ["c32"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            node("Cast", ["c32"], ["c_float"], to=FLOAT),
            node("Mul", ["x_scale", "w_scale"], ["c_scale"]),
            node("Mul", ["c_float", "c_scale"], ["c_scaled"]),
            node("Reshape", ["b", "bias_shape"], ["b4"]),
            node("Add", ["c_scaled", "b4"], ["c"]),
            node("Relu", ["c"], ["s"]),
        ]
        + _sized_at_run_time("s", "r")
        + _quantize("r")
        + [
            node("MatMulInteger", ["r_q", "m", "r_zero", "m_zero"], ["y32"]),
            node("Cast", ["y32"], ["y_float"], to=FLOAT),
            node("Mul", ["r_scale", "m_scale"], ["y_scale"]),
            node("Mul", ["y_float", "y_scale"], ["y"]),
        ]
    )
    return make_model(nodes, [("x", FLOAT, [1, 1, 6, 8])], [("y", FLOAT, None)], init, opset=13)


def _seeded(*shape, uniform=False):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(*shape, generator=generator) if uniform else torch.randn(*shape, generator=generator)


# (id, model, inputs, opaque ops of the import)
CASES = [
    (
        "dynamic-quantize-typed",
        lambda: _quantize_outputs(False),
        lambda: [_seeded(2, 3, 4)],
        ["onnx.DynamicQuantizeLinear"],
    ),
    (
        "dynamic-quantize-sized-at-run-time",
        lambda: _quantize_outputs(True),
        lambda: [_seeded(2, 3, 4)],
        ["onnx.DynamicQuantizeLinear"],
    ),
    (
        "conv-matmul-integer",
        _conv_matmul_integer,
        lambda: [_seeded(1, 1, 6, 8, uniform=True)],
        ["onnx.DynamicQuantizeLinear", "onnx.ConvInteger", "onnx.DynamicQuantizeLinear", "onnx.MatMulInteger"],
    ),
]


@pytest.mark.parametrize("make, inputs, opaque", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_quantized_model_matches_onnxruntime(make, inputs, opaque):
    model = make()
    graph = from_onnx(model)
    assert [n.op for n in graph.opaque_nodes()] == opaque
    assert all("no converter for" in n.attrs["reason"] for n in graph.opaque_nodes())
    scalars = [n.outputs[1:] for n in graph.opaque_nodes() if n.op == "onnx.DynamicQuantizeLinear"]
    assert all(v.type.shape == () for pair in scalars for v in pair), scalars
    assert_matches_onnxruntime(graph, model, inputs())  # dtypes, shapes (0-d scales) and values
