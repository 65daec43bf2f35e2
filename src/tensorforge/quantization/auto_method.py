"""`method="auto"`: calibrate with every method in one pass and keep the one whose quantized graph is closest to the
float graph on the calibration batches.

Why: no calibrator wins everywhere. On the trained models of bench/results/quant_accuracy, percentile is best for
MobileNetV2 (its ReLU6 outputs have long tails worth clipping), min-max for EfficientNet-Lite0 and for MiniLM (a
transformer's outlier channels carry meaning: clipping them costs the most), and TensorRT's entropy calibrator for
neither. Which wins is a property of the model, and measuring it costs one more graph run per method, so it is
measured: the relative output error (||quantized - float|| / ||float|| over every output of every calibration batch)
of each method's Q/DQ graph, the smallest kept. A tie keeps the earlier of minmax, percentile, entropy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from ..ir import Graph
from .insert import Placement, insert_qdq
from .sensitivity import relative_error

logger = logging.getLogger("tensorforge")


def choose_method(
    graph: Graph,
    placement: Placement,
    scale_of: Mapping[str, Mapping[str, float]],
    precision: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    references: Sequence[Sequence[torch.Tensor]],
) -> str:
    """The method (a key of `scale_of`: method -> value name -> scale) whose Q/DQ graph has the least relative
    output error over `batches` against `references`, the float graph's outputs on them (see the module docstring)."""
    errors = {
        method: relative_error(insert_qdq(graph, placement, scales, precision), batches, references)
        for method, scales in scale_of.items()
    }
    best = min(errors, key=errors.__getitem__)
    logger.info(
        "calibration: method auto chose %s (relative output error on the calibration batches: %s)",
        best,
        ", ".join(f"{m} {e:.4g}" for m, e in errors.items()),
    )
    return best
