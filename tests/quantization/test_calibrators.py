"""Calibrators against ranges computed by hand (min-max exactly, percentile against torch.quantile, entropy by the
shape of the distribution), the histogram's exact regrowth, and the calibration walk over a graph."""

import numpy as np
import pytest
import torch

from tensorforge import ir
from tensorforge.quantization.calibrators import (
    AbsHistogram,
    Entropy,
    MinMax,
    Percentile,
    collect_thresholds,
    entropy_threshold,
    scale_for,
)
from tensorforge.quantization.data import CalibrationDataError, calibration_batches


def test_minmax_is_the_largest_magnitude_over_every_batch():
    calibrator = MinMax()
    calibrator.observe(torch.tensor([0.5, -1.25, 2.0]))
    calibrator.observe(torch.tensor([[-3.5, 0.0], [1.0, 2.5]]))
    calibrator.observe(torch.tensor([]))  # an empty batch changes nothing
    assert (calibrator.min, calibrator.max) == (-3.5, 2.5)
    assert calibrator.threshold() == 3.5
    assert MinMax().threshold() == 0.0


@pytest.mark.parametrize(
    "p, make",
    [
        (99.99, lambda: torch.randn(200_000)),
        (99.0, lambda: torch.randn(50_000) * 3 + 1),
        (99.9, lambda: torch.relu(torch.randn(80_000))),  # half the values are exact zeros
        (50.0, lambda: torch.rand(30_000) * 2 - 1),
    ],
    ids=["gauss-99.99", "shifted-99", "relu-99.9", "uniform-median"],
)
def test_percentile_matches_torch_quantile_within_one_bin(p, make):
    x = make()
    calibrator = Percentile(p)
    for chunk in x.chunk(7):  # batch by batch, the range growing on the way
        calibrator.observe(chunk)
    expected = torch.quantile(x.abs().double(), p / 100).item()
    assert calibrator.threshold() == pytest.approx(expected, abs=calibrator.histogram.bin_width)


def test_histogram_growth_merges_bins_exactly():
    """Growing the range by a power of two merges whole bins: the counts equal a histogram made in one go (up to the
    first batch's largest value, which sat on the old range's closed upper edge and so on a merged bin's edge)."""
    first, second = torch.rand(10_000), torch.rand(10_000) * 5
    grown = AbsHistogram(64)
    grown.observe(first)
    grown.observe(second)
    assert grown.upper == pytest.approx(first.max().item() * 8)  # 1 -> 5 needs a factor 8
    direct = torch.histc(first, 64, 0, grown.upper).double()
    # each first-batch value was binned at the fine width and merged: its bin in the coarse histogram is the same
    direct += torch.histc(second, 64, 0, grown.upper).double()
    assert (grown.counts - direct).abs().sum() <= 2
    assert grown.counts.sum() == 20_000 and grown.zeros == 0


def test_entropy_clips_outliers_and_keeps_a_uniform_range():
    gaussian_with_outliers = torch.cat([torch.randn(100_000), torch.tensor([40.0, -55.0, 60.0])])
    with_outliers = Entropy()
    with_outliers.observe(gaussian_with_outliers)
    threshold = with_outliers.threshold()
    assert 2.5 < threshold < 8.0  # the body of the gaussian, far below the outliers' 60

    uniform = Entropy()
    for chunk in (torch.rand(100_000) * 2 - 1).chunk(4):
        uniform.observe(chunk)
    assert uniform.threshold() == pytest.approx(1.0, rel=0.01)


def test_entropy_threshold_on_a_hand_made_histogram():
    """128 bins of flat mass: nothing to clip, the threshold is the whole range; a spike beyond does not move it."""
    flat = np.ones(256)
    flat[128:] = 0
    assert entropy_threshold(flat, upper=2.0, levels=128) == pytest.approx(1.0)  # the 128th bin's upper edge
    assert entropy_threshold(np.zeros(256), upper=1.0) == 0.0


@pytest.mark.parametrize("dtype, levels", [("int8", 127), ("float8_e4m3fn", 448)])
def test_scale_maps_the_threshold_to_the_largest_level(dtype, levels):
    assert scale_for(3.5, dtype) == 3.5 / levels
    assert scale_for(0.0, dtype) == 1.0  # a tensor that is always zero: any scale is exact


@pytest.mark.parametrize("dtype, levels", [("int8", 127), ("float8_e4m3fn", 448)])
def test_a_scale_that_would_be_subnormal_is_1(dtype, levels):
    """A tensor of values within 1e-36 of 0 (a dead SiLU branch: silu(-100) is -4e-42) would get a subnormal
    float32 scale, whose products with weight scales underflow; it gets 1, as a zero tensor does, and its values
    quantize to 0 as closely. The smallest normal scale stays."""
    tiny = float(torch.finfo(torch.float32).tiny)
    assert scale_for(4e-42 * levels, dtype) == 1.0
    assert scale_for(tiny * levels * 0.99, dtype) == 1.0
    assert scale_for(tiny * levels * 2, dtype) == pytest.approx(tiny * 2)


def _small_graph() -> ir.Graph:
    g = ir.Graph()
    x = g.add_input("x", ir.TensorType("float32", (ir.Sym("batch"), 4)))
    w = g.add_constant(torch.randn(3, 4), "w")
    y = g.call("nn.dense", x, w, name="y")
    g.outputs = [g.call("nn.relu", y, name="r")]
    return g


def test_collect_thresholds_walks_the_graph_batch_by_batch():
    g = _small_graph()
    batches = [torch.randn(2, 4), torch.randn(5, 4) * 3]
    thresholds = collect_thresholds(g, ["x", "y", "r"], calibration_batches(g, batches), "minmax")
    w = g.constants["w"].tensor
    ys = [b @ w.T for b in batches]
    assert thresholds["x"] == max(b.abs().max().item() for b in batches)
    assert thresholds["y"] == pytest.approx(max(y.abs().max().item() for y in ys))
    assert thresholds["r"] == pytest.approx(max(y.relu().max().item() for y in ys))


@pytest.mark.parametrize(
    "data, message",
    [
        (None, "no calibration data"),
        ([], "empty"),
        ([torch.randn(2, 5)], "calibration batch 0: input 'x'"),
        ([torch.randn(2, 4), torch.randn(2, 4, 1)], "calibration batch 1"),
        ([(torch.randn(2, 4), torch.randn(2, 4))], "holds 2 tensors, the model takes 1"),
        ([{"y": torch.randn(2, 4)}], "missing ['x']"),
        ([torch.zeros(2, 4, dtype=torch.int64)], "expected float32, got int64"),
        (torch.randn(2, 4), "wrap a single batch"),
    ],
    ids=["none", "empty", "wrong-width", "wrong-rank-later", "too-many", "dict-keys", "dtype", "bare-tensor"],
)
def test_calibration_data_errors_name_the_problem(data, message):
    g = _small_graph()
    with pytest.raises(CalibrationDataError, match=None) as info:
        list(calibration_batches(g, data))
    assert message in str(info.value)


def test_numpy_float64_batches_are_cast_to_the_input_type():
    g = _small_graph()
    (batch,) = list(calibration_batches(g, [{"x": np.ones((3, 4))}]))
    assert batch[0].dtype == torch.float32 and batch[0].shape == (3, 4)
