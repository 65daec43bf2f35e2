"""Execution: a plan's layers compiled into a flat program, run against one activation arena.

`Program` is built once per plan: every value gets an index in a flat table, every layer becomes a step
(bound kernel, input indices, output indices), and every planned activation knows its arena slot.
`ExecutionContext` owns one arena — a single uint8 tensor of `peak_activation_bytes` on the plan's
device — and runs the program: each planned activation is a typed view of its slot (`arena[offset:...]
.view(dtype).view(shape)`, the leading part of the slot at sizes below the profile's largest). A kernel that writes
into the view it is offered costs nothing more; one that returns a new tensor (the reference tactic
always does) has its result copied into the view with `copy_`. Plan outputs are not in the arena: they
are the kernels' own results, handed to the caller (cloned if a kernel returned a view into the arena).

One context runs one batch of inputs at a time (the arena is its scratch space), as in TensorRT: the plan is
shared and immutable, the context is everything mutable of a run — arena, typed views, side streams and events, and
the CUDA graphs captured on this arena (`replay`). `plan.run` gives each calling thread a context of its own; a
caller that manages its own makes one with `plan.create_execution_context()`. Using one context from two threads at
once raises instead of mixing two runs in one arena. On CUDA a context also serves one stream at a time: a run
enqueued on another stream before the previous one finished would share the arena with it.

Several streams (a CUDA plan whose schedule has them, streams.py): the context owns its side streams and one
event per layer another stream waits for, all made once. A run forks every side stream from the caller's
current stream, runs each layer on its stream after waiting for the events of its producers on other streams,
records its own event if someone waits for it, and finally makes the caller's stream wait for every side
stream. That is the fork/join pattern a CUDA-graph capture accepts, so the same run is captured whole (by the
plan's GraphRunner or a module's). Tensors outside the arena go back to PyTorch's caching allocator as soon as
they are dead, and the allocator only knows the stream that allocated them: a layer that reads such a tensor on
another stream calls `record_stream`, so its memory is not handed out again before that stream is done with it.
On the CPU the streams are ignored: layers run one by one in node order, which every schedule allows.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .cuda_graphs import DEFAULT_MAX_GRAPHS, GraphRunner
from .errors import LayerError
from .memory import arena_exemptions, viewed

if TYPE_CHECKING:
    from ..ir import Graph, Value
    from ..ir.types import TensorType
    from .memory import MemoryPlan
    from .streams import StreamSchedule
    from .tactics.registry import Kernel

VIEW_CACHE_SIZE = 16  # sets of arena views an execution context keeps, one per set of sizes it ran at lately


@dataclass(frozen=True)
class Step:
    name: str
    op: str
    tactic: str
    kernel: Kernel
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class ArenaValue:
    index: int
    name: str
    offset: int
    dtype: torch.dtype
    type: TensorType  # the symbolic shape: sized per run


# per value index: its tensor in a run (None before it is computed and after its last read), or its arena view
Values = list[torch.Tensor | None]


def _computed(values: Values, index: int) -> torch.Tensor:
    """The tensor of value `index`, which the program's order guarantees is computed and not yet released."""
    tensor = values[index]
    if tensor is None:
        raise RuntimeError(f"value {index} is read before it is computed or after it was released")
    return tensor


class Program:
    """The flat, bound form of a plan's graph (see the module docstring)."""

    def __init__(
        self,
        graph: Graph,
        kernels: Mapping[str, Kernel],
        tactics: Mapping[str, str],
        memory: MemoryPlan,
        device: torch.device,
        schedule: StreamSchedule,
    ) -> None:
        index: dict[int, int] = {}

        def slot_of(value: Value) -> int:
            index.setdefault(id(value), len(index))
            return index[id(value)]

        self.num_inputs = len(graph.inputs)
        for v in graph.inputs:
            slot_of(v)
        self.constants = [(slot_of(v), v.data) for v in graph.constants.values()]
        self.steps = [
            Step(
                n.name,
                n.op,
                tactics[n.name],
                kernels[n.name],
                tuple(slot_of(v) for v in n.inputs),
                tuple(slot_of(v) for v in n.outputs),
            )
            for n in graph.nodes
        ]
        self.outputs = tuple(slot_of(v) for v in graph.outputs)
        # an output that is one of the plan's constants, or may be a view of one (broadcast_to(@table, (batch, n))),
        # is cloned for the caller: the plan's weights serve every later run (memory.py knows what views what)
        _, aliases = arena_exemptions(graph, tactics)
        constant_names = {v.name for v in graph.constants.values()}
        self.constant_outputs = frozenset(
            slot_of(v) for v in graph.outputs if v.data is not None or viewed(aliases, v.name) & constant_names
        )
        # after each step, drop the values it read for the last time: tensors outside the arena (cuDNN
        # outputs, views) go back to the allocator as soon as they are dead, not at the end of the run
        last_read: dict[int, int] = {}
        for position, step in enumerate(self.steps):
            for i in step.inputs:
                last_read[i] = position
        keep = set(self.outputs) | {i for i, _ in self.constants} | set(range(self.num_inputs))
        self.release = [
            tuple(i for i in set(step.inputs) if last_read[i] == position and i not in keep)
            for position, step in enumerate(self.steps)
        ]
        self.arena_values = [
            ArenaValue(slot_of(v), v.name, memory.slots[v.name].offset, v.type.torch_dtype, v.type)
            for n in graph.nodes
            for v in n.outputs
            if v.name in memory.slots
        ]
        self.num_values = len(index)
        self.arena_bytes = memory.arena_bytes
        self.device = device
        # the stream schedule, and the reads that cross streams on tensors the caching allocator may hand out again
        self.num_streams = schedule.num_streams
        self.streams = schedule.streams
        self.waits = schedule.waits
        self.signals = schedule.signals
        producer_stream = {j: stream for step, stream in zip(self.steps, self.streams) for j in step.outputs}
        in_arena = {a.index for a in self.arena_values}
        self.cross_stream_reads = [
            tuple(
                sorted(
                    i
                    for i in set(step.inputs)
                    if i in producer_stream and producer_stream[i] != stream and i not in in_arena
                )
            )
            for step, stream in zip(self.steps, self.streams)
        ]
        self.side_stream_outputs = tuple(sorted({i for i in self.outputs if producer_stream.get(i, 0) != 0}))


class ExecutionContext:
    """One arena, the program that runs in it, (on CUDA, for a multi-stream program) its side streams, and the CUDA
    graphs captured on it. One caller at a time (see the module docstring)."""

    # The arena and its views are normal tensors even where the first call runs under torch.inference_mode(): an
    # inference tensor (a view made in inference mode is one too) cannot be written in place outside inference
    # mode, and every layer writes its arena view in place, whichever mode a later call runs in.
    @torch.inference_mode(False)
    def __init__(self, program: Program, max_graphs: int = DEFAULT_MAX_GRAPHS) -> None:
        self.program = program
        self.max_graphs = max_graphs
        self.arena = torch.empty(program.arena_bytes, dtype=torch.uint8, device=program.device)
        # by the symbols' sizes; the most recently used only, so that a stream of varying shapes keeps no more
        self._views: OrderedDict[tuple[tuple[str, int], ...], Values] = OrderedDict()
        self._in_use = threading.RLock()  # reentrant: a capture (`replay`) runs `execute` on the same thread
        self.graph_runner: GraphRunner | None = None  # made by the first `replay`
        self._side_streams: list[torch.cuda.Stream] = []
        self._events: dict[int, torch.cuda.Event] = {}  # position of a layer -> its event, for the waits
        if program.device.type == "cuda" and program.num_streams > 1:  # (torch leaves their __new__ unannotated)
            self._side_streams = [
                torch.cuda.Stream(device=program.device)  # type: ignore[no-untyped-call]
                for _ in range(program.num_streams - 1)
            ]
            self._events = {
                position: torch.cuda.Event()  # type: ignore[no-untyped-call]
                for position in program.signals
            }

    def views(self, env: Mapping[str, int]) -> Values:
        """Per value index: its typed arena view at these symbol sizes (None where it is not in the arena)."""
        key = tuple(sorted(env.items()))
        views = self._views.get(key)
        if views is not None:
            self._views.move_to_end(key)
            return views
        return self._new_views(key, env)

    @torch.inference_mode(False)  # see __init__; only where views are made, not on every call's cache hit
    def _new_views(self, key: tuple[tuple[str, int], ...], env: Mapping[str, int]) -> Values:
        views: Values = [None] * self.program.num_values
        for a in self.program.arena_values:
            shape = a.type.concrete_shape(env)
            nbytes = a.type.nbytes(env)
            views[a.index] = self.arena[a.offset : a.offset + nbytes].view(a.dtype).view(shape)
        self._views[key] = views
        if len(self._views) > VIEW_CACHE_SIZE:
            self._views.popitem(last=False)
        return views

    def _claim(self) -> None:
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError(
                "this execution context is running on another thread; a context serves one caller at "
                "a time: give each thread its own (plan.create_execution_context(), or plan.run "
                "without a context)"
            )

    def replay(
        self, inputs: Sequence[torch.Tensor], env_of: Callable[[Sequence[torch.Tensor]], Mapping[str, int]]
    ) -> tuple[torch.Tensor, ...]:
        """`execute` as one CUDA graph per input signature, captured on this context's arena the first time;
        `env_of(inputs)` binds the symbols (the plan's `bind_symbols`)."""
        self._claim()
        try:
            if self.graph_runner is None:
                this = weakref.ref(self)  # the runner lives in the context: no reference cycle through its function

                def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    context = this()
                    if context is None:  # only the context calls its runner
                        raise RuntimeError("the execution context of this CUDA graph runner is gone")
                    return context.execute(xs, env_of(xs))

                self.graph_runner = GraphRunner(run, name="plan", max_graphs=self.max_graphs)
            return self.graph_runner(*inputs)
        finally:
            self._in_use.release()

    @torch.no_grad()
    def execute(self, inputs: Sequence[torch.Tensor], env: Mapping[str, int]) -> tuple[torch.Tensor, ...]:
        self._claim()
        try:
            return self._execute(inputs, env)
        finally:
            self._in_use.release()

    def _execute(self, inputs: Sequence[torch.Tensor], env: Mapping[str, int]) -> tuple[torch.Tensor, ...]:
        program = self.program
        views = self.views(env)
        values: Values = [None] * program.num_values
        values[: program.num_inputs] = inputs
        for i, tensor in program.constants:
            values[i] = tensor
        if self._side_streams:
            self._run_on_streams(values, views, env)
        else:
            for step, dead in zip(program.steps, program.release):
                self._run_step(step, values, views, env)
                for i in dead:
                    values[i] = None
        return tuple(self._owned(_computed(values, i), i) for i in program.outputs)

    def _run_on_streams(self, values: Values, views: Values, env: Mapping[str, int]) -> None:
        """Every layer on its stream (see the module docstring): fork from the caller's stream, wait for the
        producers on other streams, join back. The join is in `finally` so that a failing layer never leaves a
        side stream forked from a CUDA-graph capture."""
        program = self.program
        caller = torch.cuda.current_stream(program.device)
        streams = [caller, *self._side_streams]
        for side in self._side_streams:
            side.wait_stream(caller)  # inputs, and the previous run's use of the arena, come first
        try:
            for position, (step, dead) in enumerate(zip(program.steps, program.release)):
                stream = streams[program.streams[position]]
                with torch.cuda.stream(stream):
                    for producer in program.waits[position]:
                        stream.wait_event(self._events[producer])
                    for i in program.cross_stream_reads[position]:
                        _computed(values, i).record_stream(stream)
                    self._run_step(step, values, views, env)
                    if position in self._events:
                        self._events[position].record(stream)
                for i in dead:
                    values[i] = None
        finally:
            for side in self._side_streams:
                caller.wait_stream(side)
        for i in program.side_stream_outputs:  # the caller uses (and frees) its results on its own stream
            _computed(values, i).record_stream(caller)

    @staticmethod
    def _run_step(step: Step, values: Values, views: Values, env: Mapping[str, int]) -> None:
        """Run one layer on the current stream: its results land in `values` (in their arena views when planned)."""
        offered = [views[j] for j in step.outputs]
        inputs = [_computed(values, i) for i in step.inputs]
        try:
            results = step.kernel(inputs, offered, env)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            raise LayerError(
                f"layer {step.name!r} ({step.op}, tactic {step.tactic}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(results) != len(step.outputs):
            raise RuntimeError(
                f"layer {step.name!r} ({step.op}, tactic {step.tactic}) returned {len(results)} "
                f"outputs, the plan expects {len(step.outputs)}"
            )
        for j, result, view in zip(step.outputs, results, offered):
            if view is None:
                values[j] = result
                continue
            if result is not view:
                if result.shape != view.shape or result.dtype != view.dtype:
                    raise RuntimeError(
                        f"layer {step.name!r} ({step.op}, tactic {step.tactic}) produced "
                        f"{result.dtype} {tuple(result.shape)}, the plan expects {view.dtype} "
                        f"{tuple(view.shape)}"
                    )
                view.copy_(result)
            values[j] = view

    def _owned(self, tensor: torch.Tensor, index: int) -> torch.Tensor:
        """A result the caller may keep: never a view into the arena, never the plan's own constant."""
        if index in self.program.constant_outputs:
            return tensor.clone()
        if (
            tensor.device == self.arena.device
            and tensor.numel()
            and self.arena.numel()
            and tensor.untyped_storage().data_ptr() == self.arena.untyped_storage().data_ptr()
        ):
            return tensor.clone()
        return tensor
