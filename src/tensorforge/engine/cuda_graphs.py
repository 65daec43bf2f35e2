"""CUDA-graph replay: run a whole plan (or a whole partitioned module) as one graph launch.

At small batch sizes a GPU spends more time waiting for the CPU to launch kernels than computing
(GPU.md: ResNet-50 eager at batch 1 is ~10x slower than its CUDA-graph replay). `GraphRunner` captures
`fn(*inputs)` once per input signature (shapes and dtypes) into a `torch.cuda.CUDAGraph` with static
input buffers; later calls copy the inputs in, replay, and hand out copies of the outputs (the static
output buffers are overwritten by the next replay, so callers never see them).

Warm-up runs happen on a side stream before capture, as PyTorch requires (cuBLAS/cuDNN handles, workspace
allocations and lazy kernel loading must not happen inside a capture). All graphs of one runner share one
memory pool, and every warm-up and capture of a process runs on one stream per device (`capture_stream`):
cuBLAS keeps a workspace (32 MiB on Hopper) for each stream it has run on, so a fresh stream per capture — or
a warm-up stream apart from the capture stream — would leave a workspace behind each time, and a plan would
hold more memory than eager PyTorch, which has one. If capture fails (an op that synchronizes with the host,
say), the runner remembers it and runs `fn` eagerly for that signature, so correctness never depends on
capture.

A plan that spreads its layers over several streams (streams.py) is captured whole as well: its execution
context forks its side streams from the current stream and joins them back before returning (context.py), so
the capture follows the side streams through their events and the graph keeps the branches concurrent. The
warm-up runs create the side streams' cuBLAS workspaces and the events before capture begins.

Threads: a runner belongs to one caller — one execution context, or one thread's (or `create_context()`'s) state
of a module — because a replay writes into the graph's static buffers, so two threads replaying one graph would
hand each other's results out. Captures are serialized process-wide (`capture_lock`): PyTorch allows one capture
at a time, and every capture of a device shares one stream, so a warm-up on it while another thread captures
would land in that thread's graph. Replays never take the lock. A capture uses CUDA's thread-local capture mode:
only the capturing thread is barred from calls that are unsafe during a capture (cudaMalloc, a synchronize); other
threads keep running their plans and replaying their graphs meanwhile.

Bounded: under dynamic shapes every concrete shape is a signature of its own, so a runner keeps at most
`max_graphs` graphs (`RuntimeOptions.cuda_graph_cache_size`) in an `LRU`: steady traffic over a few shapes replays
its graphs, and a rare shape's graph is dropped once `max_graphs` others were used after it. A graph is evicted only
after the capture that takes its place, so the runner's pool always has a live graph (PyTorch shares a pool only
with a capture that still references it) and at most `max_graphs + 1` graphs exist for a moment; the evicted
graph's static inputs and outputs go back to the pool and the next capture reuses those blocks, so the cache is not
emptied (`torch.cuda.empty_cache` would also cost every other allocation its cached blocks). Dropping a graph
whose last replay is still running is safe: CUDA frees an executable graph when its launches complete. The memo of
failed captures is bounded as well. `runner.stats` counts captures, replays, evictions and eager runs.

The bookkeeping (`GraphRunner`) is apart from the capture (`CudaGraphCapture`): a runner takes any `capture`
callback returning something with `replay(inputs)`, which is how the cache is tested on a machine without a GPU.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch

logger = logging.getLogger("tensorforge")

WARMUP_RUNS = 2
DEFAULT_MAX_GRAPHS = 8  # RuntimeOptions.cuda_graph_cache_size's default
# signatures whose capture failed, remembered so each is tried once; entries are short strings, so the bound is
# generous: a signature forgotten is only tried (and warned about) again
MAX_FAILED_CAPTURES = 256

# what a CUDA graph is captured for: the shape, dtype and device of every input
Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]
Function = Callable[..., Sequence[torch.Tensor]]

K = TypeVar("K")
V = TypeVar("V")


_CAPTURE_STREAMS: dict[int, torch.cuda.Stream] = {}
_CAPTURE_LOCK = threading.RLock()  # reentrant: a capture that builds a plan may time (and capture) its tactics


def capture_lock() -> threading.RLock:
    """Held around every warm-up and capture on `capture_stream` (see the module docstring): one at a time."""
    return _CAPTURE_LOCK


def capture_stream(device: torch.device | int | None = None) -> torch.cuda.Stream:
    """The one side stream of `device` that tensorforge warms up and captures CUDA graphs on (see above)."""
    index: int | None
    if isinstance(device, int):
        index = device
    else:
        index = torch.device(device).index if device is not None else None
    if index is None:
        index = torch.cuda.current_device()
    stream = _CAPTURE_STREAMS.get(index)
    if stream is None:
        with _CAPTURE_LOCK:  # two threads asking first must get the same stream
            stream = _CAPTURE_STREAMS.get(index)
            if stream is None:  # (torch leaves Stream.__new__ unannotated)
                stream = _CAPTURE_STREAMS[index] = torch.cuda.Stream(device=index)  # type: ignore[no-untyped-call]
    return stream


def _signature(inputs: Sequence[torch.Tensor]) -> Signature:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


class LRU(Generic[K, V]):
    """A map of at most `capacity` entries, least recently used first out: `get` of a key present and `put` make
    that key the most recent; `put` past the capacity drops the oldest entries and returns them."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"an LRU cache holds at least 1 entry; got capacity {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Store `value` as the most recent entry; returns the entries evicted to stay within capacity, oldest
        first (the caller decides what dropping them means)."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        evicted: list[tuple[K, V]] = []
        while len(self._entries) > self.capacity:
            evicted.append(self._entries.popitem(last=False))
        return evicted

    def __contains__(self, key: object) -> bool:  # a membership test does not count as a use
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(list(self._entries))

    def items(self) -> list[tuple[K, V]]:
        return list(self._entries.items())


class Replayable(Protocol):
    """What a capture returns: `replay(inputs)` runs the captured function on `inputs` (of the signature it was
    captured for) and returns outputs that the caller owns."""

    def replay(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]: ...


# fn, example inputs -> the capture of fn for their signature; raises if fn cannot be captured
Capture = Callable[[Function, Sequence[torch.Tensor]], Replayable]


@dataclass
class GraphStats:
    """What a runner did, counted over its life (tests and benchmarks assert on these)."""

    captures: int = 0  # graphs captured; a signature captured again after its eviction counts again
    replays: int = 0  # calls answered by a graph replay
    evictions: int = 0  # graphs dropped to keep at most max_graphs
    failed_captures: int = 0  # captures that raised (their signature then runs eagerly)
    eager_runs: int = 0  # calls run without a graph, their signature's capture having failed


class CapturedGraph:
    """One CUDA graph with the input buffers it reads and the outputs it writes."""

    def __init__(
        self, graph: torch.cuda.CUDAGraph, static_inputs: list[torch.Tensor], static_outputs: tuple[torch.Tensor, ...]
    ) -> None:
        self.graph = graph
        self.static_inputs = static_inputs
        self.static_outputs = static_outputs

    def replay(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        for buffer, tensor in zip(self.static_inputs, inputs):
            buffer.copy_(tensor)
        self.graph.replay()
        # the static outputs are overwritten by the next replay: callers get copies
        return tuple(o.clone() for o in self.static_outputs)


class CudaGraphCapture:
    """Captures `fn` into CUDA graphs that all share one memory pool (this object's), warming up and capturing on
    the device's `capture_stream`. Called under `capture_lock` (the runner takes it)."""

    def __init__(self) -> None:
        self.pool: torch.cuda._POOL_HANDLE | None = None

    # the graph's buffers are normal tensors even when captured under torch.inference_mode(): every later replay
    # copies its inputs into them in place, inside inference mode or not
    @torch.inference_mode(False)
    def __call__(self, fn: Function, inputs: Sequence[torch.Tensor]) -> CapturedGraph:
        static_inputs = [t.clone() for t in inputs]
        side = capture_stream(inputs[0].device if inputs else None)
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    fn(*static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
                static_outputs = tuple(fn(*static_inputs))
        except Exception:
            torch.cuda.synchronize()  # let the failed warm-up or capture's work finish before running eagerly
            raise
        return CapturedGraph(graph, static_inputs, static_outputs)


class GraphRunner:
    """`fn` replayed as one CUDA graph per input signature, at most `max_graphs` of them (least recently used out).
    One caller at a time (see the module docstring). `capture` defaults to CUDA graphs (`CudaGraphCapture`)."""

    def __init__(
        self,
        fn: Function,
        name: str = "plan",
        max_graphs: int = DEFAULT_MAX_GRAPHS,
        capture: Capture | None = None,
    ) -> None:
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"{name}: max_graphs must be a positive int (CUDA graphs kept); got {max_graphs!r}")
        self.fn = fn
        self.name = name
        self.max_graphs = max_graphs
        self._capture = capture if capture is not None else CudaGraphCapture()
        self._graphs: LRU[Signature, Replayable] = LRU(max_graphs)
        self._failed: LRU[Signature, str] = LRU(MAX_FAILED_CAPTURES)
        self.stats = GraphStats()

    @property
    def captured(self) -> int:
        """How many graphs the runner holds now (at most `max_graphs`)."""
        return len(self._graphs)

    def signatures(self) -> list[Signature]:
        """The signatures of the graphs held, least recently used first."""
        return list(self._graphs)

    def failures(self) -> dict[Signature, str]:
        return dict(self._failed.items())

    def knows(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether a call on inputs of this signature needs no capture (a graph is held, or its capture failed)."""
        key = _signature(inputs)
        return key in self._graphs or key in self._failed

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = _signature(inputs)
        if self._failed.get(key) is not None:
            self.stats.eager_runs += 1
            return tuple(self.fn(*inputs))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture_and_keep(key, inputs)
            if entry is None:
                self.stats.eager_runs += 1
                return tuple(self.fn(*inputs))
        self.stats.replays += 1
        return entry.replay(inputs)

    def _capture_and_keep(self, key: Signature, inputs: Sequence[torch.Tensor]) -> Replayable | None:
        with _CAPTURE_LOCK:
            try:
                entry = self._capture(self.fn, inputs)
            except Exception as exc:  # noqa: BLE001 - never let capture change results: run eagerly instead
                reason = f"{type(exc).__name__}: {exc}"
                self._failed.put(key, reason)
                self.stats.failed_captures += 1
                logger.warning("%s: CUDA-graph capture failed (%s); running without a graph", self.name, reason)
                return None
        self.stats.captures += 1
        # evicted only now, after the capture that replaces it (see the module docstring); dropping the last
        # reference frees the graph and its buffers
        self.stats.evictions += len(self._graphs.put(key, entry))
        return entry
