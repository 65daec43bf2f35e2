"""bench/quant_accuracy.py's core, on a tiny random CNN with 4 calibration and 4 evaluation inputs: every
tensorforge configuration and onnxruntime's quantizer run and are scored against FP32 eager."""

import sys
from pathlib import Path

import torch

from quant_models import ResidualCNN, randomized

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import quant_accuracy


def test_quantized_agreement_scores_every_configuration_against_eager():
    torch.manual_seed(0)
    model = randomized(ResidualCNN())
    calibration, evaluation = torch.randn(4, 3, 12, 12), torch.randn(4, 3, 12, 12)
    report = quant_accuracy.quantized_agreement(model, calibration, evaluation, batch=2)
    rows = report["results"]
    assert [(r["engine"], r["precision"], r["method"], r["error_budget"]) for r in rows] == [
        *(("tensorforge", p, m, b) for p, m, b in quant_accuracy.TENSORFORGE_CONFIGS),
        *(("onnxruntime", "int8", m, None) for m in quant_accuracy.ONNXRUNTIME_METHODS),
    ]
    for row in rows:
        assert "error" not in row, row
        assert row["inputs"] == 4 and 0 <= row["top1_agree"] <= 4
        # quantized, so not the FP32 numbers, yet close to them; a budget keeps (some) layers in floating point
        assert 0 < row["rel_logit_error"] < 0.2 and 0 <= row["quantized_mac_share"] <= 1, row
    tensorforge_int8, share = quant_accuracy.tensorforge_run(model, calibration, evaluation, "int8", "minmax", batch=2)
    assert 0.5 < share < 1.0  # the first conv and the classifier (few MACs) stay in floating point by default
    graph = quant_accuracy.forge.quantize(model, [calibration[:2], calibration[2:]], precision="int8", method="minmax")
    want = quant_accuracy.forge.ir.execute(graph, evaluation)[0]
    assert ((tensorforge_int8 - want).norm() / want.norm()).item() < 1e-2  # the plan computes the Q/DQ graph


def test_split_photos_keeps_calibration_and_evaluation_photos_apart():
    photos = [torch.full((40, 50, 3), i * 10, dtype=torch.uint8).numpy() for i in range(6)]
    calibration, evaluation = quant_accuracy.split_photos(photos, calib_views=5, eval_views_per_photo=2)
    assert calibration.shape == (5, 3, 224, 224) and evaluation.shape == (8, 3, 224, 224)
    # a constant photo stays constant through crops and flips: its value tells which photo a view came from
    pixel = (calibration[:, 0, 0, 0] * accuracy_std() + accuracy_mean()) * 255
    assert set(pixel.round().int().tolist()) <= {0, 30}
    pixel = (evaluation[:, 0, 0, 0] * accuracy_std() + accuracy_mean()) * 255
    assert set(pixel.round().int().tolist()) == {10, 20, 40, 50}


def accuracy_mean() -> float:
    return float(quant_accuracy.accuracy.MEAN.flatten()[0])


def accuracy_std() -> float:
    return float(quant_accuracy.accuracy.STD.flatten()[0])
