"""method="auto" (the default): every calibrator's thresholds from one pass (each equal to what that calibrator alone
finds), and the method kept is the one whose Q/DQ graph is closest to the float graph on the calibration batches."""

import pytest
import torch

from quant_models import ResidualCNN, TinyBlock, randomized
from tensorforge import frontends, ir
from tensorforge.quantization import quantize
from tensorforge.quantization.calibrators import CALIBRATORS, collect_every_method, collect_thresholds
from tensorforge.quantization.insert import plan_placement


def _relative_error(quantized, graph, batches):
    got = torch.cat([ir.execute(quantized, x)[0].flatten() for x in batches])
    want = torch.cat([ir.execute(graph, x)[0].flatten() for x in batches])
    return float((got.double() - want.double()).norm() / want.double().norm())


def test_one_pass_gives_every_calibrators_own_thresholds():
    model = randomized(ResidualCNN())
    graph = frontends.from_torch(model, (torch.randn(2, 3, 12, 12),))
    batches = [(torch.randn(4, 3, 12, 12) * (1 + i),) for i in range(3)]  # ranges grow: the histogram regrows
    names = plan_placement(graph).activation_names
    every = collect_every_method(graph, names, batches, percentile=99.9)
    assert set(every) == set(CALIBRATORS)
    for method, thresholds in every.items():
        assert thresholds == collect_thresholds(graph, names, batches, method, percentile=99.9), method


@pytest.mark.parametrize("make, shape", [(ResidualCNN, (4, 3, 12, 12)), (TinyBlock, (4, 6, 16))], ids=["cnn", "block"])
@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_auto_keeps_the_method_closest_to_the_float_graph(make, shape, precision, caplog):
    model = randomized(make())
    graph = frontends.from_torch(model, (torch.randn(shape),))
    calibration = [torch.randn(shape) for _ in range(3)]
    errors = {
        method: _relative_error(quantize(graph, calibration, precision, method=method), graph, calibration)
        for method in CALIBRATORS
    }
    best = min(errors, key=errors.__getitem__)
    with caplog.at_level("INFO", logger="tensorforge"):
        chosen = quantize(graph, calibration, precision)  # the default is auto
    assert f"method auto chose {best}" in caplog.text, (errors, caplog.text)
    x = torch.randn(shape)
    reference = quantize(graph, calibration, precision, method=best)
    assert torch.equal(ir.execute(chosen, x)[0], ir.execute(reference, x)[0])  # the very scales of that method
