"""Tactic selection: pick one tactic per layer, timing the candidates where there is a choice.

- optimization level 0, or a single candidate: the first supported candidate (highest priority) — no timing.
- a view op whose alias tactic applies (views.py): the alias, untimed. A view launches nothing, so timing it
  against a tactic that writes the arena measures noise, and losing that coin toss cost a plan a full copy of
  the tensor (the arena write, which the measurement does not see) — BERT paid 24 such copies per call.
- otherwise each candidate is bound and timed on the layer's real shapes at the profile's opt (constants are the
  real weights, activations random), median of a few runs after a warm-up; the fastest wins. A candidate
  that fails while being timed is dropped with its error as the reason.

Timings go to a `TimingCache` keyed by (device, op, input types, attributes, tactic), so a later build —
or another model with the same layer shapes — reuses them. With `BuilderConfig.timing_cache` set, the
cache is a JSON file that builds read and extend (written atomically).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..ir.types import FLOAT_DTYPES, TensorType, bind_value
from .cuda_graphs import capture_lock, capture_stream
from .tactics.registry import BindContext, Kernel, Tactic

if TYPE_CHECKING:
    from ..ir import Node, Value
    from .config import BuilderConfig

CACHE_FORMAT = "tensorforge.timing_cache"
CACHE_VERSION = 1
RUNS_PER_LEVEL = {1: 3, 2: 5, 3: 10, 4: 20, 5: 50}


class TimingCache:
    """Measured milliseconds per (device, layer signature, tactic); optionally backed by a JSON file."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.entries: dict[str, float] = {}
        self.dirty = False
        if path and os.path.exists(path):
            with open(path) as f:
                doc = json.load(f)
            if doc.get("format") == CACHE_FORMAT and doc.get("version") == CACHE_VERSION:
                self.entries = {k: float(v) for k, v in doc.get("entries", {}).items()}

    def get(self, key: str) -> float | None:
        return self.entries.get(key)

    def put(self, key: str, ms: float) -> None:
        self.entries[key] = ms
        self.dirty = True

    def save(self) -> None:
        if not self.path or not self.dirty:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".timing-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(
                {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": self.entries}, f, indent=0, sort_keys=True
            )
        os.replace(tmp, self.path)
        self.dirty = False


def timing_key(node: Node, tactic: Tactic, device_name: str, env: Mapping[str, int]) -> str:
    types = [TensorType(v.type.dtype, v.type.concrete_shape(env)) for v in node.inputs]
    attrs = {k: bind_value(v, env) for k, v in node.attrs.items()}
    return json.dumps([device_name, node.op, [str(t) for t in types], attrs, tactic.name], sort_keys=True, default=str)


def _example(value: Value, env: Mapping[str, int], device: torch.device) -> torch.Tensor:
    if value.data is not None:
        return value.data.to(device)
    t = value.type
    shape = t.concrete_shape(env)
    if t.dtype in FLOAT_DTYPES:
        return torch.randn(shape, dtype=t.torch_dtype, device=device)
    return torch.zeros(shape, dtype=t.torch_dtype, device=device)  # zeros are valid indices and masks


def example_call(
    kernel: Kernel, node: Node, ctx: BindContext, memory_format: torch.memory_format | None = None
) -> Callable[[], Sequence[torch.Tensor]]:
    """A no-argument call of `kernel` on `node`'s shapes at the profile's opt: the real constants, random activations
    (laid out in `memory_format` where 4-d, as the tactic receives them in a plan), fresh outputs."""
    env = ctx.env
    inputs = [_example(v, env, ctx.device) for v in node.inputs]
    if memory_format is not None:
        inputs = [
            t.contiguous(memory_format=memory_format) if v.data is None and t.dim() == 4 else t
            for v, t in zip(node.inputs, inputs)
        ]
    outputs: list[torch.Tensor | None] = [
        torch.empty(v.type.concrete_shape(env), dtype=v.type.torch_dtype, device=ctx.device) for v in node.outputs
    ]
    return lambda: kernel(inputs, outputs, env)


CALLS_PER_GRAPH = 5  # kernel calls captured in one timing graph: one replay's launch cost is shared


@torch.no_grad()
def measure(
    kernel: Kernel, node: Node, ctx: BindContext, runs: int, memory_format: torch.memory_format | None = None
) -> float:
    """Median milliseconds of `kernel` on `node`'s shapes at the profile's opt (one warm-up run first).

    `memory_format` lays out 4-d activation inputs the way the tactic receives them in a plan (a
    channels-last convolution follows channels-last layers), so layout conversions it would not pay in
    the plan do not distort its timing. On CUDA the kernel is timed as the plan runs it: captured in a CUDA
    graph and replayed (CUDA events around each replay), so the host-side cost of a launch — large for a
    Triton kernel called from Python, absent from a plan's graph replay — does not decide between tactics.
    A kernel that cannot be captured is timed by direct calls instead."""
    call = example_call(kernel, node, ctx, memory_format)
    call()
    if ctx.device.type == "cuda":
        graph = _captured(call, ctx.device)
        replay, per_replay = (graph.replay, CALLS_PER_GRAPH) if graph is not None else (call, 1)
        times: list[float] = []
        for _ in range(runs):  # (torch leaves Event.__new__ unannotated)
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / per_replay)
        return statistics.median(times)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def _captured(call: Callable[[], object], device: torch.device) -> torch.cuda.CUDAGraph | None:
    """A CUDA graph of CALLS_PER_GRAPH calls (after a warm-up on a side stream, as capture requires), or None.

    Under `capture_lock`, in thread-local capture mode, like every capture on the shared stream (cuda_graphs.py):
    another thread may be capturing or running its plans while this one builds."""
    side = capture_stream(device)  # one stream, so one cuBLAS workspace, for every measurement of a build
    with capture_lock():
        side.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(side):
                call()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with warnings.catch_warnings():  # a view launches nothing: its graph is empty, and that is fine
                warnings.filterwarnings("ignore", message="The CUDA Graph is empty")
                with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                    for _ in range(CALLS_PER_GRAPH):
                        call()
            return graph
        except Exception:  # noqa: BLE001 - capture is an optimisation of the measurement, never a requirement
            torch.cuda.synchronize(device)
            return None


@dataclass
class Selection:
    """The chosen tactic of one layer, with what was measured and what was refused (for reports)."""

    tactic: Tactic
    timings_ms: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def needs_timing(supported: Sequence[Tactic], config: BuilderConfig) -> bool:
    """Whether a layer with these supported candidates is timed (see the module docstring)."""
    view = bool(supported) and supported[0].aliases_input
    return config.optimization_level > 0 and len(supported) > 1 and not view


def select_tactic(
    node: Node, supported: Sequence[Tactic], ctx: BindContext, cache: TimingCache | None, device_name: str
) -> Selection | None:
    """The tactic `node` runs with, or None when no candidate is left (see the module docstring)."""
    if not supported:
        return None
    if not needs_timing(supported, ctx.config):
        return Selection(supported[0])
    runs = RUNS_PER_LEVEL[ctx.config.optimization_level]
    selection = Selection(supported[0])
    for t in supported:
        key = timing_key(node, t, device_name, ctx.env)
        ms = cache.get(key) if cache is not None else None
        if ms is None:
            try:
                ms = measure(t.bind(node, ctx), node, ctx, runs, t.input_memory_format)
            except Exception as exc:  # noqa: BLE001 - a failing candidate is simply not chosen
                selection.refused[t.name] = f"failed while timing: {type(exc).__name__}: {exc}"
                continue
            if cache is not None:
                cache.put(key, ms)
        selection.timings_ms[t.name] = ms
    if not selection.timings_ms:
        return None
    best = min(selection.timings_ms, key=selection.timings_ms.__getitem__)
    selection.tactic = next(t for t in supported if t.name == best)
    return selection
