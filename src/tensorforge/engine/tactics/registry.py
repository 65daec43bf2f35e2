"""The tactic registry: every implementation a layer can run with, keyed by (IR op, tactic name).

A tactic is a class registered with `@tactic(op, name=..., devices=(...), priority=..., <capabilities>)` that has

- `bind(node, ctx: BindContext) -> Kernel`: everything that can be decided at build time (layouts,
  pre-packed weights, kernel configurations), returning the callable the plan runs;
- optionally `supports(node, config) -> str | None`: None when it can run this node under these options, else why
  not (a sentence: the builder reports it).

A kernel is called as `kernel(inputs, outputs, env) -> sequence of tensors`: `inputs` are the layer's input
tensors, `outputs[i]` is the arena view where output i must end up (None for a plan output, which the kernel
allocates), `env` binds the symbols (`{"batch": 3}`). A kernel may write into `outputs[i]` and return it
(no copy), or return a new tensor, which the execution context copies into the view.

What the rest of the engine needs to know about a tactic is declared at registration, as keyword arguments of
`@tactic`, and kept as typed fields of its `Tactic` record (the class itself carries none of them: a class
attribute of one of these names, or a near miss of one, is an error at registration, so a stale or misspelt
declaration cannot silently mean the default):

- memory (memory.py): `writes_arena=False` for a kernel that allocates its output or returns a view (its output
  takes no arena slot); `aliases_input=True` for one whose output is a view of its first input; `runs_reference=True`
  for one that returns whatever the op's reference returns (for some ops and attributes a view of an input, which
  the memory planner works out). A kernel with neither of the last two returns tensors it allocated (or the arena
  view it was offered), never a view of an input: the memory planner relies on it.
- weights (plan.py): `packs_weights=True` for one that copies and lays out the constant inputs it needs at bind
  time (the plan then keeps those constants on the host only).
- layout (timing.py, compile_ahead.py): `input_memory_format=torch.channels_last` for one that receives its 4-d
  activations in that layout inside a plan, so that it is timed on them as it will run.
- compilation (compile_ahead.py): `compiles=True` for one whose first call compiles Triton kernels and launches
  nothing else: the builder makes that call for every such candidate from a pool of threads before timing.
- requirements, checked here before the tactic's own `supports`, each refusal a sentence: `requires_triton=True`
  (every `compiles` tactic requires it) and `min_capability=(major, minor)`, the oldest CUDA compute capability
  it runs on (compared as tuples; not checked where the device's capability is unknown: no GPU here).

`op="*"` registers a tactic for every op (the reference). Candidates of a node are its op's tactics and the
"*" tactics for its device, highest `priority` first; optimization level 0 takes the first supported one,
higher levels time them (see `timing.py`). `min_level=N` keeps a tactic out of builds below optimization level
N: the wider search that the top levels buy with build time. Registering the same (op, name) twice is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import torch

from ...ir.profile import Profile
from ...ir.types import Dim, bind_dim
from ..config import as_profile

if TYPE_CHECKING:
    from ...ir import Node, Value
    from ..config import BuilderConfig

ANY_OP = "*"
DEVICE_TYPES = ("cpu", "cuda")

# a kernel's arguments (the module docstring): the layer's inputs, the arena views its outputs go to (None: none
# offered), the symbols' values
Inputs = Sequence[torch.Tensor]
OutputViews = Sequence[torch.Tensor | None]
Env = Mapping[str, int]
Kernel = Callable[[Inputs, OutputViews, Env], Sequence[torch.Tensor]]
Capability = tuple[int, int]


@dataclass(frozen=True, init=False)
class BindContext:
    """What `bind` may use: the device the plan runs on, the build options, and the profile it is built for
    (an int n: `Profile.batch(n)`, as `Builder.build(max_batch=n)`).

    A bound kernel runs every size of the profile: it reads the sizes of a run from its inputs or from the `env` it
    is called with, never from `env` here, which is only where the builder times the candidates. A size a kernel
    must fix at bind time (a Triton block covering a normalized axis) has to be constant in the graph; the tactic's
    `supports` refuses a symbolic one."""

    device: torch.device
    config: BuilderConfig
    profile: Profile

    def __init__(self, device: torch.device, config: BuilderConfig, profile: Profile | int) -> None:
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "profile", as_profile(profile))

    @property
    def env(self) -> dict[str, int]:
        """The sizes candidates are timed at: the profile's opt."""
        return self.profile.opt_env


class TacticImpl(Protocol):
    """The class a tactic registers: `bind`, and optionally `supports(node, config) -> str | None`."""

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel: ...


SupportsFn = Callable[["Node", "BuilderConfig"], "str | None"]
T = TypeVar("T")


@dataclass(frozen=True)
class Tactic:
    """A registered tactic: its implementation class and everything declared about it (the module docstring)."""

    op: str
    name: str
    devices: tuple[str, ...]
    priority: int
    impl: type[TacticImpl]
    min_level: int = 0
    writes_arena: bool = True
    aliases_input: bool = False
    runs_reference: bool = False
    packs_weights: bool = False
    compiles: bool = False
    input_memory_format: torch.memory_format | None = None
    requires_triton: bool = False
    min_capability: Capability | None = None

    def supports(self, node: Node, config: BuilderConfig, capability: Capability | None = None) -> str | None:
        """None when this tactic can run `node` under `config` on a device of compute `capability` (None: unknown,
        or not a GPU), else why not: the registry's checks (level, requirements), then the class's own."""
        if config.optimization_level < self.min_level:
            return f"searched from optimization level {self.min_level} (this build: {config.optimization_level})"
        if self.requires_triton and importlib.util.find_spec("triton") is None:
            return "Triton is not installed"
        if self.min_capability is not None and capability is not None and tuple(capability) < self.min_capability:
            return (
                f"needs compute capability {_version(self.min_capability)} or newer; the device has "
                f"{_version(capability)}"
            )
        check: SupportsFn | None = getattr(self.impl, "supports", None)  # without it the tactic takes every node
        return None if check is None else check(node, config)

    def bind(self, node: Node, ctx: BindContext) -> Kernel:
        return self.impl.bind(node, ctx)

    def __str__(self) -> str:
        return f"{self.name} ({'any op' if self.op == ANY_OP else self.op}; {', '.join(self.devices)})"


# what `@tactic` declares: no implementation class may carry an attribute of one of these names
DECLARED = tuple(f.name for f in dataclasses.fields(Tactic) if f.name != "impl")
METHODS = ("bind", "supports")

_TACTICS: dict[tuple[str, str], Tactic] = {}


def tactic(
    op: str,
    *,
    name: str,
    devices: Sequence[str] = DEVICE_TYPES,
    priority: int = 0,
    min_level: int = 0,
    writes_arena: bool = True,
    aliases_input: bool = False,
    runs_reference: bool = False,
    packs_weights: bool = False,
    compiles: bool = False,
    input_memory_format: torch.memory_format | None = None,
    requires_triton: bool = False,
    min_capability: Capability | None = None,
) -> Callable[[type[T]], type[T]]:
    """Class decorator: register the decorated class as tactic `name` for IR op `op` (or "*": every op), with the
    capabilities and requirements the module docstring describes."""
    devices = tuple(devices)
    flags = {
        "writes_arena": writes_arena,
        "aliases_input": aliases_input,
        "runs_reference": runs_reference,
        "packs_weights": packs_weights,
        "compiles": compiles,
        "requires_triton": requires_triton,
    }
    problem = _declaration_problem(devices, flags, input_memory_format, min_capability)
    if problem:
        raise ValueError(f"tactic {name!r} for {op}: {problem}")

    def decorate(cls: type[T]) -> type[T]:
        problem = _class_problem(cls)
        if problem:
            raise TypeError(f"tactic {name!r} for {op}: {cls.__name__} {problem}")
        key = (op, name)
        if key in _TACTICS:
            raise ValueError(f"tactic {name!r} for {op} is already registered (by {_TACTICS[key].impl.__module__})")
        _TACTICS[key] = Tactic(
            op=op,
            name=name,
            devices=devices,
            priority=priority,
            min_level=min_level,
            impl=cast("type[TacticImpl]", cls),  # its bind was checked just now
            writes_arena=writes_arena,
            aliases_input=aliases_input,
            runs_reference=runs_reference,
            packs_weights=packs_weights,
            compiles=compiles,
            input_memory_format=input_memory_format,
            requires_triton=requires_triton,
            min_capability=min_capability,
        )
        return cls

    return decorate


def _declaration_problem(
    devices: tuple[str, ...], flags: Mapping[str, object], memory_format: object, capability: object
) -> str | None:
    """Why what a tactic declares does not make sense (alone or together), or None."""
    unknown = sorted(set(devices) - set(DEVICE_TYPES))
    if unknown:
        return f"unknown device type(s) {unknown}; known: {list(DEVICE_TYPES)}"
    for flag, value in flags.items():
        if not isinstance(value, bool):
            return f"{flag} must be a bool, got {value!r}"
    if flags["aliases_input"] and flags["runs_reference"]:
        return "aliases_input and runs_reference both say what its outputs view: declare one"
    if flags["compiles"] and not flags["requires_triton"]:
        return "compiles=True (its first call compiles Triton kernels) needs requires_triton=True"
    if memory_format is not None and not isinstance(memory_format, torch.memory_format):
        return f"input_memory_format must be a torch.memory_format or None, got {memory_format!r}"
    if capability is not None:
        if not (
            isinstance(capability, tuple)
            and len(capability) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in capability)
        ):
            return f"min_capability must be (major, minor), got {capability!r}"
        if devices != ("cuda",):
            return f"min_capability is a CUDA compute capability, but it runs on {list(devices)}"
    return None


def _class_problem(cls: type) -> str | None:
    """Why `cls` cannot be a tactic's implementation (no bind, or an attribute `@tactic` declares), or None."""
    if not callable(getattr(cls, "bind", None)):
        return "needs a bind(node, ctx) method"
    supports = getattr(cls, "supports", None)
    if supports is not None and not callable(supports):
        return f"has a supports attribute that is not a method ({supports!r})"
    own = {
        attr: value
        for klass in reversed(cls.__mro__[:-1])
        for attr, value in vars(klass).items()
        if not attr.startswith("__")
    }
    for attr in own:
        if attr in DECLARED:
            return f"has a class attribute {attr!r}; declare it at registration instead: @tactic(..., {attr}=...)"
    for attr, value in own.items():
        method = callable(value) or isinstance(value, (classmethod, staticmethod, property))
        meant = difflib.get_close_matches(attr, METHODS if method else DECLARED, n=1, cutoff=0.8)
        if meant and meant[0] not in own:
            where = f"the method is {meant[0]!r}" if method else f"@tactic(..., {meant[0]}=...) declares that"
            return f"has an attribute {attr!r}, close to {meant[0]!r}: a misspelling? ({where})"
    return None


def _version(capability: Sequence[int]) -> str:
    return ".".join(str(part) for part in capability)


def get_tactic(op: str, name: str) -> Tactic | None:
    """The tactic `name` that can run `op` (its own, or an any-op tactic), or None."""
    return _TACTICS.get((op, name)) or _TACTICS.get((ANY_OP, name))


def chosen_tactic(op: str, name: str) -> Tactic:
    """`get_tactic` for a name a build chose (or a loaded plan names, after `_check_layers`): it must exist."""
    found = get_tactic(op, name)
    if found is None:
        raise LookupError(f"no tactic {name!r} is registered for {op}")
    return found


def registered_tactics() -> list[Tactic]:
    return sorted(_TACTICS.values(), key=lambda t: (t.op, -t.priority, t.name))


def device_capability(device: torch.device | str) -> Capability | None:
    """The CUDA compute capability of `device` ("cuda" alone: the current one), or None when it is not a CUDA
    device or this machine has none (requirements on the capability are then not checked)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return (major, minor)


def candidates(
    node: Node, device: torch.device | str, config: BuilderConfig
) -> tuple[list[Tactic], list[tuple[Tactic, str]]]:
    """(supported candidates best first, [(tactic, why not)] for the refused ones) for `node` on `device` (a
    device, or a device type such as "cuda": then the current device of that type)."""
    device = torch.device(device)
    capability = device_capability(device)
    pool = [t for t in _TACTICS.values() if t.op in (node.op, ANY_OP) and device.type in t.devices]
    pool.sort(key=lambda t: (-t.priority, t.op == ANY_OP, t.name))
    supported: list[Tactic] = []
    refused: list[tuple[Tactic, str]] = []
    for t in pool:
        reason = t.supports(node, config, capability)
        if reason:
            refused.append((t, reason))
        else:
            supported.append(t)
    return supported, refused


def reference_kernel(node: Node, ctx: BindContext) -> Kernel:
    """A kernel that runs the node's op through its registered reference implementation (`OpDef.run`)."""
    opdef, attrs, device = node.opdef, node.attrs, ctx.device

    def run(inputs: Inputs, outputs: OutputViews, env: Env) -> Sequence[torch.Tensor]:
        return opdef.run(inputs, attrs, env, device)

    return run


def static_sizes(dims: Sequence[Dim]) -> tuple[int, ...]:
    """`dims` as ints: sizes a kernel fixes at bind time (a Triton block over a normalized axis). The tactic's
    `supports` must refuse a node where such a size is symbolic: a plan runs every size of its profile."""
    sizes = tuple(d for d in dims if isinstance(d, int))
    if len(sizes) != len(dims):
        raise ValueError(f"sizes {tuple(str(d) for d in dims)} are symbolic; the kernel fixes them at bind time")
    return sizes


def sizes_at(dims: Sequence[Dim]) -> Callable[[Env], tuple[int, ...]]:
    """`dims` at the sizes of a run (`env`): what a kernel launches over (a convolution's or pool's output
    side), bound per call where it is symbolic, so that one plan runs every size of its profile."""
    fixed = tuple(d for d in dims if isinstance(d, int))
    if len(fixed) == len(dims):
        return lambda env: fixed
    return lambda env: tuple(bind_dim(d, env) for d in dims)


def constant_on(value: Value, device: torch.device) -> torch.Tensor:
    """The tensor of `value`, a constant input, on `device`: the weights a tactic packs at bind time (its
    `supports` refused layers whose weights are computed in the plan)."""
    if value.data is None:
        raise ValueError(f"%{value.name} is not a constant: its tensor is known only when the plan runs")
    return value.data.to(device)
