"""The tactic registry: every implementation a layer can run with, keyed by (IR op, tactic name).

A tactic is a class registered with `@tactic(op, name=..., devices=(...), priority=...)` that has

- `supports(node, config) -> str | None`: None when it can run this node under these options, else why not;
- `bind(node, ctx: BindContext) -> Kernel`: everything that can be decided at build time (layouts,
  pre-packed weights, kernel configurations), returning the callable the plan runs.

A kernel is called as `kernel(inputs, outputs, env) -> sequence of tensors`: `inputs` are the layer's input
tensors, `outputs[i]` is the arena view where output i must end up (None for a plan output, which the kernel
allocates), `env` binds the symbols (`{"batch": 3}`). A kernel may write into `outputs[i]` and return it
(no copy), or return a new tensor, which the execution context copies into the view.

Optional class attributes describe memory: `writes_arena = False` for a kernel that allocates its output
or returns a view (its output takes no arena slot), `aliases_input = True` for one whose output is a view of
its first input, `runs_reference = True` for one that returns whatever the op's reference returns (for some
ops and attributes a view of an input, which the memory planner works out), and `packs_weights = True` for one
that copies and lays out the constant inputs it needs at bind time (the plan then keeps those constants on the
host only). A kernel with none of the first three returns tensors it allocated (or the arena view it was
offered), never a view of an input: the memory planner relies on it.
`compiles = True` marks a tactic whose first call compiles Triton kernels and launches nothing else: the
builder makes that call for every such candidate from a pool of threads before timing (`compile_ahead.py`).

`op="*"` registers a tactic for every op (the reference). Candidates of a node are its op's tactics and the
"*" tactics for its device, highest `priority` first; optimization level 0 takes the first supported one,
higher levels time them (see `timing.py`). `min_level=N` keeps a tactic out of builds below optimization level
N: the wider search that the top levels buy with build time. Registering the same (op, name) twice is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import torch

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

ANY_OP = "*"
DEVICE_TYPES = ("cpu", "cuda")

Kernel = Callable[[Sequence[torch.Tensor], Sequence[Optional[torch.Tensor]], Mapping[str, int]], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class BindContext:
    """What `bind` may use: the device the plan runs on, the build options, and the batch it is sized for."""

    device: torch.device
    config: "BuilderConfig"
    max_batch: int

    @property
    def env(self) -> dict[str, int]:
        return {"batch": self.max_batch}


@dataclass(frozen=True)
class Tactic:
    op: str
    name: str
    devices: tuple[str, ...]
    priority: int
    impl: type
    min_level: int = 0

    def supports(self, node: "Node", config: "BuilderConfig") -> str | None:
        if config.optimization_level < self.min_level:
            return (f"searched from optimization level {self.min_level} "
                    f"(this build: {config.optimization_level})")
        check = getattr(self.impl, "supports", None)
        return None if check is None else check(node, config)

    def bind(self, node: "Node", ctx: BindContext) -> Kernel:
        return self.impl.bind(node, ctx)

    def __str__(self) -> str:
        return f"{self.name} ({'any op' if self.op == ANY_OP else self.op}; {', '.join(self.devices)})"


_TACTICS: dict[tuple[str, str], Tactic] = {}


def tactic(op: str, *, name: str, devices: Sequence[str] = DEVICE_TYPES, priority: int = 0,
           min_level: int = 0) -> Callable[[type], type]:
    """Class decorator: register the decorated class as tactic `name` for IR op `op` (or "*": every op)."""
    devices = tuple(devices)
    unknown = sorted(set(devices) - set(DEVICE_TYPES))
    if unknown:
        raise ValueError(f"tactic {name!r}: unknown device type(s) {unknown}; known: {list(DEVICE_TYPES)}")

    def decorate(cls: type) -> type:
        if not callable(getattr(cls, "bind", None)):
            raise TypeError(f"tactic {name!r} for {op}: {cls.__name__} needs a bind(node, ctx) method")
        key = (op, name)
        if key in _TACTICS:
            raise ValueError(f"tactic {name!r} for {op} is already registered (by {_TACTICS[key].impl.__module__})")
        _TACTICS[key] = Tactic(op=op, name=name, devices=devices, priority=priority, impl=cls, min_level=min_level)
        return cls

    return decorate


def get_tactic(op: str, name: str) -> Tactic | None:
    """The tactic `name` that can run `op` (its own, or an any-op tactic), or None."""
    return _TACTICS.get((op, name)) or _TACTICS.get((ANY_OP, name))


def registered_tactics() -> list[Tactic]:
    return sorted(_TACTICS.values(), key=lambda t: (t.op, -t.priority, t.name))


def candidates(node: "Node", device_type: str, config: "BuilderConfig") -> tuple[list[Tactic], list[tuple[Tactic, str]]]:
    """(supported candidates best first, [(tactic, why not)] for the refused ones) for `node` on `device_type`."""
    pool = [t for t in _TACTICS.values() if t.op in (node.op, ANY_OP) and device_type in t.devices]
    pool.sort(key=lambda t: (-t.priority, t.op == ANY_OP, t.name))
    supported, refused = [], []
    for t in pool:
        reason = t.supports(node, config)
        (refused.append((t, reason)) if reason else supported.append(t))
    return supported, refused


def reference_kernel(node: "Node", ctx: BindContext) -> Kernel:
    """A kernel that runs the node's op through its registered reference implementation (`OpDef.run`)."""
    opdef, attrs, device = node.opdef, node.attrs, ctx.device

    def run(inputs, outputs, env):
        return opdef.run(inputs, attrs, env, device)

    return run
