"""The calibration cache: activation scales in a small text file, reused instead of calibrating again.

As TensorRT's calibration cache, it is one line per tensor, `name: scale`, after one header line that says what
the scales are for:

    # tensorforge calibration cache v1 precision=int8 method=entropy percentile=99.99 graph=<digest>

The graph digest covers the graph's structure (inputs, ops, attributes, wiring, constant names and types, not the
weights' values), so a cache made for another model, or for this one before its graph changed, is refused with a
message naming what differs. The file is parsed as data: names and decimal numbers, nothing evaluated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ir import Graph

FORMAT = "tensorforge calibration cache v1"
_HEADER_PREFIX = "# " + FORMAT


class CalibrationCacheError(ValueError):
    """A calibration cache that cannot be read, or that was made for another graph or setting."""


def graph_structure_digest(graph: Graph) -> str:
    """sha256 (hex, 16 digits) of what the graph computes, weights' values aside."""
    doc: dict[str, Any] = {
        "inputs": [[v.name, str(v.type)] for v in graph.inputs],
        "constants": sorted([name, str(v.type)] for name, v in graph.constants.items()),
        "nodes": [
            [node.op, node.attrs, [v.name for v in node.inputs], [[v.name, str(v.type)] for v in node.outputs]]
            for node in graph.nodes
        ],
        "outputs": [v.name for v in graph.outputs],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)  # symbolic sizes by their text
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CacheHeader:
    precision: str
    method: str
    percentile: float
    graph: str

    def line(self) -> str:
        return (
            f"{_HEADER_PREFIX} precision={self.precision} method={self.method} "
            f"percentile={self.percentile!r} graph={self.graph}"
        )


def write_cache(path: str | os.PathLike[str], header: CacheHeader, scales: Mapping[str, float]) -> None:
    for name in scales:
        if "\n" in name or not name.strip():
            raise CalibrationCacheError(f"a value name cannot be written to a calibration cache line: {name!r}")
    lines = [header.line(), *(f"{name}: {float(scale)!r}" for name, scale in scales.items())]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _parse_header(line: str, path: str) -> CacheHeader:
    if not line.startswith(_HEADER_PREFIX + " "):
        raise CalibrationCacheError(f"{path}: not a calibration cache (its first line must start {_HEADER_PREFIX!r})")
    fields: dict[str, str] = {}
    for item in line[len(_HEADER_PREFIX) :].split():
        key, sep, value = item.partition("=")
        if not sep:
            raise CalibrationCacheError(f"{path}: header field {item!r} is not key=value")
        fields[key] = value
    missing = sorted({"precision", "method", "percentile", "graph"} - fields.keys())
    if missing:
        raise CalibrationCacheError(f"{path}: the header lacks {', '.join(missing)}")
    try:
        percentile = float(fields["percentile"])
    except ValueError:
        raise CalibrationCacheError(f"{path}: percentile={fields['percentile']!r} is not a number") from None
    return CacheHeader(fields["precision"], fields["method"], percentile, fields["graph"])


def read_cache(path: str | os.PathLike[str]) -> tuple[CacheHeader, dict[str, float]]:
    """The header and the scales of a cache file (CalibrationCacheError naming the line that is wrong)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise CalibrationCacheError(f"{path}: the calibration cache is empty")
    header = _parse_header(lines[0], path)
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, text = line.rpartition(":")
        try:
            scale = float(text) if sep else math.nan
        except ValueError:
            scale = math.nan
        if not name or not math.isfinite(scale) or scale <= 0:
            raise CalibrationCacheError(f"{path}, line {number}: expected 'name: scale' with a positive scale")
        if name in scales:
            raise CalibrationCacheError(f"{path}, line {number}: {name!r} is given twice")
        scales[name] = scale
    return header, scales


def check_cache(path: str | os.PathLike[str], expected: CacheHeader, needed: list[str]) -> dict[str, float]:
    """The scales of cache `path` if it was made for `expected` and holds every name in `needed`; else a
    CalibrationCacheError listing each difference and what to do."""
    header, scales = read_cache(path)
    differences = []
    if header.graph != expected.graph:
        differences.append(f"graph digest {header.graph} (this graph: {expected.graph}): the graph changed")
    if header.precision != expected.precision:
        differences.append(f"precision {header.precision} (asked: {expected.precision})")
    if header.method != expected.method:
        differences.append(f"method {header.method} (asked: {expected.method})")
    elif header.method == "percentile" and header.percentile != expected.percentile:
        differences.append(f"percentile {header.percentile} (asked: {expected.percentile})")
    missing = [name for name in needed if name not in scales]
    if missing:
        differences.append(f"no scale for {', '.join(missing)}")
    if differences:
        raise CalibrationCacheError(
            f"calibration cache {os.fspath(path)} does not fit: it has {'; '.join(differences)}. Delete it (or "
            f"pass another cache path) to calibrate again"
        )
    return {name: scales[name] for name in needed}
