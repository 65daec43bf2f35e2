"""Per-layer sensitivity: which layers lose the most when quantized, so a user knows what to `exclude`.

Each quantizable layer is quantized alone (its data input per tensor, its weight per channel, every other layer in
floating point), and the graph's outputs on `eval_data` are compared with the floating-point graph's. The layers
come back sorted, worst first, by relative error (||quantized - float|| / ||float|| over every output).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..ir import Graph, execute
from .calibrators import collect_thresholds, scale_for
from .data import calibration_batches
from .insert import PRECISION_DTYPES, Placement, insert_qdq, plan_placement


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    op: str
    relative_error: float


def only(placement: Placement, layers: Iterable[str]) -> Placement:
    """The sites of `placement` that `layers` read, with those layers as their only readers."""
    keep = set(layers)

    def mine(sites: list[Any]) -> list[Any]:
        out = []
        for site in sites:
            readers = tuple(r for r in site.readers if r[0] in keep)
            if readers:
                out.append(type(site)(site.value, readers, site.axis))
        return out

    ordered = [name for name in placement.quantized_layers if name in keep]
    return Placement(mine(placement.activations), mine(placement.weights), ordered, dict(placement.kept))


@torch.no_grad()
def float_outputs(graph: Graph, batches: Sequence[tuple[torch.Tensor, ...]]) -> list[tuple[torch.Tensor, ...]]:
    """`graph`'s outputs on each batch: the references every quantized variant is measured against."""
    return [execute(graph, *batch) for batch in batches]


@torch.no_grad()
def relative_error(
    graph: Graph, batches: Sequence[tuple[torch.Tensor, ...]], references: Sequence[Sequence[torch.Tensor]]
) -> float:
    """||graph(batches) - references|| / ||references|| over every output of every batch (float64 sums)."""
    difference = reference_norm = 0.0
    for batch, reference in zip(batches, references):
        for got, want in zip(execute(graph, *batch), reference):
            difference += float((got.double() - want.double()).pow(2).sum())
            reference_norm += float(want.double().pow(2).sum())
    return (difference / reference_norm) ** 0.5 if reference_norm else float(torch.inf)


def layer_sensitivities(
    graph: Graph,
    placement: Placement,
    scales: Mapping[str, float],
    precision: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    references: Sequence[Sequence[torch.Tensor]],
) -> list[LayerSensitivity]:
    """Each layer of `placement` quantized alone (with `scales`), its relative output error, worst first."""
    report = [
        LayerSensitivity(
            layer,
            graph.node_named(layer).op,
            relative_error(insert_qdq(graph, only(placement, [layer]), scales, precision), batches, references),
        )
        for layer in placement.quantized_layers
    ]
    return sorted(report, key=lambda item: item.relative_error, reverse=True)


def sensitivity(
    graph: Graph,
    calib_data: Iterable[Any],
    eval_data: Iterable[Any],
    precision: str = "int8",
    method: str = "entropy",
    percentile: float = 99.99,
) -> list[LayerSensitivity]:
    """Each quantizable layer's output error when it alone is quantized, worst first (see the module docstring)."""
    placement = plan_placement(graph, include_first_last=True)
    thresholds = collect_thresholds(
        graph, placement.activation_names, calibration_batches(graph, calib_data), method, percentile
    )
    scales = {name: scale_for(t, PRECISION_DTYPES[precision]) for name, t in thresholds.items()}
    batches = list(calibration_batches(graph, eval_data))
    return layer_sensitivities(graph, placement, scales, precision, batches, float_outputs(graph, batches))
