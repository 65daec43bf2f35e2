"""`quantize`: post-training quantization of a model or graph, the one path every entry point goes through.

`forge.quantize`, `convert(int8_mode=True, ...)`, `compile(precision="int8"|"fp8", ...)` and `tensorforge build
--int8/--fp8 --calib` all call it: plan the Q/DQ placement (insert.py), take the activation scales from the cache
when it fits or calibrate them (calibrators.py) and write the cache, then insert the pairs.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..ir import Graph
from .auto_method import choose_method
from .cache import CacheHeader, check_cache, graph_structure_digest, write_cache
from .calibrators import AUTO, METHODS, collect_every_method, collect_thresholds, scale_for
from .data import CalibrationDataError, calibration_batches
from .insert import PRECISION_DTYPES, insert_qdq, plan_placement
from .mixed_precision import fit_error_budget
from .sensitivity import float_outputs

logger = logging.getLogger("tensorforge")

# measured, not guessed: each calibrator's Q/DQ graph is run on the calibration batches and the closest to the float
# graph kept (auto_method.py); no single calibrator is best on every model (bench/results/quant_accuracy)
DEFAULT_METHOD = {"int8": AUTO, "fp8": AUTO}


def _example_from_batch(batch: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(batch, dict):
        raise CalibrationDataError(
            "a module is traced with positional inputs: give example_inputs when calibration batches are dicts"
        )
    items = batch if isinstance(batch, (tuple, list)) else (batch,)
    return tuple(torch.from_numpy(np.asarray(t)) if isinstance(t, np.ndarray) else t for t in items)


def quantize(
    model_or_graph: torch.nn.Module | Graph,
    calib_data: Iterable[Any] | None,
    precision: str = "int8",
    method: str | None = None,
    percentile: float = 99.99,
    exclude: Iterable[str] = (),
    cache: str | os.PathLike[str] | None = None,
    example_inputs: Sequence[torch.Tensor] | None = None,
    *,
    include_first_last: bool = False,
    error_budget: float | None = None,
) -> Graph:
    """The graph of `model_or_graph` with quantize -> dequantize pairs where TensorRT places them, activation
    scales calibrated over `calib_data` (an iterable of input batches: tensors, tuples or dicts by input name).

    precision: "int8" or "fp8" (float8_e4m3fn). method: "entropy" (TensorRT's entropy calibrator), "minmax",
    "percentile" (`percentile` of |x|) or "auto" (the default: all three in one calibration pass, and the one whose
    quantized graph is closest to the float graph on the calibration batches kept; auto_method.py). exclude: layer
    node names or op kinds to keep in floating point (the first conv and the classifier are kept unless
    `include_first_last`).
    cache: a calibration cache file, reused when it exists and fits this graph (calib_data may then be None),
    written after calibrating otherwise. An nn.Module is imported with `from_torch` on `example_inputs`, by
    default the first calibration batch.

    error_budget: the largest relative output error (||quantized - float|| / ||float|| over the calibration batches,
    0.05 = 5%) the quantized graph may have; the most sensitive layers are kept in floating point until it is met
    (mixed_precision.py). It needs calib_data (kept in memory for the search), even where the cache gives the scales.
    """
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"precision must be one of {sorted(PRECISION_DTYPES)}, got {precision!r}")
    method = method if method is not None else DEFAULT_METHOD[precision]
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if isinstance(model_or_graph, Graph):
        graph = model_or_graph
    elif isinstance(model_or_graph, torch.nn.Module):
        if example_inputs is None:
            if calib_data is None:
                raise CalibrationDataError("a module needs calibration data (or example_inputs) to be imported")
            iterator = iter(calib_data)
            first = next(iterator, None)
            if first is None:
                raise CalibrationDataError("the calibration data is empty: give at least one batch of the inputs")
            calib_data = itertools.chain([first], iterator)  # the first batch calibrates too
            example_inputs = _example_from_batch(first)
        from ..frontends import from_torch

        graph = from_torch(model_or_graph.eval(), tuple(example_inputs))
    else:
        raise TypeError(f"quantize takes a torch.nn.Module or an ir.Graph, got {type(model_or_graph).__name__}")
    exclude = tuple(exclude)
    placement = plan_placement(graph, exclude=exclude, include_first_last=include_first_last)
    if not placement.quantized_layers:
        logger.warning(
            "quantize: no layer of graph %r is quantized (%s); include_first_last=True quantizes the first conv and "
            "the classifier too",
            graph.name,
            "; ".join(f"{name}: {why}" for name, why in placement.kept.items()) or "it has no conv, dense or matmul",
        )
    cached = cache is not None and os.path.exists(cache)
    if error_budget is not None:
        if not error_budget >= 0:
            raise ValueError(f"error_budget is a relative output error >= 0 (0.05: 5%), got {error_budget!r}")
        if calib_data is None:
            raise CalibrationDataError("error_budget is measured on calibration data: give calib_data")
    references: list[tuple[torch.Tensor, ...]] = []  # the float graph's outputs: what auto and the budget measure by
    if error_budget is not None or (method == AUTO and not cached):
        calib_data = list(calibration_batches(graph, calib_data))  # calibrated on, then measured on
        references = float_outputs(graph, calib_data)
    header = CacheHeader(precision, method, float(percentile), graph_structure_digest(graph))
    dtype = PRECISION_DTYPES[precision]
    if cached:
        assert cache is not None
        scales = check_cache(cache, header, placement.activation_names)
        logger.info("calibration: %d scales from %s", len(scales), os.fspath(cache))
    else:
        if method == AUTO:
            assert isinstance(calib_data, list)
            every = collect_every_method(graph, placement.activation_names, calib_data, percentile)
            scale_of = {m: {name: scale_for(t, dtype) for name, t in ts.items()} for m, ts in every.items()}
            scales = scale_of[choose_method(graph, placement, scale_of, precision, calib_data, references)]
        else:
            thresholds = collect_thresholds(
                graph, placement.activation_names, calibration_batches(graph, calib_data), method, percentile
            )
            scales = {name: scale_for(threshold, dtype) for name, threshold in thresholds.items()}
        if cache is not None:
            write_cache(cache, header, scales)
    if error_budget is not None and placement.quantized_layers:
        assert isinstance(calib_data, list)
        placement = fit_error_budget(
            graph,
            placement,
            scales,
            precision,
            calib_data,
            references,
            error_budget,
            lambda keep: plan_placement(graph, (*exclude, *keep), include_first_last),
        )
    logger.info(
        "quantization: %d layers in %s, %d kept in floating point%s",
        len(placement.quantized_layers),
        precision,
        len(placement.kept),
        "".join(f"\n  {name}: {why}" for name, why in placement.kept.items()),
    )
    return insert_qdq(graph, placement, scales, precision)
