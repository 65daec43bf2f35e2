"""Memory planning: every activation gets an offset in one arena, reused once the activation is dead.

What lives in the arena: every output of a node that is not a plan output. Plan inputs are never copied
(kernels read the caller's tensors), constants live with the plan, and plan outputs are allocated per run
and handed to the caller, who owns them — a later run never overwrites a result someone still holds.

Lifetimes are intervals of node positions in execution order: from the node that defines a value to the
last node that reads it (inclusive at both ends, so a layer's output never shares memory with its own
inputs and a kernel may write its output while still reading them). Sizes are taken at the largest a plan's
profile allows (`slot_bytes`: each dimension at its upper bound over the profile's ranges, which for a size like
`seq - batch`, not monotone in every symbol, is a sound bound rather than the size at max) and rounded up to
`ALIGNMENT` bytes; a run at smaller sizes uses the leading part of each slot.

Placement is greedy by size with best fit (as in TFLite's arena planner): the largest activations are
placed first, each at the smallest gap between already placed activations whose lifetimes overlap its own,
or after them. The arena size is the plan's `peak_activation_bytes`.

Not every activation takes a slot: a tactic that allocates its own output (a cuDNN convolution) or
returns a view of its input (a reshape on CUDA) says so (`writes_arena=False`), and the builder passes
those values as `unplanned`. A view keeps the memory it looks at alive, so each `aliases` entry (view ->
the values it may view) extends the viewed values' lifetimes over the view's uses.

A result that no arena slot receives is kept as the kernel returned it: an unplanned value, and every plan
output (the context offers no slot for those). Such a result may be a view: a tactic declares
`aliases_input` (a view of its first input), and one that returns what the op's reference returns
(`runs_reference`: the CPU reference, the CUDA `torch` tactic) gives a view wherever the reference does
(reshape, expand_dims, a slice, a cast to the same dtype), which `viewed_inputs` finds by running the reference
on meta tensors. A plan output is read once more after the last layer, when the context hands it to the
caller (cloning it there if it looks into the arena), so whatever it views stays live to the end of the run:
without that, a region returning `expand_dims(x)` handed its caller bytes a later layer had already
overwritten (Llama's position index, issue 12).

With several streams (streams.py) node order is no longer execution order: two layers of one section on
different streams may run at the same time. So a value a side stream defines or reads inside a section counts as
live over the whole section; every other pair of accesses still runs in node order (streams.py says why), and
the intervals above stay sound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import torch

from ..ir import Graph, Node, TensorType, Value
from ..ir.profile import Profile
from ..ir.symbolic import SymExpr
from .streams import StreamSchedule
from .tactics.registry import chosen_tactic

ALIGNMENT = 256

# view -> the value it may view, or several (an op whose reference the meta device cannot run may view any input)
Aliases = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class Slot:
    offset: int
    size: int  # bytes at the profile's largest sizes, rounded up to the alignment

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class MemoryPlan:
    arena_bytes: int
    alignment: int
    slots: Mapping[str, Slot]  # value name -> slot

    def to_json(self) -> dict[str, Any]:
        return {
            "arena_bytes": self.arena_bytes,
            "alignment": self.alignment,
            "slots": {name: [s.offset, s.size] for name, s in self.slots.items()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> MemoryPlan:
        return cls(
            int(doc["arena_bytes"]),
            int(doc["alignment"]),
            {name: Slot(int(o), int(s)) for name, (o, s) in doc["slots"].items()},
        )


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def slot_bytes(t: TensorType, sizes: Profile | Mapping[str, int]) -> int:
    """Bytes a value of type `t` takes at most: every dimension at its upper bound over the profile (a mapping:
    at exactly those sizes)."""
    if not isinstance(sizes, Profile):
        return t.nbytes(dict(sizes))
    return math.prod(max(sizes.bounds(d)[1], 0) for d in t.shape) * t.torch_dtype.itemsize


def planned_values(graph: Graph, unplanned: Set[str] = frozenset()) -> list[Value]:
    """The values that live in the arena: node outputs that are not graph outputs (nor `unplanned`),
    in definition order."""
    outputs = {id(v) for v in graph.outputs}
    return [v for node in graph.nodes for v in node.outputs if id(v) not in outputs and v.name not in unplanned]


def viewed(aliases: Aliases, name: str) -> set[str]:
    """Every value `name` may look at through `aliases`, view of a view included (not `name` itself)."""
    found: set[str] = set()
    todo = [name]
    while todo:
        targets = aliases.get(todo.pop(), ())
        for target in (targets,) if isinstance(targets, str) else targets:
            if target not in found:
                found.add(target)
                todo.append(target)
    return found


def lifetimes(
    graph: Graph,
    unplanned: Set[str] = frozenset(),
    aliases: Aliases | None = None,
    schedule: StreamSchedule | None = None,
) -> dict[str, tuple[int, int]]:
    """(first, last) node position of every planned value: where it is defined and where it (or a view of
    it, through `aliases`) is last read, widened to the whole section wherever `schedule` has a side stream
    touch it inside a multi-stream section. A value a plan output views is read at `len(graph.nodes)`, the
    hand-off after the last layer."""
    aliases = aliases or {}
    span: dict[str, list[int]] = {}
    section_of = schedule.section_index() if schedule is not None else {}

    for i, node in enumerate(graph.nodes):
        touched: set[str] = set()
        for v in node.inputs:
            for name in {v.name, *viewed(aliases, v.name)}:
                if name in span:
                    span[name][1] = max(span[name][1], i)  # the end may already be widened past i
                    touched.add(name)
        for v in node.outputs:
            span[v.name] = [i, i]
            touched.add(v.name)
        if schedule is not None and i in section_of and schedule.streams[i] != 0:
            first, last = schedule.sections[section_of[i]]
            for name in touched:
                span[name] = [min(span[name][0], first), max(span[name][1], last)]
    for v in graph.outputs:
        for name in viewed(aliases, v.name) & span.keys():
            span[name][1] = len(graph.nodes)
    return {v.name: (span[v.name][0], span[v.name][1]) for v in planned_values(graph, unplanned)}


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def plan_memory(
    graph: Graph,
    sizes: Profile | Mapping[str, int],
    alignment: int = ALIGNMENT,
    *,
    unplanned: Set[str] = frozenset(),
    aliases: Aliases | None = None,
    schedule: StreamSchedule | None = None,
) -> MemoryPlan:
    """Offsets for every planned value of `graph`, each sized for every run of the profile `sizes` (`slot_bytes`;
    a mapping binds the symbols to exactly those sizes), safe for the streams of `schedule` (None: one stream in
    node order)."""
    life = lifetimes(graph, unplanned, aliases, schedule)
    planned = planned_values(graph, unplanned)
    nbytes = {v.name: align(slot_bytes(v.type, sizes), alignment) for v in planned}
    order = sorted(nbytes, key=lambda name: (-nbytes[name], life[name][0], name))
    placed: list[tuple[str, Slot]] = []
    for name in order:
        size = nbytes[name]
        busy = sorted(
            (s for other, s in placed if s.size and _overlap(life[name], life[other])), key=lambda s: s.offset
        )
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
        for b in names[i + 1 :]:
            sb = plan.slots[b]
            if sb.offset >= sa.end:
                break
            if sa.size and sb.size and _overlap(life[a], life[b]):
                found.append((a, b))
    return found


def arena_exemptions(graph: Graph, tactics: Mapping[str, str]) -> tuple[set[str], dict[str, tuple[str, ...]]]:
    """Values that take no arena slot (their tactic allocates them or returns a view) and, for every result
    kept as its kernel returned it (those, and the plan outputs), the values it may be a view of (so they stay
    alive while it is used; see the module docstring)."""
    unplanned: set[str] = set()
    aliases: dict[str, tuple[str, ...]] = {}
    returned = {id(v) for v in graph.outputs}
    for node in graph.nodes:
        t = chosen_tactic(node.op, tactics[node.name])
        in_arena = t.writes_arena
        if not in_arena:
            unplanned.update(v.name for v in node.outputs)
        kept = [j for j, v in enumerate(node.outputs) if not in_arena or id(v) in returned]
        if not kept or not node.inputs:
            continue
        positions: list[tuple[int, ...]]  # per output: the inputs it may view
        if t.aliases_input:
            positions = [(0,)] * len(node.outputs)
        elif t.runs_reference:
            positions = viewed_inputs(node)
        else:
            continue  # a kernel of its own allocates what it returns
        for j in kept:
            names = tuple(dict.fromkeys(node.inputs[i].name for i in positions[j]))
            if names:
                aliases[node.outputs[j].name] = names
    return unplanned, aliases


def viewed_inputs(node: Node) -> list[tuple[int, ...]]:
    """Per output of `node`, the positions of the inputs its op's reference returns a view of (or returns as
    is), found by running the reference on meta tensors. The probe's inputs are contiguous, where a reshape
    or `contiguous()` is most likely to view, so it errs towards a view. An op the meta device cannot run
    (a plugin's kernel, a data-dependent op) may view any of its inputs."""
    anything = [tuple(range(len(node.inputs)))] * len(node.outputs)
    # every symbol the node names, its attributes' too (an arange may name one no input has)
    env = {s: 2 for s in _symbols_of(node)}
    try:
        tensors = [
            torch.empty(v.type.concrete_shape(env), dtype=v.type.torch_dtype, device="meta") for v in node.inputs
        ]
        with torch.no_grad():
            results = node.opdef.run(tensors, node.attrs, env, "meta")
    except Exception:  # noqa: BLE001 - not runnable on meta: assume the worst, never a wrong plan
        return anything
    if len(results) != len(node.outputs):
        return anything
    return [
        tuple(i for i, t in enumerate(tensors) if isinstance(r, torch.Tensor) and (r is t or r._base is t))
        for r in results
    ]


def _symbols_of(node: Node) -> set[str]:
    """The symbols `node`'s inputs, outputs and attributes name."""
    found = {s for v in (*node.inputs, *node.outputs) for s in v.type.symbols}
    todo: list[Any] = list(node.attrs.values())
    while todo:
        value = todo.pop()
        if isinstance(value, SymExpr):
            found |= value.free_symbols
        elif isinstance(value, (tuple, list)):
            todo.extend(value)
    return found
