"""The Triton GEMM-with-epilogue tactics (engine.dense, and engine.conv as a 1x1 GEMM) against the op's
reference, one case table for two runners.

`run_cases(device)` binds every tile configuration to each case's node and returns {case id: None or what went
wrong}. Without a GPU, tests/engine/test_gemm_triton.py runs this file as a script under Triton's interpreter
on CPU tensors and reads the JSON it prints; on a GPU the same cases run in-process on CUDA. Shapes are not
multiples of the tiles, so the masked edges are exercised.
"""

from __future__ import annotations

import torch

from engine_helpers import case_results, print_case_results
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.engine.tactics.gemm_triton import TILES, TMA_TILES
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
TOL = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}
TD = {"float16": torch.float16, "bfloat16": torch.bfloat16}
SEARCH_ALL = BuilderConfig(fp16=True, optimization_level=5)  # the wide and TMA tiles are searched from level 4


def layer(op: str, *, activation=None, attrs=(), residual=None, dtype="float16", k=40, n=72, tokens=5):
    """A one-node graph: engine.dense over [B, tokens, k] or a 1x1 engine.conv over [B, k, 3, 5]."""
    g = Graph(op)
    conv = op == "engine.conv"
    shape = (BATCH, k, 3, 5) if conv else (BATCH, tokens, k)
    x = g.add_input("x", TensorType(dtype, shape))
    w = torch.randn(n, k, 1, 1) if conv else torch.randn(n, k)
    inputs = [x, g.add_constant((w / k**0.5).to(TD[dtype]), "w"), g.add_constant(torch.randn(n).to(TD[dtype]), "b")]
    if residual:
        inputs.append(g.add_input("r", TensorType(dtype, (BATCH, n, 3, 5) if conv else (BATCH, tokens, n))))
    attrs = {
        "has_bias": True,
        "activation": activation,
        "activation_attrs": tuple(attrs),
        "has_residual": residual is not None,
        "residual_position": residual or "pre_activation",
    }
    if conv:
        attrs.update(ndim=2, strides=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    g.set_outputs([g.call(op, *inputs, **attrs)])
    return g.verify()


RELU6 = (("a_min", 0.0), ("a_max", 6.0))
CASES = {
    "dense_bias": lambda: layer("engine.dense"),
    "dense_gelu_erf": lambda: layer("engine.dense", activation="nn.gelu", attrs=(("approximate", "none"),)),
    "dense_gelu_erf_even_k": lambda: layer(
        "engine.dense", activation="nn.gelu", attrs=(("approximate", "none"),), k=128, n=80
    ),
    # 150 rows x 264 columns: several tiles each way, more than the persistent kernel's programs under the interpreter
    "dense_many_tiles_residual": lambda: layer("engine.dense", residual="pre_activation", k=64, n=264, tokens=50),
    "dense_gelu_tanh": lambda: layer("engine.dense", activation="nn.gelu", attrs=(("approximate", "tanh"),)),
    "dense_bf16": lambda: layer("engine.dense", dtype="bfloat16"),
    "dense_residual": lambda: layer("engine.dense", residual="pre_activation"),
    "dense_silu_residual_after": lambda: layer("engine.dense", activation="nn.silu", residual="post_activation"),
    "conv1x1_relu6": lambda: layer("engine.conv", activation="clip", attrs=RELU6),
    "conv1x1_residual": lambda: layer("engine.conv", residual="pre_activation", k=24, n=16),
    "conv1x1_hardswish": lambda: layer("engine.conv", activation="nn.hardswish"),
}


def check(graph, tile: str, device: str) -> None:
    (node,) = graph.nodes
    t = get_tactic(node.op, tile)
    reason = t.supports(node, SEARCH_ALL)
    assert reason is None, reason
    kernel = t.bind(node, BindContext(torch.device(device), SEARCH_ALL, 4))
    torch.manual_seed(0)
    acts = [torch.randn(3, *v.type.shape[1:]).to(v.type.torch_dtype) for v in graph.inputs]
    if node.op == "engine.conv":
        acts = [a.contiguous(memory_format=torch.channels_last) for a in acts]
    feed = dict(zip((v.name for v in graph.inputs), acts))
    inputs = [feed[v.name].to(device) if v.data is None else v.data.to(device) for v in node.inputs]
    expected = node.opdef.run([i.float().cpu() for i in inputs], node.attrs, {"batch": 3}, torch.device("cpu"))[0]
    (got,) = kernel(inputs, [None], {"batch": 3})
    rtol, atol = TOL[got.dtype]
    torch.testing.assert_close(got.float().cpu(), expected, rtol=rtol, atol=atol)


def run_cases(device: str) -> dict:
    checks = []
    for name, make in CASES.items():
        graph = make()
        if device == "cpu" and graph.inputs[0].type.dtype == "bfloat16":
            continue  # Triton's interpreter multiplies bfloat16 tiles as raw 16-bit integers: GPU only
        checks += [
            (f"{name}[{tile}]", lambda graph=graph, tile=tile: check(graph, tile, device))
            for tile in (*TILES, *TMA_TILES)
        ]
    return case_results(checks)


if __name__ == "__main__":
    print_case_results(run_cases)
