"""Calibration data: what users hand in (tensors, tuples, dicts, numpy arrays, .npz files), as the graph's inputs.

A calibration set is an iterable of batches; a batch is one tensor (a one-input model), a tuple/list of tensors
(in the graph's input order) or a dict keyed by input name. numpy arrays are taken as tensors; floats are cast to
the input's float type (numpy makes float64), any other mismatch is an error naming the batch and the input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..ir import Graph
from ..ir.execute import bind_symbols
from ..ir.types import torch_dtype


class CalibrationDataError(ValueError):
    """The calibration data is missing, empty, or does not fit the model's inputs."""


def _as_tensor(item: Any, where: str) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item.detach()
    if isinstance(item, np.ndarray):
        return torch.from_numpy(np.asarray(item, order="C"))
    raise CalibrationDataError(f"{where}: expected a tensor or numpy array, got {type(item).__name__}")


def batch_inputs(graph: Graph, batch: Any, index: int) -> tuple[torch.Tensor, ...]:
    """Calibration batch number `index` as the tuple of CPU tensors `graph` takes (CalibrationDataError if not)."""
    names = [v.name for v in graph.inputs]
    where = f"calibration batch {index}"
    if isinstance(batch, Mapping):
        unknown = sorted(set(batch) - set(names))
        missing = [n for n in names if n not in batch]
        if unknown or missing:
            raise CalibrationDataError(
                f"{where}: keys {sorted(batch)} do not match the model's inputs {names}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {unknown})" if unknown else "")
            )
        items = [batch[n] for n in names]
    elif isinstance(batch, (tuple, list)):
        items = list(batch)
    else:
        items = [batch]
    if len(items) != len(names):
        raise CalibrationDataError(f"{where}: holds {len(items)} tensors, the model takes {len(names)} ({names})")
    tensors = []
    for value, item in zip(graph.inputs, items):
        tensor = _as_tensor(item, f"{where}, input {value.name!r}").cpu()
        want = torch_dtype(value.type.dtype)
        if tensor.dtype != want:
            if not (tensor.dtype.is_floating_point and want.is_floating_point):
                raise CalibrationDataError(
                    f"{where}, input {value.name!r}: expected {value.type.dtype}, got {str(tensor.dtype)[6:]}"
                )
            tensor = tensor.to(want)
        tensors.append(tensor)
    try:
        bind_symbols(graph, tensors)
    except (TypeError, ValueError) as exc:
        raise CalibrationDataError(f"{where}: {exc}") from None
    return tuple(tensors)


def calibration_batches(graph: Graph, data: Iterable[Any] | None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Each batch of `data` as `graph`'s inputs, checked (CalibrationDataError when there is none at all)."""
    if data is None:
        raise CalibrationDataError("no calibration data: give an iterable of input batches (or a cache file)")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        raise CalibrationDataError(
            "calibration data is an iterable of batches: wrap a single batch in a list ([x]), or split it"
        )
    count = 0
    for index, batch in enumerate(data):
        count += 1
        yield batch_inputs(graph, batch, index)
    if not count:
        raise CalibrationDataError("the calibration data is empty: give at least one batch of the model's inputs")


def load_calibration_files(path: str | os.PathLike[str]) -> list[dict[str, np.ndarray]]:
    """Batches from an .npz file (one batch, keys = input names) or a directory of them (one batch per file, in
    name order). Read as data only (no pickled objects)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz"))
        if not files:
            raise CalibrationDataError(f"{path}: the calibration directory holds no .npz files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise CalibrationDataError(f"{path}: no such calibration file or directory")
    batches = []
    for file in files:
        try:
            loaded = np.load(file, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001  (whatever numpy raises, the file is at fault: one line says so)
            raise CalibrationDataError(f"{file}: not a readable .npz file ({exc})") from None
        if isinstance(loaded, np.ndarray):
            raise CalibrationDataError(f"{file}: a calibration file is an .npz of arrays keyed by input name")
        with loaded:
            batches.append({key: loaded[key] for key in loaded.files})
    return batches
