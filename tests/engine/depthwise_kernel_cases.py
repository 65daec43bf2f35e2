"""The Triton depthwise convolution (tactics/conv_triton.py) against engine.conv's reference, one case table for
two runners.

`run_cases(device)` returns {case id: None or what went wrong}. Without a GPU, tests/engine/test_conv_triton.py
runs this file as a script under Triton's interpreter on CPU tensors and reads the JSON it prints; on a GPU the
same cases run in-process on CUDA. The reference computes in float64 from the same (float32) weights, so the
only error left is the kernel's float32 sums and its one rounding to the data's type.
"""

from __future__ import annotations

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}  # relative to the output's max


def depthwise(
    *,
    channels=40,
    size=(9, 11),
    kernel=3,
    stride=1,
    padding=1,
    dilation=1,
    dtype="float16",
    weight_dtype="float32",
    bias=True,
    activation="clip",
    residual=None,
):
    g = Graph("depthwise")
    x = g.add_input("x", TensorType(dtype, (BATCH, channels, *size)))
    w_dtype = TensorType(weight_dtype, ()).torch_dtype
    torch.manual_seed(channels + kernel)
    inputs = [x, g.add_constant(torch.randn(channels, 1, kernel, kernel).to(w_dtype), "w")]
    if bias:
        inputs.append(g.add_constant(torch.randn(channels).to(w_dtype), "b"))
    out_size = [(s + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for s in size]
    if residual:
        inputs.append(g.add_input("r", TensorType(dtype, (BATCH, channels, *out_size))))
    attrs = {"activation_attrs": (("a_min", 0.0), ("a_max", 6.0))} if activation == "clip" else {}
    y = g.call(
        "engine.conv",
        *inputs,
        ndim=2,
        strides=(stride, stride),
        padding=(padding, padding),
        dilation=(dilation, dilation),
        groups=channels,
        has_bias=bias,
        activation=activation,
        has_residual=bool(residual),
        residual_position=residual or "pre_activation",
        **attrs,
    )
    g.set_outputs([y])
    return g.verify()


CASES = {
    "mobilenet_3x3_relu6": lambda: depthwise(),
    "mobilenet_stride2": lambda: depthwise(stride=2, channels=96, size=(14, 14)),
    "efficientnet_5x5_silu": lambda: depthwise(kernel=5, padding=2, stride=2, activation="nn.silu", channels=72),
    "residual_pre_activation_relu": lambda: depthwise(activation="nn.relu", residual="pre_activation"),
    "residual_post_activation_no_bias": lambda: depthwise(bias=False, residual="post_activation"),
    "dilated_no_activation": lambda: depthwise(dilation=2, padding=2, activation=None, channels=33),
    "bfloat16_data": lambda: depthwise(dtype="bfloat16"),
    "float32_build": lambda: depthwise(dtype="float32", channels=17),
    "float16_weights": lambda: depthwise(weight_dtype="float16"),
}


def check(make, device: str) -> None:
    graph = make()
    (node,) = graph.nodes
    tactic = get_tactic("engine.conv", "triton_depthwise_nhwc")
    assert tactic.supports(node, BuilderConfig()) is None, tactic.supports(node, BuilderConfig())
    kernel = tactic.bind(node, BindContext(torch.device(device), BuilderConfig(), 4))
    torch.manual_seed(1)
    acts = [torch.randn(3, *v.type.shape[1:]).to(v.type.torch_dtype) for v in graph.inputs]
    order = [acts[0], *(v.data for v in node.inputs[1:] if v.data is not None), *acts[1:]]
    wide = [t.double() for t in order]
    expected = node.opdef.run(wide, node.attrs, {"batch": 3}, torch.device("cpu"))[0]
    on_device = [
        t.to(device).contiguous(memory_format=torch.channels_last)
        if t.dim() == 4 and t is not order[1]
        else t.to(device)
        for t in order
    ]
    (got,) = kernel(on_device, [None], {"batch": 3})
    assert got.dtype == acts[0].dtype and got.is_contiguous(memory_format=torch.channels_last)
    tol = TOL[got.dtype] * float(expected.abs().max())
    torch.testing.assert_close(got.cpu().double(), expected, rtol=0, atol=tol)


def run_cases(device: str) -> dict:
    return case_results((name, lambda make=make: check(make, device)) for name, make in CASES.items())


if __name__ == "__main__":
    print_case_results(run_cases)
