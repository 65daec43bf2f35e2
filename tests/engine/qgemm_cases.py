"""The quantized GEMM tactics (engine.qdense, and engine.qconv as a 1x1 GEMM: qgemm_triton.py's Triton tiles and
qgemm_library.py's cuBLASLt calls) against the op's reference, one case table for two runners.

`run_cases(device)` binds every tactic of a case's 8-bit type to its node and returns {"case[tactic]": None or
what went wrong}; every case's channels suit the library calls too. Without a GPU,
tests/engine/test_qgemm.py runs this file as a script under Triton's interpreter on CPU tensors (the library
products through torch._int_mm / torch._scaled_mm on the CPU); on a GPU the same cases run in-process on CUDA.
Shapes are not multiples of the tiles, so the masked and wrapped edges are exercised; 15 rows (a batch of 3 x 5
tokens) are fewer than torch._int_mm takes on CUDA, so its padding is too.

How close is close enough: int8 products are exact in both (integer sums below 2**24 in the float32 reference,
the same in int32), fp8 ones differ only in the order of their float32 sums, but the activations' float32 math
differs in the last bits, so an int8 output may land one quantization step off where a value sits at a rounding
boundary (at most 1, on at most 1% of the elements; 5% for an fp8 layer, whose sums on a GPU's tensor cores are
less exact); an fp8 output within one e4m3 step (1/8 relative, or the smallest subnormal); a float output within
its type's rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.engine.tactics.qgemm_library import LIBRARIES
from tensorforge.engine.tactics.qgemm_triton import TILES_OF, TMA_ALIGNMENT, TMA_TILES_OF, tactic_name
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
ENV = {"batch": 3}
CONFIG = BuilderConfig(optimization_level=3)
FP8 = "float8_e4m3fn"
# float outputs: (rtol, atol) per type
TOL = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}
FP8_TOL = (1 / 8, 2.0**-9)  # one e4m3 step: 1/8 of the value at most, the smallest subnormal near zero
# int8 outputs: the share of elements that must be equal (the others one step off), by the layer's type: an fp8
# layer's sums on the GPU are further from the float32 reference's than rounding (on an H100 every fp8 tactic,
# cuBLASLt's too, put 3% of fp8_residual_fp8_to_int8's outputs one step off)
INT8_EQUAL = {"int8": 0.99, FP8: 0.95}
RELU6 = (("a_min", 0.0), ("a_max", 6.0))


def quantized(dtype: str, shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random 8-bit data of `dtype`: int8 over its whole range, fp8 from a normal distribution (scaled to use
    several binades)."""
    if dtype == "int8":
        return torch.randint(-128, 128, tuple(shape), dtype=torch.int8, generator=generator)
    return (torch.randn(tuple(shape), generator=generator) * 8).to(torch.float8_e4m3fn)


def layer(
    op: str = "engine.qdense",
    *,
    dtype: str = "int8",
    out: str = "float16",
    out_scale: float | None = None,
    activation: str | None = None,
    attrs=(),
    bias: bool = True,
    residual: str | None = None,
    residual_dtype: str = "float16",
    residual_scale: float | None = None,
    k: int = 40,
    n: int = 72,
    tokens: int = 5,
) -> Graph:
    """A one-node graph: engine.qdense over [B, tokens, k] or a 1x1 engine.qconv over [B, k, 3, 5], its weight,
    per-channel scale and bias constants, a residual input where `residual` names its position."""
    g = Graph(op)
    conv = op == "engine.qconv"
    weights = torch.Generator().manual_seed(1)
    x = g.add_input("x", TensorType(dtype, (BATCH, k, 3, 5) if conv else (BATCH, tokens, k)))
    w = quantized(dtype, (n, k, 1, 1) if conv else (n, k), weights)
    # the scale makes the product about unit size: int8 sums of k products of about 74 x 74 (the range's
    # standard deviation), fp8 ones of about 8 x 8
    typical = (74.0 * 74.0 if dtype == "int8" else 64.0) * k**0.5
    scale = (0.5 + torch.rand(n, generator=weights)) / typical
    inputs = [x, g.add_constant(w, "w"), g.add_constant(scale, "scale")]
    if bias:
        inputs.append(g.add_constant(torch.randn(n, generator=weights), "b"))
    if residual:
        shape = (BATCH, n, 3, 5) if conv else (BATCH, tokens, n)
        inputs.append(g.add_input("r", TensorType(residual_dtype, shape)))
    node_attrs = {
        "has_bias": bias,
        "activation": activation,
        "activation_attrs": tuple(attrs),
        "has_residual": residual is not None,
        "residual_position": residual or "pre_activation",
        "out_dtype": out,
        "out_scale": out_scale,
        "residual_scale": residual_scale,
    }
    if conv:
        node_attrs.update(ndim=2, strides=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    g.set_outputs([g.call(op, *inputs, **node_attrs)])
    return g.verify()


GELU = (("approximate", "none"),)
CASES = {
    "int8_bias": lambda: layer(),
    "int8_no_bias_f32": lambda: layer(bias=False, out="float32"),
    "int8_relu_to_int8": lambda: layer(activation="nn.relu", out="int8", out_scale=0.02),
    "int8_gelu_to_int8": lambda: layer(activation="nn.gelu", attrs=GELU, out="int8", out_scale=0.02),
    "int8_gelu_tanh": lambda: layer(activation="nn.gelu", attrs=(("approximate", "tanh"),)),
    "int8_silu_f32": lambda: layer(activation="nn.silu", out="float32"),
    "int8_relu6_to_int8": lambda: layer(activation="clip", attrs=RELU6, out="int8", out_scale=0.05),
    "int8_to_fp8": lambda: layer(activation="nn.relu", out=FP8, out_scale=0.01),
    "int8_bf16": lambda: layer(out="bfloat16"),
    "int8_residual_pre_relu": lambda: layer(activation="nn.relu", residual="pre_activation"),
    "int8_residual_post_silu_f32": lambda: layer(
        activation="nn.silu", residual="post_activation", residual_dtype="float32", out="float32"
    ),
    "int8_residual_int8_to_int8": lambda: layer(
        residual="pre_activation", residual_dtype="int8", residual_scale=0.01, out="int8", out_scale=0.03
    ),
    # K a multiple of every BLOCK_K (EVEN_K: no masks at all) and 150 rows x 264 columns: several tiles each way
    "int8_even_k_many_tiles": lambda: layer(activation="nn.gelu", attrs=GELU, k=256, n=264, tokens=50),
    "fp8_bias": lambda: layer(dtype=FP8, k=48, n=80),
    "fp8_gelu_to_fp8": lambda: layer(dtype=FP8, activation="nn.gelu", attrs=GELU, out=FP8, out_scale=0.05, k=48, n=80),
    "fp8_residual_fp8_to_int8": lambda: layer(
        dtype=FP8,
        residual="post_activation",
        residual_dtype=FP8,
        residual_scale=0.125,
        activation="nn.relu",
        out="int8",
        out_scale=0.03,
        k=96,
        n=48,
    ),
    "conv1x1_int8_relu6_to_int8": lambda: layer(
        "engine.qconv", activation="clip", attrs=RELU6, out="int8", out_scale=0.05
    ),
    "conv1x1_int8_residual": lambda: layer("engine.qconv", residual="pre_activation", k=24, n=16),
    "conv1x1_fp8_silu": lambda: layer("engine.qconv", dtype=FP8, activation="nn.silu", k=32, n=48),
}


def tactics_for(dtype: str, k: int = TMA_ALIGNMENT) -> list[str]:
    """Every quantized GEMM tactic multiplying `dtype` that takes a layer of `k` input channels: the Triton tiles,
    the persistent TMA tiles (k a multiple of 16), then the library calls."""
    tma = [tactic_name(dtype, tile, tma=True) for tile in TMA_TILES_OF[dtype]] if k % TMA_ALIGNMENT == 0 else []
    return [
        *(tactic_name(dtype, tile) for tile in TILES_OF[dtype]),
        *tma,
        *(name for name, spec in LIBRARIES.items() if spec[0] == dtype),
    ]


def input_channels(graph: Graph) -> int:
    """K of the one layer in `graph`: its weight's values per output channel."""
    (node,) = graph.nodes
    return math.prod(node.inputs[1].type.concrete_shape()[1:])


def example_inputs(graph: Graph, device: str) -> list[torch.Tensor]:
    """The node's input tensors at batch 3 (seeded): 8-bit data and residuals, float residuals, the constants; a
    convolution's activations channels-last, as its tactics receive them in a plan."""
    (node,) = graph.nodes
    torch.manual_seed(0)
    feed = {}
    for v in graph.inputs:
        shape = (ENV["batch"], *v.type.shape[1:])
        t = quantized(v.type.dtype, shape) if v.type.dtype in ("int8", FP8) else torch.randn(shape)
        t = t.to(v.type.torch_dtype)
        feed[v.name] = t.contiguous(memory_format=torch.channels_last) if node.op == "engine.qconv" else t
    return [feed[v.name].to(device) if v.data is None else v.data.to(device) for v in node.inputs]


def compare(got: torch.Tensor, expected: torch.Tensor, layer_dtype: str) -> str | None:
    """None when the output of a tactic for a layer multiplying `layer_dtype` is close enough to the reference's
    (the module docstring), else how far off."""
    if got.dtype != expected.dtype or got.shape != expected.shape:
        return f"got {got.dtype} {tuple(got.shape)}, expected {expected.dtype} {tuple(expected.shape)}"
    if got.dtype == torch.int8:
        diff = (got.int() - expected.int()).abs()
        equal = (diff == 0).float().mean().item()
        if diff.max().item() > 1 or equal < INT8_EQUAL[layer_dtype]:
            return f"int8 output: max step difference {diff.max().item()}, {equal:.2%} equal"
        return None
    rtol, atol = FP8_TOL if got.dtype == torch.float8_e4m3fn else TOL[got.dtype]
    torch.testing.assert_close(got.float(), expected.float(), rtol=rtol, atol=atol)
    return None


def check(graph: Graph, name: str, device: str, close: Callable[..., str | None] | None = None) -> str | None:
    """None when tactic `name` computes the one-node `graph` as its reference does, within `close` (got, expected,
    the layer's 8-bit type) -> None or the problem; `compare` by default."""
    (node,) = graph.nodes
    t = get_tactic(node.op, name)
    reason = t.supports(node, CONFIG)
    assert reason is None, reason
    kernel = t.bind(node, BindContext(torch.device(device), CONFIG, 4))
    inputs = example_inputs(graph, device)
    (expected,) = node.opdef.run([i.cpu() for i in inputs], node.attrs, ENV, torch.device("cpu"))
    offered = None
    if node.op == "engine.qdense":  # the arena view a dense tactic writes straight into
        offered = torch.empty(expected.shape, dtype=expected.dtype, device=device)
    (got,) = kernel(inputs, [offered], ENV)
    if offered is not None and got.data_ptr() != offered.data_ptr():
        return "the kernel did not write into the contiguous arena view it was offered"
    if node.op == "engine.qconv" and not got.is_contiguous(memory_format=torch.channels_last):
        return "a 1x1 convolution's output must be channels-last"
    return (close or compare)(got.cpu(), expected, node.inputs[0].type.dtype)


def run_cases(device: str) -> dict:
    checks = []
    for case, make in CASES.items():
        graph = make()
        dtype = graph.inputs[0].type.dtype
        checks += [
            (f"{case}[{name}]", lambda graph=graph, name=name: check(graph, name, device))
            for name in tactics_for(dtype, input_channels(graph))
        ]
    return case_results(checks)


if __name__ == "__main__":
    print_case_results(run_cases)
