"""The `cudnn_nhwc_triton` conv tactic (convolution, then bias + residual + activation as one generated
kernel in place on the channels-last output) against the engine.conv reference, one case table for two runners.

`run_cases(device)` binds the tactic to each case's engine.conv node and returns {case id: None or what went
wrong}. Without a GPU, tests/engine/test_conv_epilogue.py runs this file as a script under Triton's
interpreter on CPU tensors (F.conv2d runs channels-last on the CPU too) and reads the JSON it prints; on a GPU
the same cases run in-process on CUDA.
"""

from __future__ import annotations

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.passes import PassContext, fold_batch_norm, fuse_bias_activation
from tensorforge.engine.precision import tf32_mode
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (3e-3, 3e-3)}
TD = {"float32": torch.float32, "float16": torch.float16}


def conv_layer(
    *, activation: str | None, attrs=(), residual: str | None = None, dtype="float32", groups=1, channels=8, bias=True
):
    """A one-layer graph: engine.conv (+ bias, residual, activation fused by the builder's passes)."""
    g = Graph("conv")
    x = g.add_input("x", TensorType(dtype, (BATCH, channels, 9, 7)))
    w = g.add_constant(torch.randn(channels, channels // groups, 3, 3).to(TD[dtype]) * 0.3, "w")
    y = g.call("nn.conv2d", x, w, strides=(1, 1), padding=(1, 1), groups=groups)
    if bias:
        y = g.call("nn.bias_add", y, g.add_constant(torch.randn(channels).to(TD[dtype]), "b"), axis=1)
    if residual == "pre_activation":
        y = g.call("add", y, x)
    if activation:
        y = g.call(activation, y, **dict(attrs))
    if residual == "post_activation":
        y = g.call("add", y, x)
    g.set_outputs([y])
    ctx = PassContext()
    out = fuse_bias_activation(fold_batch_norm(g.verify(), ctx), ctx)
    assert [n.op for n in out.nodes] == ["engine.conv"], str(out)
    return out


CASES = {
    "bias_relu6": lambda: conv_layer(activation="clip", attrs=(("a_min", 0.0), ("a_max", 6.0))),
    "bias_only_fp16": lambda: conv_layer(activation=None, dtype="float16"),
    "depthwise_bias_relu6_fp16": lambda: conv_layer(
        activation="clip", attrs=(("a_min", 0.0), ("a_max", 6.0)), dtype="float16", groups=8
    ),
    "residual_pre_relu": lambda: conv_layer(activation="nn.relu", residual="pre_activation"),
    "residual_post_silu": lambda: conv_layer(activation="nn.silu", residual="post_activation"),
    "no_bias_hardswish_fp16": lambda: conv_layer(activation="nn.hardswish", dtype="float16", bias=False),
}


def check(make, device: str) -> None:
    graph = make()
    (node,) = graph.nodes
    tactic = get_tactic("engine.conv", "cudnn_nhwc_triton")
    reason = tactic.supports(node, BuilderConfig())
    assert reason is None, reason
    kernel = tactic.bind(node, BindContext(torch.device(device), BuilderConfig(), 4))
    x_type = graph.inputs[0].type
    x = torch.randn(3, *x_type.shape[1:]).to(x_type.torch_dtype)
    inputs = [x.to(device) if v.data is None else v.data.to(device) for v in node.inputs]
    expected = node.opdef.run([t.cpu() for t in inputs], node.attrs, {"batch": 3}, torch.device("cpu"))[0]
    with tf32_mode(False):  # float32 cases compare with the CPU's IEEE convolution
        (got,) = kernel(inputs, [None], {"batch": 3})
    assert got.is_contiguous(memory_format=torch.channels_last), "the output stays channels-last"
    rtol, atol = TOL[expected.dtype]
    torch.testing.assert_close(got.cpu(), expected, rtol=rtol, atol=atol)


def run_cases(device: str) -> dict:
    return case_results((name, lambda make=make: check(make, device)) for name, make in CASES.items())


if __name__ == "__main__":
    print_case_results(run_cases)
