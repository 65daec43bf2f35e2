"""Compile ahead: the Triton kernels a CUDA build will time, compiled in parallel before the timing starts.

A cold build spends most of its time in Triton's compiler (each candidate tile, each fused chain, each shape
specialization), not in the timing itself, which takes milliseconds per candidate. The compiles are
independent, and Triton releases the GIL for most of the work (MLIR passes, LLVM, ptxas), so the builder
first makes the first call of every Triton candidate from a pool of threads — that call is where Triton
compiles, for exactly the specialization the timing and the plan will launch — and only then times the
candidates one by one (`timing.select_tactic`), finding them compiled. Timing stays serial: kernels timed
side by side would slow each other down. On an H100 machine (16 CPUs) MobileNetV2's batch-1 FP16 build went
from 34.8 s to 11.7 s, and the benchmark's cold builds from 7-35 s to 4-12 s (bench/results/run-suite.json).

Only tactics registered with `compiles=True` take part: their first call launches Triton kernels and nothing
else. cuDNN tactics stay out, because cuDNN's benchmark-mode search times its own algorithms (concurrent work
would distort it) and switches a process-wide flag. A candidate that fails here is left alone: the timing
calls it again and reports the error as the reason it was refused. Layers with the same timing key (same op,
input types, attributes and tactic — the repeated blocks of a network) compile once.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

from .tactics.registry import BindContext, Tactic
from .timing import TimingCache, example_call, timing_key

if TYPE_CHECKING:
    from ..ir import Node

MAX_THREADS = 8  # enough to hide most of a cold build's compiles; more mostly contend for the GIL
# Example tensors the workers may hold at once. Each first call runs on the layer's real shapes at the profile's opt
# (Triton specializes on their sizes' divisibility, so smaller stand-ins could compile another kernel); eight
# large layers at once took a ResNet-50 batch-128 build 0.8 GiB above its serial peak. A call larger than this
# runs alone; below it, small layers (where most compiles are) still run eight at a time.
EXAMPLE_BYTES_IN_FLIGHT = 512 << 20


class ByteBudget:
    """At most `limit` bytes held at once by the threads that `hold` them; a request above the limit alone."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self.used == 0 or self.used + nbytes <= self.limit)
            self.used += nbytes
        try:
            yield
        finally:
            with self._changed:
                self.used -= nbytes
                self._changed.notify_all()


def example_bytes(node: Node, env: Mapping[str, int]) -> int:
    """Bytes of the tensors a first call of `node` allocates: its inputs (constants are copied to the device
    too) and its outputs, at the shapes `env` binds."""
    values = (*node.inputs, *node.outputs)
    return sum(math.prod(v.type.concrete_shape(env)) * v.type.torch_dtype.itemsize for v in values)


def compile_threads() -> int:
    """Worker threads for compiling ahead: TENSORFORGE_COMPILE_THREADS if set (1 turns compiling ahead off),
    else the CPUs this process may use, at most MAX_THREADS."""
    asked = os.environ.get("TENSORFORGE_COMPILE_THREADS", "").strip()
    if asked:
        try:
            threads = int(asked)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(
                f"TENSORFORGE_COMPILE_THREADS must be a positive integer (1 turns compiling ahead off), got {asked!r}"
            )
        return threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def compile_ahead(
    work: Iterable[tuple[Node, Sequence[Tactic]]],
    ctx: BindContext,
    cache: TimingCache | None,
    device_name: str,
    threads: int | None = None,
) -> int:
    """Make the first call of each `compiles` tactic in `work` ((node, its supported candidates) pairs) whose
    timing `cache` does not hold yet, in parallel; returns how many distinct calls were made. CUDA only."""
    if ctx.device.type != "cuda":
        return 0
    pending = first_calls(work, ctx, cache, device_name)
    threads = compile_threads() if threads is None else threads
    if len(pending) < 2 or threads < 2:
        return 0  # nothing to overlap: the timing compiles them as it goes
    from triton.runtime import driver

    with torch.cuda.device(ctx.device):
        driver.active.get_current_device()  # Triton sets its driver up lazily: once, here, not racing in workers

    budget = ByteBudget(EXAMPLE_BYTES_IN_FLIGHT)

    def first_call(item: tuple[Node, Tactic]) -> None:
        node, t = item
        with torch.cuda.device(ctx.device), budget.hold(example_bytes(node, ctx.env)):
            try:
                example_call(t.bind(node, ctx), node, ctx, t.input_memory_format)()
                torch.cuda.current_stream(ctx.device).synchronize()  # its examples are freed only when it ran
            except Exception:  # noqa: BLE001 - the timing calls it again and reports the failure
                pass

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tensorforge-compile") as pool:
        list(pool.map(first_call, pending))
    torch.cuda.synchronize(ctx.device)
    return len(pending)


def first_calls(
    work: Iterable[tuple[Node, Sequence[Tactic]]], ctx: BindContext, cache: TimingCache | None, device_name: str
) -> list[tuple[Node, Tactic]]:
    """The (node, tactic) first calls to make: `compiles` tactics whose timing is not cached, one per timing key."""
    pending: dict[str, tuple[Node, Tactic]] = {}
    for node, supported in work:
        for t in supported:
            if not t.compiles:
                continue
            key = timing_key(node, t, device_name, ctx.env)
            if key not in pending and (cache is None or cache.get(key) is None):
                pending[key] = (node, t)
    return list(pending.values())
