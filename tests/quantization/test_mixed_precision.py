"""Mixed precision by an error budget: `quantize(..., error_budget=)` keeps the most sensitive layers in floating point
until the quantized graph's relative output error on the calibration batches is within the budget, and says why."""

import pytest
import torch

from quant_models import ResidualCNN, randomized
from tensorforge import frontends, ir
from tensorforge.quantization import CalibrationDataError, quantize
from tensorforge.quantization.mixed_precision import quantized_mac_share


def _fragile_cnn():
    """ResidualCNN whose `hidden` layer is made fragile (as in test_sensitivity): its per-tensor input range is set
    by a channel it hardly uses, so the channels that matter lose their resolution."""
    model = randomized(ResidualCNN())
    with torch.no_grad():
        model.conv2.bias[0] = 300
        model.hidden.weight[:, 0] *= 1e-4
    return model


def _relative_error(quantized, float_graph, batches):
    got = torch.cat([ir.execute(quantized, x)[0] for x in batches])
    want = torch.cat([ir.execute(float_graph, x)[0] for x in batches])
    return float((got - want).norm() / want.norm())


def _quantized_layers(graph):
    """Layers whose weight arrives through a dequantize (what insert_qdq quantized)."""
    layers = [n for n in graph.nodes if n.op in ("nn.conv2d", "nn.dense")]
    return {n.name for n in layers if n.inputs[1].producer is not None and n.inputs[1].producer.op == "dequantize"}


@pytest.fixture(scope="module")
def fragile():
    torch.manual_seed(0)
    model = _fragile_cnn()
    graph = frontends.from_torch(model, (torch.randn(2, 3, 12, 12),))
    calibration = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    return graph, calibration


def test_the_budget_keeps_the_fragile_layer_and_meets_the_error(fragile, caplog):
    graph, calibration = fragile
    plain = quantize(graph, calibration, method="minmax", include_first_last=True)
    plain_error = _relative_error(plain, graph, calibration)
    assert plain_error > 0.05, "the fragile layer must make the plain quantization miss the budget"
    with caplog.at_level("INFO", logger="tensorforge"):
        fitted = quantize(graph, calibration, method="minmax", include_first_last=True, error_budget=0.05)
    assert _relative_error(fitted, graph, calibration) <= 0.05
    hidden = next(n.name for n in graph.nodes if n.op == "nn.dense")  # the first dense layer is `hidden`
    quantized = _quantized_layers(fitted)
    assert hidden not in quantized and quantized, quantized  # the fragile one kept, the others still quantized
    assert f"{hidden}: kept in floating point for the error budget 0.05" in caplog.text
    assert "layers kept in floating point for the error budget 0.05" in caplog.text


def test_a_budget_the_plain_quantization_meets_changes_nothing(fragile):
    graph, calibration = fragile
    plain = quantize(graph, calibration, method="minmax", include_first_last=True)
    loose = quantize(graph, calibration, method="minmax", include_first_last=True, error_budget=10.0)
    assert (
        _quantized_layers(loose)
        == _quantized_layers(plain)
        == {n.name for n in graph.nodes if n.op in ("nn.conv2d", "nn.dense")}
    )


def test_a_zero_budget_keeps_every_layer_in_floating_point(fragile):
    graph, calibration = fragile
    exact = quantize(graph, calibration, method="minmax", error_budget=0.0)
    assert not _quantized_layers(exact)
    assert _relative_error(exact, graph, calibration) == 0.0


def test_the_budget_needs_calibration_data_and_a_sensible_value(fragile, tmp_path):
    graph, calibration = fragile
    cache = tmp_path / "model.calib"
    quantize(graph, calibration, cache=cache)
    with pytest.raises(CalibrationDataError, match="error_budget is measured on calibration data"):
        quantize(graph, None, cache=cache, error_budget=0.05)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="error_budget is a relative output error >= 0"):
            quantize(graph, calibration, error_budget=bad)


def test_quantized_mac_share_counts_the_layers_by_their_multiply_accumulates(fragile):
    graph, _ = fragile
    layers = {n.name: n for n in graph.nodes if n.op in ("nn.conv2d", "nn.dense")}
    # batch 1, 12x12 input: stem 3->16 3x3 and conv1 16->16 3x3 at 12x12, conv2 16->32 3x3 at 6x6, dense 32x32, 32x10
    macs = {"stem": 144 * 16 * 27, "conv1": 144 * 16 * 144, "conv2": 36 * 32 * 144, "hidden": 32 * 32, "cls": 320}
    total = sum(macs.values())
    conv_names = [n for n, node in layers.items() if node.op == "nn.conv2d"]
    assert quantized_mac_share(graph, conv_names[1:2]) == pytest.approx(macs["conv1"] / total)
    assert quantized_mac_share(graph, list(layers)) == pytest.approx(1.0)
    assert quantized_mac_share(graph, []) == 0.0
