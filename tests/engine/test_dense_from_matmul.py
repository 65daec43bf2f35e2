"""dense_from_matmul: a matmul by a constant matrix (float, or the dequantize of an 8-bit one) becomes nn.dense with
the matrix transposed once, and a constant vector added to a dense layer's output its nn.bias_add, so that the bias,
the activation and the residual fuse into the layer (fuse_bias_activation) and quantized ones become 8-bit layers
with their bias (fuse_quantized_layers): GPT-2's Conv1D (`torch.addmm`) and `x @ W + b` written by hand."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from helpers import TOLERANCES, assert_close
from tensorforge.engine.epilogue import Epilogue
from tensorforge.engine.passes import PassContext, run_passes
from tensorforge.engine.passes.dense_from_matmul import dense_from_matmul
from tensorforge.ir import Graph, Sym, TensorType, execute


class _Conv1DBlock(torch.nn.Module):
    """GPT-2's MLP and residual: Conv1D layers are `addmm(bias, rows, W)` with W [in, out]; the second written as
    `h @ W + b`."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = torch.nn.Parameter(torch.randn(8, 24) * 0.3), torch.nn.Parameter(torch.randn(24))
        self.w2, self.b2 = torch.nn.Parameter(torch.randn(24, 8) * 0.2), torch.nn.Parameter(torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(torch.addmm(self.b1, x.reshape(-1, 8), self.w1)).reshape(*x.shape[:-1], 24)
        return x + (h @ self.w2 + self.b2)


def _plan_nodes(module) -> list:
    return [n for plans in module.plans().values() for plan in plans for n in plan.graph.nodes]


def test_a_conv1d_block_runs_as_two_dense_layers_with_their_bias_activation_and_residual():
    torch.manual_seed(0)
    model = _Conv1DBlock().eval()
    x = torch.randn(2, 5, 8)
    module = forge.compile(model, (x,))
    for batch in (2, 3):
        x = torch.randn(batch, 5, 8)
        with torch.no_grad():
            assert_close(module(x), model(x), tol=TOLERANCES[torch.float32])
    nodes = _plan_nodes(module)
    assert [n.op for n in nodes].count("engine.dense") == 2 and not {"matmul", "add"} & {n.op for n in nodes}
    first, second = (Epilogue.of(n) for n in nodes if n.op == "engine.dense")
    assert first.has_bias and first.activation == "nn.gelu" and not first.has_residual
    assert second.has_bias and second.has_residual  # x + (h @ W + b): the residual add fused too


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_a_quantized_conv1d_layer_keeps_its_bias_in_the_8_bit_layer(precision):
    """The quantized graph's matmul reads dequantize(W_q) per column: the 8-bit layer takes the transposed 8-bit
    weight, its bias and its activation, and the plan computes the Q/DQ graph's numbers."""
    torch.manual_seed(0)
    calib = [torch.randn(3, 5, 8) for _ in range(3)]
    graph = forge.quantize(_Conv1DBlock().eval(), calib, precision=precision, method="minmax")
    partitioned, config = forge.partition_for_tensorforge(graph)
    module = forge.build(partitioned, config, device="cpu")
    x = torch.randn(4, 5, 8)
    expected, actual = execute(graph, x)[0], module(x)
    assert float((actual - expected).norm() / expected.norm()) <= 1e-5
    layers = [n for n in _plan_nodes(module) if n.op == "engine.qdense"]
    assert len(layers) == 2 and all(Epilogue.of(n).has_bias for n in layers)
    assert Epilogue.of(layers[0]).activation == "nn.gelu"
    assert layers[0].inputs[1].type.shape == (24, 8) and layers[0].inputs[1].type.dtype != "float32"


def _graph(weight: torch.Tensor, bias_shape: tuple[int, ...] | None, *, quantized_axis: int | None = None) -> Graph:
    g = Graph("matmul")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 3, weight.shape[0])))
    if quantized_axis is None:
        w = g.add_constant(weight, "w")
    else:
        scale = weight.abs().amax(dim=0) / 127 if quantized_axis == 1 else weight.abs().max() / 127
        q = torch.round(weight / scale).to(torch.int8)
        w = g.call("dequantize", g.add_constant(q, "w_q"), g.add_constant(scale, "w_s"), axis=quantized_axis)
    y = g.call("matmul", x, w)
    if bias_shape is not None:
        y = g.call("add", g.add_constant(torch.randn(bias_shape), "b"), y)  # the bias first: either order
    g.set_outputs([y])
    return g.verify()


@pytest.mark.parametrize("quantized_axis", [None, 1], ids=["float", "int8-per-column"])
def test_the_pass_writes_dense_and_bias_add_with_the_same_numbers(quantized_axis):
    torch.manual_seed(0)
    graph = _graph(torch.randn(6, 10), (10,), quantized_axis=quantized_axis)
    ctx = PassContext()
    out = dense_from_matmul(graph, ctx)
    ops = [n.op for n in out.nodes]
    assert "matmul" not in ops and "add" not in ops and ops.count("nn.dense") == ops.count("nn.bias_add") == 1
    assert ctx.counters["dense_from_matmul"] == 1 and ctx.counters["dense_from_matmul.bias"] == 1
    (dense,) = [n for n in out.nodes if n.op == "nn.dense"]
    assert dense.inputs[1].type.shape == (10, 6)
    if quantized_axis is not None:  # still a dequantize of an 8-bit constant, per output channel of [N, K]
        assert dense.inputs[1].producer.op == "dequantize" and dense.inputs[1].producer.attrs["axis"] == 0
    x = torch.randn(4, 3, 6)
    torch.testing.assert_close(execute(out, x)[0], execute(graph, x)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bias_shape", [(1, 10), (3, 10)], ids=["broadcast-row", "per-position"])
def test_only_a_vector_over_the_output_channels_is_a_bias(bias_shape):
    out = dense_from_matmul(_graph(torch.randn(6, 10), bias_shape), PassContext())
    assert [n.op for n in out.nodes] == ["nn.dense", "add"]


def test_a_product_of_two_activations_stays_a_matmul():
    g = Graph("attention_scores")
    q = g.add_input("q", TensorType("float32", (2, 4, 6)))
    k = g.add_input("k", TensorType("float32", (6, 4)))
    g.set_outputs([g.call("matmul", q, k)])
    out = dense_from_matmul(g.verify(), PassContext())
    assert [n.op for n in out.nodes] == ["matmul"]


def test_a_shared_weight_is_transposed_once_and_the_original_goes():
    torch.manual_seed(0)
    g = Graph("shared")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 6)))
    w = g.add_constant(torch.randn(6, 10), "w")
    g.set_outputs([g.call("matmul", x, w), g.call("matmul", g.call("negative", x), w)])
    out = run_passes(g.verify(), PassContext(), verify_each=True)
    weights = {n.inputs[1] for n in out.nodes if n.op in ("nn.dense", "engine.dense")}
    assert len(weights) == 1 and next(iter(weights)).type.shape == (10, 6)
    assert all(c.type.shape != (6, 10) for c in out.constants.values())
    x = torch.randn(3, 6)
    for actual, expected in zip(execute(out, x), execute(g, x)):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
