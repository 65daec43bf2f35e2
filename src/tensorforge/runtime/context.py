"""What one caller of a runtime Module owns: an execution context per plan, and its whole-module CUDA graphs.

TensorRT's split, for a whole partitioned model: the module and its plans are shared by every caller; what a run
changes — each plan's arena, side streams and CUDA graphs (`engine.ExecutionContext`), and the CUDA graphs of the
whole module (`GraphRunner`, whose replays write into static buffers) — belongs to one caller. The module keeps a
`CallerState` per calling thread, so `module(x)` is safe from any number of threads with no action from the user;
`module.create_context()` returns a `ModuleContext`, the same state held by the caller (one per worker, say).

Memory: each caller holds one arena per plan it has run (`plan.peak_activation_bytes` each) and, on CUDA, the
memory pools of its captured graphs; a thread's state is freed when the thread ends, a ModuleContext's when it is
dropped. The plans (weights) are shared.

When multi-engine mode 0 replaces a region's plan with a larger one, a caller keeps the plans it has contexts for
(and the graphs captured on them) until its next call: a thread still running the old plan finishes on it. At that
next call the caller sees the module's new generation and drops what belongs to replaced plans.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..engine import Plan
    from ..engine.context import ExecutionContext
    from ..engine.cuda_graphs import GraphRunner
    from .module import Module


class CallerState:
    """The mutable state one caller runs a module with (see the module docstring)."""

    __slots__ = ("generation", "contexts", "runner", "max_graphs", "__weakref__")

    def __init__(self, generation: int, max_graphs: int):
        self.generation = generation  # the module's plan generation this state's graphs were captured in
        self.max_graphs = max_graphs  # graphs each of its runners keeps (RuntimeOptions.cuda_graph_cache_size)
        self.contexts: dict[int, tuple[Plan, ExecutionContext]] = {}  # id(plan) -> (the plan, kept alive; its context)
        self.runner: GraphRunner | None = None

    def context_for(self, plan: Plan) -> ExecutionContext:
        entry = self.contexts.get(id(plan))
        if entry is None:
            entry = self.contexts[id(plan)] = (plan, plan.create_execution_context(self.max_graphs))
        return entry[1]

    def renew(self, generation: int, current: Collection[Plan], device: torch.device) -> None:
        """Drop the graphs and the contexts of plans the module no longer has (it replaced them)."""
        if device.type == "cuda":
            # the last replays on this caller's stream may still read the arenas and graphs about to be freed
            torch.cuda.current_stream(device).synchronize()
        keep = {id(plan) for plan in current}
        self.runner = None
        self.contexts = {key: entry for key, entry in self.contexts.items() if key in keep}
        self.generation = generation


class ModuleContext:
    """A caller's own execution state for a module: `context(*inputs)` runs the module as `module(*inputs)` does,
    in arenas (and CUDA graphs) of its own. One caller at a time: for several threads, one context each."""

    def __init__(self, module: Module):
        self.module = module
        self._state = CallerState(module._generation, module.options.cuda_graph_cache_size)
        self._in_use = threading.Lock()

    def __call__(self, *inputs: torch.Tensor):
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError(
                "this ModuleContext is running on another thread; a context serves one caller at a "
                "time: make one per thread with module.create_context(), or call the module itself"
            )
        try:
            return self.module._forward(inputs, self._state)
        finally:
            self._in_use.release()

    @property
    def graph_runner(self) -> GraphRunner | None:
        """This context's whole-module CUDA-graph runner (None before its first graphed call)."""
        return self._state.runner

    def __repr__(self) -> str:
        return f"ModuleContext({len(self._state.contexts)} plan contexts, module={self.module.extra_repr()})"
