"""The Triton quantized-convolution tactics (tactics/qconv_triton.py) against engine.qconv's reference, one case
table for two runners.

`run_cases(device)` binds each case's tactic to its engine.qconv node and returns {case id: None or what went
wrong}. Without a GPU, tests/engine/test_qconv_triton.py runs this file as a script under Triton's interpreter on
CPU tensors and reads the JSON it prints; on a GPU the same cases run in-process on CUDA. Shapes are small (the
interpreter runs every program in Python) and not multiples of the tiles, so the masked edges are exercised.

How close is close enough: the kernels' int32 sums are exact, and so are the reference's float32 sums of the same
small integers, but the epilogue's float32 arithmetic may order its steps differently, which can move a value
across a rounding boundary of the output: an int8 output may differ by one step on a few elements, an fp8 one by
one e4m3 step (1/8 of the value at most), a float one by its type's rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.engine.tactics import qconv_triton as _registers  # noqa: F401 - registers the tactics
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
FLOAT_TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # relative to the output's max
INT8_AGREEMENT = 0.99  # int8 outputs: this fraction equal, the rest one step apart
FP8_RTOL, FP8_ATOL = 1 / 8, 2.0**-9  # one e4m3 step: 1/8 of the value, the smallest subnormal near zero
RELU6 = (("a_min", 0.0), ("a_max", 6.0))
SPREAD = {"int8": 73.0, "float8_e4m3fn": 1.0}  # the standard deviation of the random data and weights below


def _quantized(dtype: str, shape) -> torch.Tensor:
    if dtype == "int8":
        return torch.randint(-128, 128, shape, dtype=torch.int8)
    return torch.randn(shape).to(torch.float8_e4m3fn)


def qconv_layer(
    *,
    dtype="int8",
    c_in=24,
    c_out=40,
    size=(9, 7),
    kernel=(3, 3),
    stride=(1, 1),
    padding=(1, 1),
    dilation=(1, 1),
    groups=1,
    bias=True,
    activation=None,
    activation_attrs=(),
    residual=None,
    residual_dtype="float32",
    out="int8",
    data_shape=None,
):
    """A one-node graph: engine.qconv of `dtype` data [batch, c_in, *size] (a graph input) and constant weights,
    per-channel scales that make the float result about unit-sized, an optional bias and residual (a graph input
    of `residual_dtype`, scaled by residual_scale when 8-bit), the `out` type (8-bit ones with an out_scale)."""
    torch.manual_seed(c_in * 31 + c_out + kernel[0])
    g = Graph("qconv")
    x = g.add_input("x", TensorType(dtype, data_shape or (BATCH, c_in, *size)))
    weight = _quantized(dtype, (c_out, c_in // groups, *kernel))
    taps = (c_in // groups) * math.prod(kernel)
    scale = (torch.rand(c_out) + 0.5) / (taps**0.5 * SPREAD[dtype] ** 2)
    inputs = [x, g.add_constant(weight, "w"), g.add_constant(scale, "s")]
    if bias:
        inputs.append(g.add_constant(torch.randn(c_out) * 0.5, "b"))
    out_size = tuple(
        (s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in zip(size, padding, dilation, kernel, stride)
    )
    quantized_residual = residual is not None and residual_dtype in ("int8", "float8_e4m3fn")
    if residual is not None:
        inputs.append(g.add_input("r", TensorType(residual_dtype, (BATCH, c_out, *out_size))))
    out_scale = {"int8": 3.0 / 127, "float8_e4m3fn": 1.0 / 32}.get(out)
    y = g.call(
        "engine.qconv",
        *inputs,
        ndim=len(kernel),
        strides=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        has_bias=bias,
        activation=activation,
        activation_attrs=tuple(activation_attrs),
        has_residual=residual is not None,
        residual_position=residual or "pre_activation",
        out_dtype=out,
        out_scale=out_scale,
        residual_scale=(1 / 64 if residual_dtype == "int8" else 0.5) if quantized_residual else None,
    )
    g.set_outputs([y])
    return g.verify()


def depthwise(*, channels=40, kernel=3, stride=1, **kw):
    return qconv_layer(
        c_in=channels,
        c_out=channels,
        groups=channels,
        kernel=(kernel, kernel),
        stride=(stride, stride),
        padding=(kernel // 2, kernel // 2),
        **kw,
    )


STEM = dict(c_in=3, c_out=24, size=(15, 13), kernel=(7, 7), stride=(2, 2), padding=(3, 3))
# case -> (the layer, the tactic that runs it)
CASES = {
    "3x3_relu_int8_out": (lambda: qconv_layer(activation="nn.relu"), "triton_qconv_int8_128x64x64"),
    "3x3_stride2_even_channels_fp16_out": (
        lambda: qconv_layer(c_in=64, c_out=72, size=(11, 9), stride=(2, 2), out="float16"),
        "triton_qconv_int8_64x64x64",
    ),
    "stem_7x7_stride2_gather": (
        lambda: qconv_layer(**STEM, activation="nn.relu"),
        "triton_qconv_int8_gather_128x64x32",
    ),
    "stem_7x7_stride2_per_tap": (lambda: qconv_layer(**STEM, out="float32"), "triton_qconv_int8_64x128x32"),
    "dilation2_relu6_fp32_out_two_column_tiles": (
        lambda: qconv_layer(
            c_in=20,
            c_out=136,
            dilation=(2, 2),
            padding=(2, 2),
            activation="clip",
            activation_attrs=RELU6,
            out="float32",
        ),
        "triton_qconv_int8_128x128x64",
    ),
    "1x3_asymmetric_hardswish_no_bias": (
        lambda: qconv_layer(c_in=33, kernel=(1, 3), padding=(0, 1), activation="nn.hardswish", bias=False),
        "triton_qconv_int8_64x128x32",
    ),
    "1x1_stride2_bf16_out": (
        lambda: qconv_layer(kernel=(1, 1), stride=(2, 2), padding=(0, 0), out="bfloat16"),
        "triton_qconv_int8_64x64x64",
    ),
    "residual_float_pre_relu": (
        lambda: qconv_layer(activation="nn.relu", residual="pre_activation"),
        "triton_qconv_int8_128x64x64",
    ),
    "residual_float16_post_silu_fp16_out": (
        lambda: qconv_layer(activation="nn.silu", residual="post_activation", residual_dtype="float16", out="float16"),
        "triton_qconv_int8_64x64x64",
    ),
    "residual_int8_pre_relu": (
        lambda: qconv_layer(activation="nn.relu", residual="pre_activation", residual_dtype="int8"),
        "triton_qconv_int8_128x64x64",
    ),
    "residual_int8_post_relu6_fp8_out": (
        lambda: qconv_layer(
            activation="clip",
            activation_attrs=RELU6,
            residual="post_activation",
            residual_dtype="int8",
            out="float8_e4m3fn",
        ),
        "triton_qconv_int8_128x64x64",
    ),
    "nchw_input_relu": (lambda: qconv_layer(c_in=16, activation="nn.relu"), "triton_qconv_int8_128x64x64"),
    "fp8_3x3_fp16_out": (lambda: qconv_layer(dtype="float8_e4m3fn", out="float16"), "triton_qconv_fp8_128x64x64"),
    "fp8_stride2_fp8_residual_fp8_out": (
        lambda: qconv_layer(
            dtype="float8_e4m3fn",
            c_in=40,
            stride=(2, 2),
            activation="nn.silu",
            residual="pre_activation",
            residual_dtype="float8_e4m3fn",
            out="float8_e4m3fn",
        ),
        "triton_qconv_fp8_64x128x32",
    ),
    "fp8_stem_gather_int8_out": (
        lambda: qconv_layer(dtype="float8_e4m3fn", **STEM, activation="nn.relu"),
        "triton_qconv_fp8_gather_128x64x32",
    ),
    "depthwise_3x3_relu6": (
        lambda: depthwise(activation="clip", activation_attrs=RELU6),
        "triton_qdepthwise_int8",
    ),
    "depthwise_3x3_stride2_residual_int8": (
        lambda: depthwise(channels=72, stride=2, residual="pre_activation", residual_dtype="int8"),
        "triton_qdepthwise_int8",
    ),
    "depthwise_5x5_stride2_silu_fp32_out": (
        lambda: depthwise(channels=72, kernel=5, stride=2, activation="nn.silu", out="float32"),
        "triton_qdepthwise_int8",
    ),
    "fp8_depthwise_3x3_fp8_out_no_bias": (
        lambda: depthwise(dtype="float8_e4m3fn", channels=33, bias=False, out="float8_e4m3fn"),
        "triton_qdepthwise_fp8",
    ),
    "fp8_depthwise_5x5_residual_float_fp16_out": (
        lambda: depthwise(
            dtype="float8_e4m3fn", kernel=5, residual="post_activation", activation="nn.relu", out="float16"
        ),
        "triton_qdepthwise_fp8",
    ),
}
NCHW_CASES = {"nchw_input_relu"}  # the others hand the kernel channels-last tensors, as a plan does
BATCHES = (2, 3)


def _inputs(graph: Graph, batch: int) -> list[torch.Tensor]:
    torch.manual_seed(batch)
    acts = []
    for value in graph.inputs:
        shape = (batch, *value.type.shape[1:])
        dtype = value.type.dtype
        acts.append(_quantized(dtype, shape) if dtype in SPREAD else torch.randn(shape).to(value.type.torch_dtype))
    return acts


def mismatch(
    got: torch.Tensor,
    expected: torch.Tensor,
    int8_agreement: float = INT8_AGREEMENT,
    float_tol: Mapping[torch.dtype, float] = FLOAT_TOL,
) -> str | None:
    """Why `got` is not `expected` up to the rounding of the output type (the module docstring; other kernels' bounds
    where `int8_agreement` and `float_tol` say), or None."""
    if got.dtype == torch.int8:
        diff = (got.int() - expected.int()).abs()
        equal = (diff == 0).float().mean().item()
        if diff.max() > 1 or equal < int8_agreement:
            return f"int8: max difference {diff.max().item()} steps, {equal:.2%} equal"
        return None
    if got.dtype == torch.float8_e4m3fn:
        got, expected = got.float(), expected.float()
        bad = (got - expected).abs() > FP8_RTOL * expected.abs() + FP8_ATOL
        return f"fp8: {int(bad.sum())} values off by more than one e4m3 step" if bad.any() else None
    tol = float_tol[got.dtype] * float(expected.float().abs().max())
    torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=tol)
    return None


def check(
    case: str, device: str, name: str | None = None, close: Callable[..., str | None] | None = None
) -> str | None:
    """None when the case's tactic (or tactic `name`) computes its layer as the reference does, within `close`
    (got, expected) -> None or the problem; `mismatch` by default."""
    make, own = CASES[case]
    name = name or own
    graph = make()
    (node,) = graph.nodes
    tactic = get_tactic("engine.qconv", name)
    reason = tactic.supports(node, BuilderConfig())
    assert reason is None, reason
    kernel = tactic.bind(node, BindContext(torch.device(device), BuilderConfig(), 4))
    for batch in BATCHES:
        acts = _inputs(graph, batch)
        order = [acts[0], *(v.data for v in node.inputs[1:] if v.data is not None), *acts[1:]]
        expected = node.opdef.run(order, node.attrs, {"batch": batch}, torch.device("cpu"))[0]
        on_device = [t.to(device) for t in order]
        if case not in NCHW_CASES:
            on_device = [
                t if v.data is not None else t.contiguous(memory_format=torch.channels_last)
                for t, v in zip(on_device, node.inputs)
            ]
        (got,) = kernel(on_device, [None], {"batch": batch})
        assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
        assert got.is_contiguous(memory_format=torch.channels_last), "the output is channels-last"
        problem = (close or mismatch)(got.cpu(), expected)
        if problem:
            return f"batch {batch}: {problem}"
    return None


def run_cases(device: str) -> dict:
    return case_results((case, lambda case=case: check(case, device)) for case in CASES)


if __name__ == "__main__":
    print_case_results(run_cases)
