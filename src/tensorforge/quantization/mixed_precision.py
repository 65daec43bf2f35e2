"""Mixed precision by an error budget: the most sensitive layers stay in floating point until the quantized graph's
output error on the calibration batches is within the budget.

Why: a calibrated network's quantization error is uneven. A few layers lose more than all the others together
(MobileNetV2's first depthwise convolution: its batch norm multiplies the rounding noise of its input by up to 20),
and which ones depends on the model and its weights, not on the op kind. TensorRT leaves the choice to the user
(Polygraphy's layer-wise debugging, ModelOpt's AutoQuantize searching formats per layer); a budget makes it here:

1. each quantized layer's sensitivity: the relative output error with it alone quantized (sensitivity.py);
2. the fewest of the most sensitive layers to keep in floating point so that the whole quantized graph's relative
   output error is within the budget: bisection on their number, which only ever settles on a number it measured
   within the budget. The error falls as more are kept, though not strictly (each layer kept moves rounding
   elsewhere), so a smaller number may sometimes do too; the one found always does.

Every evaluation runs the graph's reference implementations over the calibration batches: the search costs about
(layers + log2(layers)) such passes, seconds on a GPU, a minute or two for a CNN on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch

from ..ir import Graph
from .insert import LAYER_OPS, Placement, insert_qdq
from .sensitivity import LayerSensitivity, layer_sensitivities, relative_error

logger = logging.getLogger("tensorforge")


def fit_error_budget(
    graph: Graph,
    placement: Placement,
    scales: Mapping[str, float],
    precision: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    references: Sequence[Sequence[torch.Tensor]],
    budget: float,
    replan: Callable[[Sequence[str]], Placement],
) -> Placement:
    """The placement (from `replan(layers to keep in floating point)`) with the fewest most-sensitive layers of
    `placement` kept in floating point such that the quantized graph's relative output error over `batches` is at
    most `budget` (see the module docstring). `scales` must hold every activation of `placement`; `references` are
    the float graph's outputs on `batches`."""

    def error(candidate: Placement) -> float:
        return relative_error(insert_qdq(graph, candidate, scales, precision), batches, references)

    whole = error(placement)
    if whole <= budget:
        logger.info("quantization: relative output error %.4g is within the error budget %g", whole, budget)
        return placement
    ranked = layer_sensitivities(graph, placement, scales, precision, batches, references)
    errors: dict[int, float] = {0: whole, len(ranked): 0.0}

    def error_keeping(count: int) -> float:
        if count not in errors:
            errors[count] = error(replan([item.layer for item in ranked[:count]]))
        return errors[count]

    low, high = 0, len(ranked)  # error_keeping(low) > budget >= error_keeping(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if error_keeping(middle) <= budget else (middle, high)
    kept = ranked[:high]
    result = replan([item.layer for item in kept])
    result.kept.update({item.layer: _why(item, budget) for item in kept})
    logger.info(
        "quantization: %d of %d layers kept in floating point for the error budget %g (relative output error "
        "%.4g -> %.4g on the calibration batches; %.1f%% of the layers' multiply-accumulates stay quantized)",
        len(kept),
        len(ranked),
        budget,
        whole,
        errors[high],
        100 * quantized_mac_share(graph, result.quantized_layers),
    )
    return result


def quantized_mac_share(graph: Graph, quantized_layers: Sequence[str]) -> float:
    """The share of the multiply-accumulates of `graph`'s conv/dense/matmul layers done by `quantized_layers`
    (symbols counted as 1): what a budget's floating-point layers cost in the speed quantization is for."""
    quantized = set(quantized_layers)
    macs = {
        node.name: node.opdef.count_macs([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs, {})
        for node in graph.nodes
        if node.op in LAYER_OPS
    }
    total = sum(macs.values())
    return sum(m for name, m in macs.items() if name in quantized) / total if total else 0.0


def _why(item: LayerSensitivity, budget: float) -> str:
    return (
        f"kept in floating point for the error budget {budget:g} (quantized alone it costs {item.relative_error:.3g} "
        f"relative output error)"
    )
