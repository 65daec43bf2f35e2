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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger("tensorforge")

WARMUP_RUNS = 2

# what a CUDA graph is captured for: the shape, dtype and device of every input
Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]
# one capture: the graph, the input buffers it reads, the outputs it writes
Captured = tuple[torch.cuda.CUDAGraph, list[torch.Tensor], tuple[torch.Tensor, ...]]


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


class GraphRunner:
    """`fn` replayed as one CUDA graph per input signature. One caller at a time (see the module docstring)."""

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], name: str = "plan") -> None:
        self.fn = fn
        self.name = name
        self.pool: torch.cuda._POOL_HANDLE | None = None  # one memory pool for every graph of this runner
        self._graphs: dict[Signature, Captured] = {}
        self._failed: dict[Signature, str] = {}

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def failures(self) -> dict[Signature, str]:
        return dict(self._failed)

    def knows(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether inputs of this signature have been seen (captured, or run eagerly after a failed capture)."""
        key = _signature(inputs)
        return key in self._graphs or key in self._failed

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = _signature(inputs)
        if key in self._failed:
            return tuple(self.fn(*inputs))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, inputs)
            if entry is None:
                return tuple(self.fn(*inputs))
        graph, static_inputs, static_outputs = entry
        for buffer, tensor in zip(static_inputs, inputs):
            buffer.copy_(tensor)
        graph.replay()
        return tuple(o.clone() for o in static_outputs)

    def _capture(self, key: Signature, inputs: Sequence[torch.Tensor]) -> Captured | None:
        with _CAPTURE_LOCK:
            return self._capture_locked(key, inputs)

    def _capture_locked(self, key: Signature, inputs: Sequence[torch.Tensor]) -> Captured | None:
        static_inputs = [t.clone() for t in inputs]
        side = capture_stream(inputs[0].device if inputs else None)
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.fn(*static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
                static_outputs = tuple(self.fn(*static_inputs))
        except Exception as exc:  # noqa: BLE001 - never let capture change results: run eagerly instead
            torch.cuda.synchronize()
            self._failed[key] = f"{type(exc).__name__}: {exc}"
            logger.warning("%s: CUDA-graph capture failed (%s); running without a graph", self.name, self._failed[key])
            return None
        entry = (graph, static_inputs, static_outputs)
        self._graphs[key] = entry
        return entry
