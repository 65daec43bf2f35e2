"""Per-layer sensitivity: each layer quantized alone, sorted worst first; a layer made fragile on purpose (one input
channel far larger than the rest sets its per-tensor activation range, the small channels that matter lose their
resolution) comes first."""

import torch

from quant_models import ResidualCNN, randomized
from tensorforge import frontends
from tensorforge.quantization.sensitivity import sensitivity


def test_sensitivity_ranks_every_layer_and_finds_the_fragile_one():
    model = randomized(ResidualCNN())
    with torch.no_grad():  # `hidden` reads channel 0 at ~300 but hardly uses it; the other channels are what counts
        model.conv2.bias[0] = 300
        model.hidden.weight[:, 0] *= 1e-4
    g = frontends.from_torch(model, (torch.randn(2, 3, 12, 12),))
    calibration = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    evaluation = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    report = sensitivity(g, calibration, evaluation, method="minmax")
    layers = [n.name for n in g.nodes if n.op in ("nn.conv2d", "nn.dense")]
    assert sorted(r.layer for r in report) == sorted(layers)  # first conv and classifier included
    errors = [r.relative_error for r in report]
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)
    assert report[0].layer == layers[3] and report[0].op == "nn.dense", report
    assert errors[0] > 10 * errors[1], report
