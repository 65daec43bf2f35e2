"""Models quantized through PyTorch's PT2E flow (prepare_pt2e, calibrate, convert_pt2e) import with their scales and
compute what the converted model computes in PyTorch: through `ir.execute` and through the engine on CPU.

torch 2.14 dropped `torch.ao.quantization.quantize_pt2e` and its quantizers; the flow lives in torchao
(`torchao.quantization.pt2e`), so these tests need torchao installed. Two quantizers: torchao's X86InductorQuantizer
(uint8 activations with a zero point, int8 per-channel weights) and a minimal one written here as torch's docs show
(int8 symmetric activations and per-channel weights, both in the narrow range [-127, 127], which the import clips).
"""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from tensorforge.frontends import from_torch
from tensorforge.ir import execute

pt2e = pytest.importorskip(
    "torchao.quantization.pt2e.quantize_pt2e",
    reason="torch 2.14 has no PT2E quantization (torch.ao.quantization.quantize_pt2e is gone); it needs torchao",
)
quantizer_api = pytest.importorskip("torchao.quantization.pt2e.quantizer")
x86 = pytest.importorskip("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
observers = pytest.importorskip("torchao.quantization.pt2e")

RTOL = 1e-5
ANNOTATED = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
BATCH = {"x": {0: torch.export.Dim("batch", min=1)}}


class ConvLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class SymmetricInt8Quantizer(quantizer_api.Quantizer):
    """Inputs of conv and linear per tensor, their weights per output channel: int8, symmetric, range [-127, 127]."""

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        activation = quantizer_api.QuantizationSpec(
            dtype=torch.int8,
            quant_min=-127,
            quant_max=127,
            qscheme=torch.per_tensor_symmetric,
            observer_or_fake_quant_ctr=observers.MinMaxObserver.with_args(eps=2**-12),
        )
        weight = quantizer_api.QuantizationSpec(
            dtype=torch.int8,
            quant_min=-127,
            quant_max=127,
            qscheme=torch.per_channel_symmetric,
            ch_axis=0,
            observer_or_fake_quant_ctr=observers.PerChannelMinMaxObserver.with_args(eps=2**-12),
        )
        for node in model.graph.nodes:
            if node.op == "call_function" and node.target in (
                torch.ops.aten.conv2d.default,
                torch.ops.aten.linear.default,
            ):
                node.meta["quantization_annotation"] = quantizer_api.QuantizationAnnotation(
                    input_qspec_map={node.args[0]: activation, node.args[1]: weight}, _annotated=True
                )
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        pass


def _x86_quantizer():
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    return quantizer


QUANTIZERS = [
    pytest.param(_x86_quantizer, id="x86-uint8-zero-point"),
    pytest.param(SymmetricInt8Quantizer, id="int8-symmetric-narrow-range"),
]


def _quantized(quantizer) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ConvLinear().eval()
    example = torch.randn(2, 3, 8, 8)
    captured = torch.export.export(model, (example,), dynamic_shapes=BATCH).module()
    prepared = pt2e.prepare_pt2e(captured, quantizer)
    for seed in range(4):  # calibration batches, distinct from the ones compared below
        prepared(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(100 + seed)))
    return pt2e.convert_pt2e(prepared)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= RTOL * scale, f"max error {err:g} over max |expected| {scale:g}"


@pytest.mark.parametrize("make_quantizer", QUANTIZERS)
def test_pt2e_model_imports_and_matches_its_eager_output(make_quantizer):
    quantized = _quantized(make_quantizer())
    example = torch.randn(2, 3, 8, 8)
    # a converted model refuses `.eval()`; from_torch switches it through torchao, so it may be handed over as it is
    direct = from_torch(quantized, (example,), dynamic_shapes=BATCH)
    assert sum(n.op == "quantize" for n in direct.nodes) == 2
    exported = torch.export.export(quantized, (example,), dynamic_shapes=BATCH)
    exported_ops = {str(n.target) for n in exported.graph.nodes}
    assert "quantized_decomposed.quantize_per_tensor.default" in exported_ops, exported_ops
    assert "quantized_decomposed.dequantize_per_channel.default" in exported_ops, exported_ops

    graph = from_torch(exported)
    assert not [n.op for n in graph.nodes if n.opdef.opaque]
    quantizes = [n for n in graph.nodes if n.op == "quantize"]
    dequantizes = [n for n in graph.nodes if n.op == "dequantize"]
    assert len(quantizes) == 2 and len(dequantizes) == 4
    per_channel = [n for n in dequantizes if n.attrs["axis"] is not None]
    assert [n.inputs[1].type.shape for n in per_channel] == [(6,), (10,)]
    if make_quantizer is SymmetricInt8Quantizer:
        assert all(n.attrs["dtype"] == "int8" and len(n.inputs) == 2 for n in quantizes)  # symmetric: no zero point
        assert sum(n.op == "clip" for n in graph.nodes) == 2  # the narrow range [-127, 127]
    else:
        assert all(n.attrs["dtype"] == "uint8" for n in quantizes)
        assert [len(n.inputs) for n in quantizes] == [3, 2]  # the input's zero point; after the relu it is 0

    partitioned, config = forge.partition_for_tensorforge(graph)
    # all of it in the engine, but the int8 clip of the narrow range, which the engine's clip does not take yet
    outside = [n.op for n in partitioned.nodes if n.op != "subgraph"]
    assert outside == (["clip", "clip"] if make_quantizer is SymmetricInt8Quantizer else []), str(config.report)
    module = forge.build(partitioned, config, device="cpu")
    torch.manual_seed(0)
    float_model = ConvLinear().eval()  # the weights before quantization: the float model the quantized one departs from
    for batch in (1, 3, 5):
        x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = quantized(x)
        (actual,) = execute(graph, x)
        _assert_close(actual, expected)
        _assert_close(module(x), expected)
        with torch.no_grad():
            drift = (float_model(x) - expected).abs().max().item()
        assert drift > 100 * RTOL * expected.abs().max().item()  # the comparison tells quantized from float apart


def test_pt2e_narrow_range_clip_is_exact():
    """A value that quantizes to -128 clips to -127, as PT2E's quantize_per_tensor with quant_min=-127 computes."""
    x = torch.tensor([[-1.01, -0.996, 0.5, 1.2]])
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default

    class Narrow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = quantize(x, 1 / 127, 0, -127, 127, torch.int8)
            return torch.ops.quantized_decomposed.dequantize_per_tensor.default(q, 1 / 127, 0, -127, 127, torch.int8)

    graph = from_torch(Narrow(), x, dynamic_batch=False)
    assert [n.op for n in graph.nodes] == ["quantize", "clip", "dequantize"]
    (actual,) = execute(graph, x)
    expected = Narrow()(x)
    assert torch.equal(actual, expected)
    assert expected[0, 0].item() == pytest.approx(-1.0) and expected[0, 3].item() == pytest.approx(1.0)
