"""Memory planning: every activation gets an offset in one arena, reused once the activation is dead.

What lives in the arena: every output of a node that is not a plan output. Plan inputs are never copied
(kernels read the caller's tensors), constants live with the plan, and plan outputs are allocated per run
and handed to the caller, who owns them — a later run never overwrites a result someone still holds.

Lifetimes are intervals of node positions in execution order: from the node that defines a value to the
last node that reads it (inclusive at both ends, so a layer's output never shares memory with its own
inputs and a kernel may write its output while still reading them). Sizes are taken at max_batch and
rounded up to `ALIGNMENT` bytes; a run at a smaller batch uses the leading part of each slot.

Placement is greedy by size with best fit (as in TFLite's arena planner): the largest activations are
placed first, each at the smallest gap between already placed activations whose lifetimes overlap its own,
or after them. The arena size is the plan's `peak_activation_bytes`.

Not every activation takes a slot: a tactic that allocates its own output (a cuDNN convolution) or
returns a view of its input (a reshape on CUDA) says so (`writes_arena = False`), and the builder passes
those values as `unplanned`. A view keeps the memory it looks at alive, so each `aliases` entry (view ->
the value it views) extends the viewed value's lifetime over the view's uses.

With several streams (streams.py) node order is no longer execution order: two layers of one section on
different streams may run at the same time. So a value a side stream defines or reads inside a section counts as
live over the whole section; every other pair of accesses still runs in node order (streams.py says why), and
the intervals above stay sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, Mapping

from ..ir import Graph
from .streams import StreamSchedule
from .tactics.registry import get_tactic

ALIGNMENT = 256


@dataclass(frozen=True)
class Slot:
    offset: int
    size: int  # bytes at max_batch, rounded up to the alignment

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class MemoryPlan:
    arena_bytes: int
    alignment: int
    slots: Mapping[str, Slot]  # value name -> slot

    def to_json(self) -> dict[str, Any]:
        return {"arena_bytes": self.arena_bytes, "alignment": self.alignment,
                "slots": {name: [s.offset, s.size] for name, s in self.slots.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "MemoryPlan":
        return cls(int(doc["arena_bytes"]), int(doc["alignment"]),
                   {name: Slot(int(o), int(s)) for name, (o, s) in doc["slots"].items()})


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def planned_values(graph: Graph, unplanned: AbstractSet[str] = frozenset()) -> list:
    """The values that live in the arena: node outputs that are not graph outputs (nor `unplanned`),
    in definition order."""
    outputs = {id(v) for v in graph.outputs}
    return [v for node in graph.nodes for v in node.outputs if id(v) not in outputs and v.name not in unplanned]


def lifetimes(graph: Graph, unplanned: AbstractSet[str] = frozenset(), aliases: Mapping[str, str] | None = None,
              schedule: StreamSchedule | None = None) -> dict[str, tuple[int, int]]:
    """(first, last) node position of every planned value: where it is defined and where it (or a view of
    it, through `aliases`) is last read, widened to the whole section wherever `schedule` has a side stream
    touch it inside a multi-stream section."""
    aliases = aliases or {}
    span: dict[str, list[int]] = {}
    section_of = schedule.section_index() if schedule is not None else {}

    def root(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    for i, node in enumerate(graph.nodes):
        touched = set()
        for v in node.inputs:
            for name in {v.name, root(v.name)}:
                if name in span:
                    span[name][1] = max(span[name][1], i)  # the end may already be widened past i
                    touched.add(name)
        for v in node.outputs:
            span[v.name] = [i, i]
            touched.add(v.name)
        if i in section_of and schedule.streams[i] != 0:
            first, last = schedule.sections[section_of[i]]
            for name in touched:
                span[name] = [min(span[name][0], first), max(span[name][1], last)]
    return {v.name: tuple(span[v.name]) for v in planned_values(graph, unplanned)}


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def plan_memory(graph: Graph, env: Mapping[str, int], alignment: int = ALIGNMENT, *,
                unplanned: AbstractSet[str] = frozenset(), aliases: Mapping[str, str] | None = None,
                schedule: StreamSchedule | None = None) -> MemoryPlan:
    """Offsets for every planned value of `graph`, with symbols bound by `env` (the max_batch sizes), safe for
    the streams of `schedule` (None: one stream in node order)."""
    life = lifetimes(graph, unplanned, aliases, schedule)
    planned = planned_values(graph, unplanned)
    sizes = {v.name: align(v.type.nbytes(dict(env)), alignment) for v in planned}
    order = sorted(sizes, key=lambda name: (-sizes[name], life[name][0], name))
    placed: list[tuple[str, Slot]] = []
    for name in order:
        size = sizes[name]
        busy = sorted((s for other, s in placed if s.size and _overlap(life[name], life[other])),
                      key=lambda s: s.offset)
        best, best_gap, cursor = None, None, 0
        for s in busy:
            gap = s.offset - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, s.end)
        placed.append((name, Slot(cursor if best is None else best, size)))
    slots = dict(placed)
    arena = max((s.end for s in slots.values()), default=0)
    return MemoryPlan(arena, alignment, {v.name: slots[v.name] for v in planned})


def conflicts(plan: MemoryPlan, life: Mapping[str, tuple[int, int]]) -> list[tuple[str, str]]:
    """Pairs of values that are live at the same time and share bytes (a correct plan has none)."""
    names = sorted(plan.slots, key=lambda n: plan.slots[n].offset)
    found = []
    for i, a in enumerate(names):
        sa = plan.slots[a]
        for b in names[i + 1:]:
            sb = plan.slots[b]
            if sb.offset >= sa.end:
                break
            if sa.size and sb.size and _overlap(life[a], life[b]):
                found.append((a, b))
    return found


def arena_exemptions(graph: Graph, tactics: Mapping[str, str]) -> tuple[set[str], dict[str, str]]:
    """Values that take no arena slot (their tactic allocates them or returns a view) and, for views,
    the value each one looks at (so that value stays alive while the view is used)."""
    unplanned, aliases = set(), {}
    for node in graph.nodes:
        impl = get_tactic(node.op, tactics[node.name]).impl
        if getattr(impl, "writes_arena", True):
            continue
        for v in node.outputs:
            unplanned.add(v.name)
            if getattr(impl, "aliases_input", False) and node.inputs:
                aliases[v.name] = node.inputs[0].name
    return unplanned, aliases
