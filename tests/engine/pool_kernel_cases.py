"""The channels-last Triton max pool against the op's reference, one case table for two runners.

`run_cases(device)` returns {case id: None or what went wrong}. Without a GPU, tests/engine/test_pool_triton.py
runs this file as a script under Triton's interpreter on CPU tensors and reads the JSON it prints; on a GPU the
same cases run in-process on CUDA. Pooling picks inputs exactly, so results must be bit for bit equal.
"""

from __future__ import annotations

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")


def pool(
    *,
    pool_size=(3, 3),
    strides=(2, 2),
    padding=(0, 0),
    dilation=(1, 1),
    ceil_mode=False,
    channels=80,
    size=(13, 11),
    dtype="float16",
):
    g = Graph("pool")
    x = g.add_input("x", TensorType(dtype, (BATCH, channels, *size)))
    g.set_outputs(
        [
            g.call(
                "nn.max_pool2d",
                x,
                pool_size=pool_size,
                strides=strides,
                padding=padding,
                dilation=dilation,
                ceil_mode=ceil_mode,
            )
        ]
    )
    return g.verify()


CASES = {
    "resnet_stem": lambda: pool(padding=(1, 1)),
    "googlenet_ceil": lambda: pool(ceil_mode=True),
    "inception_branch_stride1": lambda: pool(strides=(1, 1), padding=(1, 1), channels=192),
    "dilated_float32": lambda: pool(pool_size=(2, 3), dilation=(2, 1), dtype="float32", channels=7),
    # a quantized graph pools its 8-bit tensors (padding: the masked taps must not win)
    "resnet_stem_int8": lambda: pool(padding=(1, 1), dtype="int8"),
    "resnet_stem_fp8": lambda: pool(padding=(1, 1), dtype="float8_e4m3fn"),
}


def check(make, device: str) -> None:
    (node,) = make().nodes
    tactic = get_tactic("nn.max_pool2d", "triton_nhwc")
    assert tactic.supports(node, BuilderConfig()) is None
    kernel = tactic.bind(node, BindContext(torch.device(device), BuilderConfig(), 4))
    x_type = node.inputs[0].type
    x = torch.randn(3, *x_type.shape[1:]) * 40 - 30  # mostly negative: a padded tap read as 0 would win
    x = x.round().clamp(-128, 127).to(x_type.torch_dtype)
    if x.is_floating_point() and x_type.dtype != "float8_e4m3fn":
        x[0, 0, 0, 0] = float("nan")
    expected = node.opdef.run([x], node.attrs, {"batch": 3}, torch.device("cpu"))[0]
    (got,) = kernel([x.to(device).contiguous(memory_format=torch.channels_last)], [None], {"batch": 3})
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0, equal_nan=True)


def run_cases(device: str) -> dict:
    return case_results((name, lambda make=make: check(make, device)) for name, make in CASES.items())


if __name__ == "__main__":
    print_case_results(run_cases)
