"""fuse_quantized_layers and the quantized layers it makes (engine.qconv / engine.qdense), on the CPU: which Q/DQ
patterns become 8-bit layers and which do not, that the plan computes the quantized graph's numbers (the IR
reference of the graph as `tensorforge.quantize` made it), and that the weights are stored in 8 bits.

The GPU kernels of these layers are tested in test_qgemm.py / test_qconv_triton.py (Triton's interpreter) and
test_gpu_quantized.py (CUDA)."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from helpers import plan_ops
from quant_models import ResidualCNN, TinyBlock, randomized
from tensorforge.engine.passes import PassContext, run_passes
from tensorforge.engine.passes.dead_code import dead_code
from tensorforge.engine.passes.fold_batch_norm import fold_batch_norm
from tensorforge.engine.passes.fuse_bias_activation import fuse_bias_activation
from tensorforge.engine.passes.fuse_quantized_layers import fuse_quantized_layers
from tensorforge.ir import Graph, Sym, TensorType, execute

# relative L2 error of the plan against the quantized graph's IR reference: a float32 plan differs only where a
# float32 sum rounds differently (an 8-bit output one step apart, rarely); float16 adds its own rounding
TOLERANCE = {False: 1e-5, True: 5e-3}
MODELS = {
    "cnn": (lambda: randomized(ResidualCNN()), (4, 3, 16, 16), {"engine.qconv": 3, "engine.qdense": 2}),
    "block": (lambda: TinyBlock().eval(), (4, 6, 16), {"engine.qdense": 6}),
}


def _quantized(model_name: str, precision: str) -> tuple[Graph, tuple[int, ...], dict[str, int]]:
    make, shape, layers = MODELS[model_name]
    torch.manual_seed(0)
    calib = [torch.randn(*shape) for _ in range(4)]
    graph = forge.quantize(make(), calib, precision=precision, method="minmax", include_first_last=True)
    return graph, shape, layers


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("precision", ["int8", "fp8"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_quantized_models_run_8_bit_layers(model_name, precision, fp16):
    graph, shape, layers = _quantized(model_name, precision)
    partitioned, config = forge.partition_for_tensorforge(graph)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    module = forge.build(partitioned, config, device="cpu", fp16=fp16)
    torch.manual_seed(1)
    x = torch.randn(*shape)
    expected, actual = execute(graph, x)[0], module(x)
    ops = plan_ops(module)
    for op, count in layers.items():
        assert ops.count(op) == count, ops
    assert "engine.conv" not in ops and "engine.dense" not in ops, ops
    error = float((actual.float() - expected).norm() / expected.norm())
    assert error <= TOLERANCE[fp16], error
    ((plan,),) = module.plans().values()
    dtype = {"int8": "int8", "fp8": "float8_e4m3fn"}[precision]
    quantized = [layer for layer in plan.layers if layer.op.startswith("engine.q")]
    assert quantized and all(layer.precision == dtype for layer in quantized)


def test_weights_are_stored_in_8_bits():
    graph, _, _ = _quantized("cnn", "int8")
    out = run_passes(graph, PassContext())
    layers = [n for n in out.nodes if n.op in ("engine.qconv", "engine.qdense")]
    assert len(layers) == 5
    for layer in layers:
        weight, scale = layer.inputs[1], layer.inputs[2]
        assert weight.data is not None and weight.data.dtype == torch.int8
        assert scale.data is not None and scale.data.dtype == torch.float32
        assert scale.type.shape == (weight.type.shape[0],)
    matrices = [v for v in graph.constants.values() if v.type.dtype == "float32" and v.type.rank > 1]
    float_bytes = sum(v.type.nbytes() for v in matrices)
    int8_bytes = sum(layer.inputs[1].type.nbytes() for layer in layers)
    assert int8_bytes * 4 == float_bytes  # every float weight matrix became its int8 quarter


def test_requantize_residual_and_counters():
    graph, _, _ = _quantized("cnn", "int8")
    ctx = PassContext()
    out = run_passes(graph, ctx)
    assert ctx.counters["fuse_quantized_layers"] == 5
    # stem, conv1 (its relu feeds conv2's pair) and hidden write int8; conv2 (before the mean) and the classifier
    # write float
    assert ctx.counters["fuse_quantized_layers.requantize"] == 3
    assert ctx.counters["fuse_quantized_layers.residual"] == 1
    residual_layers = [n for n in out.nodes if n.op == "engine.qconv" and n.attrs["has_residual"]]
    (layer,) = residual_layers
    assert layer.inputs[-1].type.dtype == "int8" and isinstance(layer.attrs["residual_scale"], float)


def _qdq_dense(zero_point: int = 0, extra_reader: bool = False) -> Graph:
    """x -> Q -> DQ (zero point `zero_point`) -> dense(DQ(W_q)) -> relu -> Q -> DQ; `extra_reader`: the relu's
    output is a graph output too."""
    torch.manual_seed(0)
    g = Graph("qdq_dense")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 8)))
    s = g.add_constant(torch.tensor(0.02), "s")
    zp = g.add_constant(torch.tensor(zero_point, dtype=torch.int8), "zp")
    q = g.call("quantize", x, s, zp, dtype="int8")
    dq = g.call("dequantize", q, s, zp)
    w_q = g.add_constant(torch.randint(-127, 128, (6, 8), dtype=torch.int8), "w_q")
    w_s = g.add_constant(torch.rand(6) * 0.01 + 0.001, "w_s")
    w = g.call("dequantize", w_q, w_s, axis=0)
    y = g.call("nn.relu", g.call("nn.dense", dq, w))
    out_s = g.add_constant(torch.tensor(0.01), "out_s")
    result = g.call("dequantize", g.call("quantize", y, out_s, dtype="int8"), out_s)
    g.set_outputs([result, y] if extra_reader else [result])
    return g.verify()


def test_a_zero_point_is_not_fused_and_the_weight_is_dequantized_once():
    graph = _qdq_dense(zero_point=3)
    ctx = PassContext()
    out = run_passes(graph, ctx, verify_each=True)
    assert ctx.counters["fuse_quantized_layers"] == 0
    assert ctx.counters["fuse_quantized_layers.float_weights"] == 1
    assert "engine.dense" in [n.op for n in out.nodes]
    x = torch.randn(5, 8)
    assert torch.equal(execute(out, x)[0], execute(graph, x)[0])


@pytest.mark.parametrize("extra_reader", [False, True], ids=["sole-reader", "output-read-too"])
def test_the_quantize_after_a_layer_is_fused_only_when_it_is_the_sole_reader(extra_reader):
    graph = _qdq_dense(extra_reader=extra_reader)
    ctx = PassContext()
    out = run_passes(graph, ctx, verify_each=True)
    (layer,) = [n for n in out.nodes if n.op == "engine.qdense"]
    assert layer.attrs["out_dtype"] == ("float32" if extra_reader else "int8")
    assert ctx.counters["fuse_quantized_layers.requantize"] == int(not extra_reader)
    x = torch.randn(5, 8) * 3
    for actual, expected in zip(execute(out, x), execute(graph, x)):
        assert torch.allclose(actual, expected, atol=1e-6)


def _conv_bn_qdq(per_tensor: bool) -> Graph:
    torch.manual_seed(0)
    g = Graph("conv_bn_qdq")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 4, 6, 6)))
    s = g.add_constant(torch.tensor(0.03), "s")
    dq = g.call("dequantize", g.call("quantize", x, s, dtype="int8"), s)
    w_q = g.add_constant(torch.randint(-127, 128, (5, 4, 3, 3), dtype=torch.int8), "w_q")
    w_s = g.add_constant(torch.tensor(0.004) if per_tensor else torch.rand(5) * 0.01 + 0.001, "w_s")
    w = g.call("dequantize", w_q, w_s, axis=None if per_tensor else 0)
    y = g.call("nn.conv2d", dq, w, strides=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    params = [g.add_constant(t, n) for t, n in ((torch.randn(5), "gamma"), (torch.randn(5), "beta"))]
    stats = [g.add_constant(torch.randn(5) * 0.1, "mean"), g.add_constant(torch.rand(5) + 0.5, "var")]
    g.set_outputs([g.call("nn.batch_norm", y, *params, *stats, axis=1, epsilon=1e-5)])
    return g.verify()


@pytest.mark.parametrize("per_tensor", [False, True], ids=["per-channel", "per-tensor"])
def test_batch_norm_folds_into_a_quantized_weights_scales(per_tensor):
    graph = _conv_bn_qdq(per_tensor)
    ctx = PassContext()
    folded = fold_batch_norm(graph, ctx)
    assert ctx.counters["fold_batch_norm"] == 1
    (dq,) = [n for n in folded.nodes if n.op == "dequantize" and n.inputs[0].data is not None]
    assert dq.inputs[0].data is graph.value_named("w_q").data  # the 8-bit values are untouched
    assert dq.attrs["axis"] == 0 and dq.inputs[1].type.shape == (5,)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(execute(folded, x)[0], execute(graph, x)[0], atol=1e-5)
    fused = dead_code(fuse_quantized_layers(fuse_bias_activation(folded, ctx), ctx), ctx)
    assert [n.op for n in fused.nodes] == ["quantize", "engine.qconv"]
    assert torch.allclose(execute(fused, x)[0], execute(graph, x)[0], atol=1e-5)


def test_a_layer_reading_float_data_keeps_float_kernels():
    """A dense layer whose data is not dequantized (the weight alone is): no 8-bit layer, an exactly dequantized
    float weight."""
    graph = _qdq_dense()
    dense = next(n for n in graph.nodes if n.op == "nn.dense")
    dense.replace_input_at(0, graph.inputs[0])
    graph.verify()
    ctx = PassContext()
    out = run_passes(graph, ctx, verify_each=True)
    assert ctx.counters["fuse_quantized_layers"] == 0
    assert "engine.qdense" not in [n.op for n in out.nodes]


def test_8_bit_projections_of_one_input_become_one_wide_layer():
    """Attention's Q, K, V projections of one quantized input: one engine.qdense with stacked weights and scales."""
    torch.manual_seed(0)
    g = Graph("qkv")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 4, 16)))
    s = g.add_constant(torch.tensor(0.02), "s")
    dq = g.call("dequantize", g.call("quantize", x, s, dtype="int8"), s)
    outputs = []
    for name in "qkv":
        w_q = g.add_constant(torch.randint(-127, 128, (16, 16), dtype=torch.int8), f"w_{name}")
        w_s = g.add_constant(torch.rand(16) * 0.01 + 0.001, f"s_{name}")
        w = g.call("dequantize", w_q, w_s, axis=0)
        outputs.append(
            g.call("nn.bias_add", g.call("nn.dense", dq, w), g.add_constant(torch.randn(16), f"b_{name}"), axis=-1)
        )
    g.set_outputs(outputs)
    g.verify()
    ctx = PassContext()
    out = run_passes(g, ctx, verify_each=True)
    layers = [n for n in out.nodes if n.op == "engine.qdense"]
    assert len(layers) == 1 and ctx.counters["fuse_horizontal_dense"] == 3
    assert layers[0].inputs[1].type.shape == (48, 16) and layers[0].inputs[2].type.shape == (48,)
    x = torch.randn(3, 4, 16)
    for actual, expected in zip(execute(out, x), execute(g, x)):
        assert torch.allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_a_layer_norm_writes_the_8_bit_rows_its_next_layers_read(fp16):
    """A quantized transformer's norm stores its quantized output in the same pass (no quantize kernel after it)."""
    graph, _, _ = _quantized("block", "int8")
    ctx = PassContext(config=forge.engine.BuilderConfig(fp16=fp16))
    out = run_passes(graph, ctx, verify_each=True)
    norms = [n for n in out.nodes if n.op == "engine.layer_norm"]
    assert len(norms) == 2 and all(n.attrs["quantize_dtype"] == "int8" for n in norms)
    for norm in norms:
        assert norm.outputs[-1].type.dtype == "int8"
        assert all(reader.op == "engine.qdense" for reader in out.users_of(norm.outputs[-1]))
    x = torch.randn(4, 6, 16)
    error = float((execute(out, x)[0].float() - execute(graph, x)[0]).norm() / execute(graph, x)[0].norm())
    assert error <= TOLERANCE[fp16], error


@pytest.mark.parametrize("activation_scale", [1e-44, 2e-38], ids=["subnormal", "subnormal-product"])
def test_subnormal_scales_are_not_folded_into_one_factor(activation_scale):
    """A tensor calibrated on values near 0 (a dead SiLU branch of a random-weight MobileViT) has a subnormal
    scale, or a normal one whose product with a weight scale is subnormal: the fused layer's factor s_x * s_w would
    be 0 (all outputs 0) or lose bits (3e-6 off) where the Q/DQ graph's dequantized operands are normal numbers.
    Such a layer stays in floating point, computing the graph's numbers."""
    torch.manual_seed(0)
    g = Graph("tiny_scale")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 8)))
    s = g.add_constant(torch.tensor(activation_scale), "s")
    dq = g.call("dequantize", g.call("quantize", x, s, dtype="int8"), s)
    w_q = g.add_constant(torch.randint(-127, 128, (6, 8), dtype=torch.int8), "w_q")
    w = g.call("dequantize", w_q, g.add_constant(torch.rand(6) * 0.01 + 0.001, "w_s"), axis=0)
    g.set_outputs([g.call("nn.dense", dq, w)])
    g.verify()
    ctx = PassContext()
    out = run_passes(g, ctx, verify_each=True)
    assert ctx.counters["fuse_quantized_layers"] == 0
    assert "engine.qdense" not in [n.op for n in out.nodes]
    x = torch.randn(5, 8) * activation_scale * 60
    expected = execute(g, x)[0]
    assert expected.abs().max() > 0  # the graph's result is small, not zero
    assert torch.equal(execute(out, x)[0], expected)


def test_normal_scales_still_fuse_next_to_the_subnormal_check():
    """The smallest normal scales (products well inside float32) still make an 8-bit layer equal to the graph."""
    graph = _qdq_dense()
    ctx = PassContext()
    out = run_passes(graph, ctx, verify_each=True)
    assert ctx.counters["fuse_quantized_layers"] == 1
    x = torch.randn(5, 8)
    torch.testing.assert_close(execute(out, x)[0], execute(graph, x)[0], rtol=0, atol=1e-6)


class _Conv1DMLP(torch.nn.Module):
    """GPT-2's MLP: its Conv1D layers are `addmm(bias, x, W)` with W [in, out], a matmul by a constant, not a
    dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = torch.nn.Parameter(torch.randn(8, 24) * 0.3), torch.nn.Parameter(torch.randn(24))
        self.w2, self.b2 = torch.nn.Parameter(torch.randn(24, 8) * 0.2), torch.nn.Parameter(torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 8)
        h = torch.nn.functional.gelu(torch.addmm(self.b1, rows, self.w1))
        return x + torch.addmm(self.b2, h, self.w2).reshape(x.shape)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_a_matmul_by_a_quantized_constant_is_an_8_bit_dense_layer(precision):
    """GPT-2's Conv1D (a matmul by a [K, N] weight quantized per column) becomes engine.qdense with the 8-bit weight
    transposed: no dequantize left before a float matmul, and the plan computes the Q/DQ graph's numbers."""
    torch.manual_seed(0)
    calib = [torch.randn(3, 5, 8) for _ in range(3)]
    graph = forge.quantize(_Conv1DMLP().eval(), calib, precision=precision, method="minmax")
    assert sum(n.op == "matmul" for n in graph.nodes) == 2
    partitioned, config = forge.partition_for_tensorforge(graph)
    module = forge.build(partitioned, config, device="cpu")
    x = torch.randn(4, 5, 8)
    expected, actual = execute(graph, x)[0], module(x)
    ops = plan_ops(module)
    assert ops.count("engine.qdense") == 2 and "matmul" not in ops, ops
    assert ops.count("dequantize") == 0, ops  # the first layer's input is quantized, nothing else dequantized
    error = float((actual - expected).norm() / expected.norm())
    assert error <= TOLERANCE[False], error


def test_a_shared_matmul_weight_is_transposed_once_and_a_per_tensor_scale_repeats():
    """Two matmuls reading one 8-bit [K, N] constant with a per-tensor scale: one transposed constant, each layer's
    scale the input's times the weight's for every column."""
    torch.manual_seed(0)
    g = Graph("shared_matmul_weight")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 8)))
    w_s = g.add_constant(torch.tensor(0.004), "w_s")
    w = g.call("dequantize", g.add_constant(torch.randint(-127, 128, (8, 6), dtype=torch.int8), "w_q"), w_s)
    outputs = []
    for scale in (0.02, 0.03):
        s = g.add_constant(torch.tensor(scale), f"s{len(outputs)}")
        outputs.append(g.call("matmul", g.call("dequantize", g.call("quantize", x, s, dtype="int8"), s), w))
    g.set_outputs(outputs)
    g.verify()
    ctx = PassContext()
    out = run_passes(g, ctx, verify_each=True)
    layers = [n for n in out.nodes if n.op == "engine.qdense"]
    assert len(layers) == 2 and layers[0].inputs[1] is layers[1].inputs[1]
    assert layers[0].inputs[1].type.shape == (6, 8)
    assert torch.equal(layers[1].inputs[2].data, (torch.tensor(0.03) * torch.tensor(0.004)).expand(6))
    x = torch.randn(5, 8)
    for actual, expected in zip(execute(out, x), execute(g, x)):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
