"""Activation ranges from calibration batches: the calibrators (TensorRT's names) and the walk that feeds them.

A calibrator watches one tensor over every calibration batch and ends with a *threshold*: the magnitude that the
quantized type's largest level stands for (symmetric quantization, zero point 0), so the scale is
`threshold / 127` for int8 and `threshold / 448` for float8_e4m3fn (`scale_for`).

Memory stays bounded whatever the number of batches: `MinMax` keeps two numbers, `Percentile` and `Entropy` a
histogram of |x| with a fixed number of bins (`AbsHistogram`), never the tensors themselves.

- `MinMax`: the largest |x| seen. Exact, but one outlier sets the range for everything else.
- `Percentile(p)`: the p-th percentile of |x| (99.99 by default), read from the histogram (within one bin).
- `Entropy`: TensorRT's entropy calibrator (Migacz, "8-bit Inference with TensorRT", GTC 2017; onnxruntime's
  `HistogramCalibrater` with method "entropy" does the same over a signed histogram): the threshold whose 128-level
  quantization of the |x| histogram loses the least information, measured as the KL divergence between the clipped
  reference distribution and its quantized version. Outliers it may clip; a distribution without them keeps
  (nearly) its whole range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import torch

from ..ir import Graph, Value
from ..ir.execute import execute

# The largest level of each quantized element type: scale = threshold / QMAX[dtype]
QMAX = {"int8": 127.0, "float8_e4m3fn": 448.0}
HISTOGRAM_BINS = 2048  # TensorRT's entropy calibrator's bin count
ENTROPY_LEVELS = 128  # the int8 levels of one sign that the entropy calibrator quantizes the histogram to


# the smallest scale a calibration gives: float32's smallest normal number (onnxruntime's compute_scale_zp uses
# scale 1 below it too)
SMALLEST_SCALE = float(torch.finfo(torch.float32).tiny)


def scale_for(threshold: float, dtype: str) -> float:
    """The scale that maps `threshold` to the largest level of `dtype`. A tensor that was always 0 gets scale 1
    (any scale quantizes 0 exactly; a zero scale would divide by zero), and so does one whose scale would be
    subnormal in float32 (values within 1e-36 of 0: a dead branch of a random-weight model): such a scale has too
    few bits, its products with weight scales underflow, and the values quantize to 0 with scale 1 as closely."""
    if dtype not in QMAX:
        raise ValueError(f"no quantized type {dtype!r}; known: {sorted(QMAX)}")
    scale = threshold / QMAX[dtype]
    return scale if np.float32(scale) >= SMALLEST_SCALE else 1.0  # the graph stores it as float32


class Observer(Protocol):
    """Watches one tensor over the calibration batches."""

    def observe(self, tensor: torch.Tensor) -> None: ...


class Calibrator(Observer, Protocol):
    """An observer that ends with its threshold."""

    def threshold(self) -> float: ...


class MinMax:
    """The largest magnitude seen (symmetric: max(|min|, |max|)); keeps min and max for reports."""

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf

    def observe(self, tensor: torch.Tensor) -> None:
        if tensor.numel():
            self.min = min(self.min, float(tensor.min()))
            self.max = max(self.max, float(tensor.max()))

    def threshold(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.max >= self.min else 0.0


class AbsHistogram:
    """A histogram of |x| over [0, upper] with a fixed number of bins, upper growing as larger values come.

    When a batch holds a value above `upper`, the range grows by the smallest power of two that covers it, so the
    old bins merge exactly (2^k neighbours into one) and nothing is re-guessed: the range ends below twice the
    largest |x|, i.e. the data keeps at least half of the bins. Exact zeros (half of a ReLU's output) are counted
    apart, in `zeros`: every scale represents them exactly, so they say nothing about where to clip.
    """

    def __init__(self, bins: int = HISTOGRAM_BINS) -> None:
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"the bin count must be a power of two (bins merge in pairs), got {bins}")
        self.bins = bins
        self.counts = torch.zeros(bins, dtype=torch.float64)
        self.upper = 0.0
        self.zeros = 0

    @property
    def bin_width(self) -> float:
        return self.upper / self.bins

    def observe(self, tensor: torch.Tensor) -> None:
        if not tensor.numel():
            return
        magnitudes = tensor.detach().abs().reshape(-1).float()
        largest = float(magnitudes.max())
        if not math.isfinite(largest):
            raise ValueError("a calibration tensor holds inf or nan: its range cannot be calibrated")
        if largest > self.upper:
            self._grow(largest)
        nonzero = magnitudes[magnitudes != 0]
        self.zeros += magnitudes.numel() - nonzero.numel()
        if nonzero.numel():
            self.counts += torch.histc(nonzero, self.bins, 0.0, self.upper).double()

    def _grow(self, largest: float) -> None:
        if self.upper == 0.0:
            self.upper = largest  # the first non-zero data sets the range
            return
        factor = 1 << math.ceil(math.log2(largest / self.upper))
        while self.upper * factor < largest:  # float rounding in log2
            factor <<= 1
        merged = torch.zeros(self.bins, dtype=torch.float64)
        if factor >= self.bins:
            merged[0] = self.counts.sum()
        else:
            merged[: self.bins // factor] = self.counts.reshape(self.bins // factor, factor).sum(1)
        self.counts = merged
        self.upper *= factor

    def percentile(self, p: float) -> float:
        """The p-th percentile of |x| (0 < p <= 100), linear within the bin it falls in."""
        total = float(self.counts.sum()) + self.zeros
        target = p / 100.0 * total
        if target <= self.zeros or self.upper == 0.0:
            return 0.0
        target -= self.zeros
        cumulative = torch.cumsum(self.counts, 0)
        index = int(torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64))[0])
        index = min(index, self.bins - 1)
        before = float(cumulative[index - 1]) if index else 0.0
        inside = float(self.counts[index])
        fraction = (target - before) / inside if inside else 1.0
        return (index + min(max(fraction, 0.0), 1.0)) * self.bin_width


class Percentile:
    """The p-th percentile of |x| over every batch (from a histogram: exact to one bin width)."""

    def __init__(self, p: float = 99.99, bins: int = HISTOGRAM_BINS) -> None:
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        self.p = p
        self.histogram = AbsHistogram(bins)

    def observe(self, tensor: torch.Tensor) -> None:
        self.histogram.observe(tensor)

    def threshold(self) -> float:
        return self.histogram.percentile(self.p)


class Entropy:
    """TensorRT's entropy calibrator: the threshold minimizing KL(reference || quantized) over the |x| histogram."""

    def __init__(self, bins: int = HISTOGRAM_BINS, levels: int = ENTROPY_LEVELS) -> None:
        self.histogram = AbsHistogram(bins)
        self.levels = levels

    def observe(self, tensor: torch.Tensor) -> None:
        self.histogram.observe(tensor)

    def threshold(self) -> float:
        return entropy_threshold(self.histogram.counts.numpy(), self.histogram.upper, self.levels)


# where the quantized candidate has no mass but the reference has, KL is infinite; this floor keeps it finite and
# large, so such a candidate loses to any that covers the reference, yet the search still ends with a threshold
_EMPTY_FLOOR = 1e-12


def entropy_threshold(counts: np.ndarray, upper: float, levels: int = ENTROPY_LEVELS) -> float:
    """The clipping threshold of a |x| histogram (`counts` over [0, upper]) that TensorRT's entropy calibrator picks.

    For each candidate end bin i (from `levels` to every bin): the reference P is the first i bins with all the
    mass beyond folded into bin i - 1 (clipped values saturate there); the candidate Q merges the first i bins into
    `levels` groups and spreads each group's mass evenly over the bins where P is non-empty (the histogram as the
    quantized type sees it). The threshold is the upper edge of the i with the smallest KL(P || Q).
    """
    counts = np.asarray(counts, dtype=np.float64)
    bins = counts.size
    if upper <= 0 or counts.sum() == 0:
        return 0.0
    if bins <= levels:
        return upper
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = mass of bins i and beyond
    best_end, best_divergence = bins, math.inf
    for end in range(levels, bins + 1):
        sliced = counts[:end]
        reference = sliced.copy()
        reference[end - 1] += tail[end]
        nonempty = reference != 0
        merged = end // levels  # bins per group; the last group also takes the remainder
        groups = np.minimum(np.arange(end) // merged, levels - 1)
        group_mass = np.bincount(groups, weights=sliced, minlength=levels)
        group_nonempty = np.bincount(groups, weights=nonempty, minlength=levels)
        spread = np.divide(group_mass, group_nonempty, out=np.zeros(levels), where=group_nonempty > 0)
        candidate = np.where(nonempty, spread[groups], 0.0)
        p = reference[nonempty] / reference.sum()
        q = np.maximum(candidate[nonempty] / max(candidate.sum(), _EMPTY_FLOOR), _EMPTY_FLOOR)
        divergence = float(np.sum(p * np.log(p / q)))
        if divergence < best_divergence:
            best_end, best_divergence = end, divergence
    return best_end * upper / bins


CALIBRATORS: dict[str, Callable[..., Calibrator]] = {
    "minmax": lambda percentile: MinMax(),
    "percentile": lambda percentile: Percentile(percentile),
    "entropy": lambda percentile: Entropy(),
}
# "auto" is no calibrator of its own: every one above calibrates in the same pass (`Joint`), and the one whose
# quantized graph is closest to the float graph on the calibration batches wins (auto_method.py)
AUTO = "auto"
METHODS = (*CALIBRATORS, AUTO)


def make_calibrator(method: str, percentile: float = 99.99) -> Calibrator:
    if method not in CALIBRATORS:
        raise ValueError(f"calibration method must be one of {sorted(CALIBRATORS)}, got {method!r}")
    return CALIBRATORS[method](percentile)


class Joint:
    """Every calibrator's threshold from one pass: a MinMax and one |x| histogram that the percentile and entropy
    thresholds both read (they would each build the same one)."""

    def __init__(self, percentile: float = 99.99) -> None:
        self.minmax = MinMax()
        self.percentile = Percentile(percentile)
        self.entropy = Entropy()
        self.entropy.histogram = self.percentile.histogram

    def observe(self, tensor: torch.Tensor) -> None:
        self.minmax.observe(tensor)
        self.percentile.observe(tensor)

    def thresholds(self) -> dict[str, float]:
        return {name: getattr(self, name).threshold() for name in CALIBRATORS}


@torch.no_grad()
def observe_graph(graph: Graph, inputs: Sequence[torch.Tensor], watch: Mapping[Value, Observer]) -> None:
    """Run `graph` once through its reference implementations (`ir.execute`) and show every watched value to its
    calibrator as soon as it exists (intermediates are freed after their last use, as execute does)."""
    if any(node.op == "subgraph" for node in graph.nodes):
        raise ValueError("calibrate before partitioning: this graph has engine regions (subgraph nodes)")

    def seen(value: Value, tensor: torch.Tensor) -> None:
        if value in watch:
            watch[value].observe(tensor)

    execute(graph, *inputs, on_value=seen)


def _observe_all(graph: Graph, batches: Iterable[Sequence[torch.Tensor]], watch: Mapping[Value, Observer]) -> None:
    seen = 0
    for batch in batches:
        observe_graph(graph, batch, watch)
        seen += 1
    if not seen:
        raise ValueError("the calibration data is empty: give at least one batch of the model's inputs")


def collect_thresholds(
    graph: Graph,
    names: Iterable[str],
    batches: Iterable[Sequence[torch.Tensor]],
    method: str,
    percentile: float = 99.99,
) -> dict[str, float]:
    """The threshold of each named value of `graph` over every batch (each a tuple of the graph's inputs)."""
    watch = {graph.value_named(name): make_calibrator(method, percentile) for name in names}
    _observe_all(graph, batches, watch)
    return {value.name: calibrator.threshold() for value, calibrator in watch.items()}


def collect_every_method(
    graph: Graph, names: Iterable[str], batches: Iterable[Sequence[torch.Tensor]], percentile: float = 99.99
) -> dict[str, dict[str, float]]:
    """Each calibrator's thresholds (method -> value name -> threshold), all from one pass over the batches."""
    watch = {graph.value_named(name): Joint(percentile) for name in names}
    _observe_all(graph, batches, watch)
    by_value = {value.name: joint.thresholds() for value, joint in watch.items()}
    return {method: {name: t[method] for name, t in by_value.items()} for method in CALIBRATORS}
