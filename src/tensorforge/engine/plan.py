"""Plan: an optimized region ready to run — graph, chosen tactics, weights, arena layout, and what it was
built for. Serialized as one safetensors blob (weights) whose metadata holds the JSON description; loading
never executes code from the file and refuses plans built for another device or library.

Layout of the metadata key "tensorforge.plan" (JSON):
  format, version        "tensorforge.plan", PLAN_FORMAT_VERSION
  fingerprint            device type/name/capability, torch, CUDA, cuDNN, tensorforge (see fingerprint.py)
  config                 the BuilderConfig (to_plan_json: no machine-local paths)
  max_batch | profile    the sizes the plan runs (plan.profile): `max_batch` n for the legacy dynamic batch
                         `Profile.batch(n)` (so such a plan's JSON is what it was before profiles), else `profile`,
                         the profile's JSON (ir/profile.py: {"symbol": [min, opt, max]})
  graph                  the optimized graph (ir.graph_to_json); its constants are the safetensors tensors
  tactics                layer name -> tactic name
  memory                 the arena plan (memory.MemoryPlan.to_json)
  counters               pass rewrite counts
  cache_key              the plan cache key it was stored under (None outside the cache), checked by the cache
  sha256                 digest of all of the above and every tensor (ir/digest.py): an edit or damage is
                         caught at load, before any field is used, not later as wrong numbers

The stream schedule is not stored: it is a pure function of the graph, the device type, `config.max_streams` and
the profile's opt (streams.py), recomputed when a plan loads. A plan whose arena is not safe for that schedule (the
builder fell back to one stream to fit max_workspace_size) runs on one stream.

A plan of another format version is refused, never read: a change of what a plan holds or means bumps
PLAN_FORMAT_VERSION (fingerprint.py) instead of teaching the loader older layouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import struct
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..ir import Graph, TensorType, graph_from_json, graph_to_json
from ..ir.digest import seal, unseal
from ..ir.execute import bind_symbols
from ..ir.profile import Profile
from ..ir.serialize import unshared_tensors
from ..ir.types import BATCH, is_monomial, monomial
from .config import MACHINE_LOCAL_OPTIONS, BuilderConfig
from .context import ExecutionContext, Program
from .cuda_graphs import DEFAULT_MAX_GRAPHS, GraphRunner
from .epilogue import QUANTIZED_LAYERS
from .errors import PlanCompatibilityError
from .fingerprint import PLAN_FORMAT_VERSION, Fingerprint, differences, fingerprint
from .memory import MemoryPlan, align, arena_exemptions, conflicts, lifetimes, planned_values, slot_bytes
from .precision import tf32_mode
from .streams import StreamSchedule, plan_streams, single_stream
from .tactics import BindContext, get_tactic
from .tactics.registry import Kernel, chosen_tactic

PLAN_FORMAT = "tensorforge.plan"
META_KEY = "tensorforge.plan"


@dataclass(frozen=True)
class LayerInfo:
    name: str
    op: str
    tactic: str
    precision: str  # the output's type; a quantized layer's: the 8-bit type it multiplies in
    macs: int  # at the profile's opt
    stream: int = 0  # 0: the caller's stream; 1..: the execution context's side streams (streams.py)


class Plan:
    """Made by `Builder.build` or `Plan.from_bytes`; run with `plan.run(*inputs)`."""

    # bound as normal tensors even when the first call builds under torch.inference_mode(): a kernel's buffers
    # (workspaces, packed weights) must stay writable by calls outside it (engine/context.py)
    @torch.inference_mode(False)
    def __init__(
        self,
        graph: Graph,
        tactics: Mapping[str, str],
        memory: MemoryPlan,
        *,
        config: BuilderConfig,
        profile: Profile,
        device: torch.device | str,
        counters: Mapping[str, int],
        built_for: Fingerprint,
        schedule: StreamSchedule,
    ) -> None:
        self.device = _normalize_device(device)
        self.config = config
        self.profile = profile
        self._ranges = profile.ranges
        self.memory = memory
        self.schedule = schedule
        self.fingerprint = dict(built_for)
        self.counters = dict(counters)
        self.tactics = dict(tactics)
        # the plan's weights live on its device, except those only tactics that pack their own copy read
        on_device = {id(v) for v in graph.outputs if v.data is not None}
        for node in graph.nodes:
            if not chosen_tactic(node.op, self.tactics[node.name]).packs_weights:
                on_device.update(id(v) for v in node.inputs if v.data is not None)
        for value in graph.constants.values():
            if value.data is not None:  # every constant has its tensor
                value.data = value.data.to(self.device) if id(value) in on_device else value.data.cpu()
        self.graph = graph
        self.input_types: list[TensorType] = [v.type for v in graph.inputs]
        self.output_types: list[TensorType] = [v.type for v in graph.outputs]
        env = profile.opt_env
        ctx = BindContext(self.device, config, profile)
        kernels: dict[str, Kernel] = {}
        self.layers: list[LayerInfo] = []
        for node, stream in zip(graph.nodes, schedule.streams):
            tactic = chosen_tactic(node.op, self.tactics[node.name])
            kernels[node.name] = tactic.bind(node, ctx)
            macs = node.opdef.count_macs([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs, env)
            precision = (node.inputs[0] if node.op in QUANTIZED_LAYERS else node.outputs[0]).type.dtype
            self.layers.append(LayerInfo(node.name, node.op, tactic.name, precision, macs, stream))
        self._program = Program(graph, kernels, self.tactics, memory, self.device, schedule)
        # the only state a run changes is its context's; `run` without one uses the calling thread's own, made at
        # that thread's first run and freed when the thread ends (or the plan goes): one arena per such thread
        self._per_thread = threading.local()
        self._bound_at: dict[str, tuple[str, int]] = {}  # symbol -> (input name, axis) where a run's size is read
        for v in graph.inputs:
            for axis, d in enumerate(v.type.shape):
                if is_monomial(d):
                    self._bound_at.setdefault(monomial(d, "a plan input")[0], (v.name, axis))

    @property
    def max_batch(self) -> int:
        """The largest batch the plan runs: the max of the profile's `batch` symbol, or 1 when the profile has
        none (a plan without the batch symbol runs the graph's own sizes, which is one batch however shaped)."""
        return self.profile.max_env.get(BATCH, 1)

    # -- running --------------------------------------------------------------------------------

    @property
    def peak_activation_bytes(self) -> int:
        return self.memory.arena_bytes

    @property
    def num_streams(self) -> int:
        """How many CUDA streams a run uses (1: every layer on the caller's stream)."""
        return self.schedule.num_streams

    def create_execution_context(self, max_graphs: int = DEFAULT_MAX_GRAPHS) -> ExecutionContext:
        """A context of its own (arena of `peak_activation_bytes`, side streams, CUDA graphs: at most `max_graphs`
        shapes captured, least recently used dropped) for a caller that manages it: one per thread or stream that
        runs this plan concurrently."""
        return ExecutionContext(self._program, max_graphs)

    def _thread_context(self) -> ExecutionContext:
        context = getattr(self._per_thread, "context", None)
        if context is None:
            context = self._per_thread.context = self.create_execution_context()
        return context

    @property
    def _graph_runner(self) -> GraphRunner | None:
        """The calling thread's CUDA-graph runner of this plan (None before its first graphed run): for tests."""
        context = getattr(self._per_thread, "context", None)
        return context.graph_runner if context is not None else None

    def run(
        self, *inputs: torch.Tensor, context: ExecutionContext | None = None, cuda_graph: bool | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Run on `inputs` (on `plan.device`, any sizes inside `plan.profile`); returns the outputs as a tuple.

        Safe to call from any number of threads at once: without a `context`, each thread runs in its own (made at
        its first call; one arena of `peak_activation_bytes` per thread that ran the plan). A `context` given
        serves one caller at a time.

        On CUDA the whole plan replays as one CUDA graph per input shape (`cuda_graph=False` runs it layer by
        layer, e.g. when a caller is itself capturing a graph; an explicit `context` is graphed only with
        `cuda_graph=True`). The graphs belong to the context. Either way independent branches run on the plan's
        streams (`num_streams`, streams.py) and are joined back to the caller's current stream before this
        returns."""
        env = bind_symbols(self.graph, inputs)
        for value, tensor in zip(self.graph.inputs, inputs):
            if tensor.device != self.device:
                raise ValueError(f"input {value.name!r} is on {tensor.device}, the plan runs on {self.device}")
        outside = {
            s: size
            for s, size in env.items()
            if s in self._ranges and not self._ranges[s][0] <= size <= self._ranges[s][2]
        }
        if outside:
            raise ValueError(self._outside_message(outside))
        with tf32_mode(self.config.tf32) if self.device.type == "cuda" else contextlib.nullcontext():
            return self._run(inputs, env, context, cuda_graph)

    def _run(
        self,
        inputs: Sequence[torch.Tensor],
        env: Mapping[str, int],
        context: ExecutionContext | None,
        cuda_graph: bool | None,
    ) -> tuple[torch.Tensor, ...]:
        graphed = self.device.type == "cuda" and (cuda_graph is True or (cuda_graph is None and context is None))
        if context is None:
            context = self._thread_context()
        elif context.program is not self._program:
            raise ValueError("this execution context was made by another plan")
        if graphed:
            return context.replay(inputs, functools.partial(bind_symbols, self.graph))  # the graph, not the plan
        return context.execute(inputs, env)

    __call__ = run

    def _outside_message(self, outside: Mapping[str, int]) -> str:
        """Why a run's sizes `outside` (symbol -> size, each outside its range) are refused, and what to do."""
        legacy = legacy_max_batch(self.profile)
        if legacy is not None:  # the batch-only plan's own words: which input, which dimension
            batch = outside[BATCH]
            name, axis = self._bound_at[BATCH]
            hint = (
                f"build with max_batch >= {batch}"
                if batch > legacy
                else "a plan runs batches of 1 or more (a module runs an empty batch through its reference ops)"
            )
            return (
                f"input {name!r}: batch size {batch} (dimension {axis}) is outside the plan's range 1..{legacy}; {hint}"
            )
        sizes = ", ".join(f"{s} = {size}" for s, size in sorted(outside.items()))
        read = "; ".join(
            f"{s} from input {self._bound_at[s][0]!r} dimension {self._bound_at[s][1]}"
            for s in sorted(outside)
            if s in self._bound_at
        )
        return (
            f"input sizes {sizes} are outside the plan's profile {self.profile.describe()} ({read}); build a plan "
            f"whose profile covers them (Profile.covering)"
        )

    # -- reports --------------------------------------------------------------------------------

    def describe(self) -> str:
        total = sum(layer.macs for layer in self.layers)
        legacy = legacy_max_batch(self.profile)
        sizes, at = (
            (f"max_batch {legacy}", f"batch {legacy}")
            if legacy is not None
            else (f"profile {self.profile.describe()}", "opt")
        )
        lines = [
            f"plan for {self.device} (built on {self.fingerprint.get('device_name')}), {sizes}: "
            f"{len(self.layers)} layers, {total / 1e9:.3f} GMACs at {at}",
            f"activation arena: {self.peak_activation_bytes} bytes ({self.peak_activation_bytes / 2**20:.2f} MiB), "
            f"{len(self.memory.slots)} activations",
            f"streams: {self.num_streams}"
            + (
                f" ({len(self.schedule.sections)} concurrent sections, {len(self.schedule.signals)} events)"
                if self.num_streams > 1
                else ""
            ),
            "passes: " + ", ".join(f"{name} {n}" for name, n in self.counters.items()),
            "inputs:  " + ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs),
            "outputs: " + ", ".join(f"{v.name}: {v.type}" for v in self.graph.outputs),
        ]
        w_name = max([len(layer.name) for layer in self.layers] + [5])
        w_op = max([len(layer.op) for layer in self.layers] + [2])
        w_tac = max([len(layer.tactic) for layer in self.layers] + [6])
        streams = self.num_streams > 1  # the stream column only where there is more than one
        lines.append(
            f"  {'layer':<{w_name}}  {'op':<{w_op}}  {'tactic':<{w_tac}}  {'precision':<9}  "
            + ("stream  " if streams else "")
            + "MACs"
        )
        for layer in self.layers:
            lines.append(
                f"  {layer.name:<{w_name}}  {layer.op:<{w_op}}  {layer.tactic:<{w_tac}}  "
                f"{layer.precision:<9}  " + (f"{layer.stream:<6}  " if streams else "") + f"{layer.macs}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Plan({self.graph.name!r}, {len(self.layers)} layers, device={self.device}, {self._sizes_repr()}, "
            f"arena={self.peak_activation_bytes} B)"
        )

    def _sizes_repr(self) -> str:
        legacy = legacy_max_batch(self.profile)
        return f"max_batch={legacy}" if legacy is not None else f"profile={self.profile.to_json()}"

    # -- serialization --------------------------------------------------------------------------

    def to_bytes(self, cache_key: str | None = None) -> bytes:
        """The plan as safetensors bytes; `cache_key` (the plan cache's key) is stored in it, so that the cache can
        check that an entry is the one its key names."""
        doc, tensors = graph_to_json(self.graph)
        payload = unshared_tensors(tensors)
        meta = {
            "format": PLAN_FORMAT,
            "version": PLAN_FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "config": self.config.to_plan_json(),
            **_sizes_json(self.profile),
            "graph": doc,
            "tactics": self.tactics,
            "memory": self.memory.to_json(),
            "counters": self.counters,
            "cache_key": cache_key,
        }
        seal(meta, payload)
        return save_tensors(payload, metadata={META_KEY: json.dumps(meta)})

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device | str = "cpu", cache_key: str | None = None) -> Plan:
        """The plan in `data`, on `device`; PlanCompatibilityError when it is not a plan, is corrupt, has another
        format version, was built for another device or library (the message lists each difference), or — given
        `cache_key` — was stored under another key than the one it was built for."""
        device = _normalize_device(device)
        meta = _read_metadata(data)
        if meta.get("format") != PLAN_FORMAT:
            raise PlanCompatibilityError(f"not a tensorforge plan (format {meta.get('format')!r})")
        if meta.get("version") != PLAN_FORMAT_VERSION:
            raise PlanCompatibilityError(
                f"plan format version {meta.get('version')}, this tensorforge reads version "
                f"{PLAN_FORMAT_VERSION}; rebuild the plan"
            )
        try:
            tensors = load_tensors(bytes(data))
        except Exception as exc:
            raise PlanCompatibilityError(f"corrupt plan: its weights cannot be read ({exc})") from exc
        if not unseal(meta, tensors):  # before any field is trusted
            raise PlanCompatibilityError(
                "corrupt plan: its contents do not match its sha256 digest (the file was "
                "changed or damaged after it was written)"
            )
        if cache_key is not None and meta.get("cache_key") != cache_key:
            raise PlanCompatibilityError(
                f"plan stored under cache key {cache_key}, but it was built for key "
                f"{meta.get('cache_key')} (a cache entry copied or renamed)"
            )
        try:
            here = fingerprint(device)
        except (RuntimeError, AssertionError) as exc:
            raise PlanCompatibilityError(f"cannot load a plan on {device}: {exc}") from exc
        built_for = meta.get("fingerprint")
        problems = differences(built_for if isinstance(built_for, dict) else {}, here)
        if problems:
            raise PlanCompatibilityError(
                "the plan does not fit this machine: " + "; ".join(problems) + ". Rebuild it here."
            )
        try:
            graph = graph_from_json(meta["graph"], tensors)
            graph.verify()
            memory = MemoryPlan.from_json(meta["memory"])
            config = _builder_config(meta["config"])
            profile = _profile_from_json(meta)
            tactics = dict(meta["tactics"])
            counters = {str(k): int(v) for k, v in meta["counters"].items()}
        except Exception as exc:
            raise PlanCompatibilityError(f"corrupt plan: {type(exc).__name__}: {exc}") from exc
        try:
            _check_layers(graph, tactics, device)
            _check_profile(graph, profile)
            _check_memory(graph, memory, profile, tactics)
            schedule = _schedule_for_arena(
                graph, memory, tactics, plan_streams(graph, device.type, config.max_streams, profile)
            )
            return cls(
                graph,
                tactics,
                memory,
                config=config,
                profile=profile,
                device=device,
                counters=counters,
                built_for=meta["fingerprint"],
                schedule=schedule,
            )
        except PlanCompatibilityError:
            raise
        except Exception as exc:
            raise PlanCompatibilityError(
                f"the plan's layers cannot be set up here ({type(exc).__name__}: {exc})"
            ) from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan to `path` atomically (a reader never sees a half-written file)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".plan-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_bytes())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Plan:
        with open(os.fspath(path), "rb") as f:
            return cls.from_bytes(f.read(), device=device)


def _normalize_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _header_length(data: bytes | bytearray | memoryview) -> int:
    if len(data) < 8:
        raise PlanCompatibilityError(f"not a tensorforge plan: {len(data)} bytes is too short to be one")
    n: int
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > len(data) - 8:
        raise PlanCompatibilityError("not a tensorforge plan, or a truncated one: the header is cut off")
    return n


def _read_metadata(data: object) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanCompatibilityError(f"a plan is bytes, got {type(data).__name__}")
    n = _header_length(data)
    try:
        header = json.loads(bytes(data[8 : 8 + n]))
    except (ValueError, RecursionError) as exc:  # a decode error, or an integer too long to convert
        raise PlanCompatibilityError(f"not a tensorforge plan: the header is not valid JSON ({exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not meta or META_KEY not in meta:
        raise PlanCompatibilityError(f"a safetensors file, but not a tensorforge plan (no {META_KEY!r} metadata)")
    try:
        doc = json.loads(meta[META_KEY])
    except (ValueError, RecursionError) as exc:
        raise PlanCompatibilityError(f"corrupt plan: its description is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise PlanCompatibilityError("corrupt plan: its description is not a JSON object")
    return doc


def _builder_config(doc: Any) -> BuilderConfig:
    """The build options a plan stores: every option but the machine-local ones, as `BuilderConfig.to_plan_json`
    wrote them (one missing is not a default to fill in: this version of the format always writes them all). A
    machine-local option a plan holds anyway (written before plans left them out) names a file of the machine that
    built it: it is dropped."""
    stored = {f.name for f in dataclasses.fields(BuilderConfig)} - MACHINE_LOCAL_OPTIONS
    missing = sorted(stored - set(doc))
    if missing:
        raise ValueError(f"the build options lack {missing}")
    return BuilderConfig.from_json({name: value for name, value in doc.items() if name not in MACHINE_LOCAL_OPTIONS})


def _check_layers(graph: Graph, tactics: Mapping[str, str], device: torch.device) -> None:
    missing = []
    for node in graph.nodes:
        name = tactics.get(node.name)
        t = get_tactic(node.op, name) if name else None
        if t is None:
            missing.append(f"layer {node.name!r} ({node.op}) uses tactic {name!r}, which this tensorforge lacks")
        elif device.type not in t.devices:
            missing.append(f"layer {node.name!r} ({node.op}) uses tactic {name!r}, which does not run on {device.type}")
    if missing:
        raise PlanCompatibilityError("the plan cannot run here: " + "; ".join(missing))


def _schedule_for_arena(
    graph: Graph, memory: MemoryPlan, tactics: Mapping[str, str], schedule: StreamSchedule
) -> StreamSchedule:
    """`schedule` when the arena plan keeps its concurrent layers apart, else one stream: where the streams' arena
    would not fit max_workspace_size the builder planned it for node order, and running it on several streams would
    be a race. An arena plan that lets two live values share bytes even in node order is refused: a file made
    otherwise than by the builder would compute with overwritten activations."""
    unplanned, aliases = arena_exemptions(graph, tactics)
    overlapping = conflicts(memory, lifetimes(graph, unplanned, aliases))
    if overlapping:
        a, b = overlapping[0]
        raise PlanCompatibilityError(
            f"the arena plan gives %{a} and %{b} the same bytes while both are live "
            f"({len(overlapping)} such pair(s)); rebuild the plan"
        )
    if schedule.num_streams == 1 or not conflicts(memory, lifetimes(graph, unplanned, aliases, schedule)):
        return schedule
    return single_stream(graph)


def legacy_max_batch(profile: Profile) -> int | None:
    """n when `profile` is the legacy dynamic batch `Profile.batch(n)`, else None."""
    return profile.max_env[BATCH] if profile.is_batch_only else None


def _sizes_json(profile: Profile) -> dict[str, Any]:
    """The plan JSON's entry for its profile: `max_batch` for `Profile.batch(n)` (what every plan held before
    profiles: such plans are written as they were), `profile` for any other."""
    legacy = legacy_max_batch(profile)
    return {"max_batch": legacy} if legacy is not None else {"profile": profile.to_json()}


def _profile_from_json(meta: Mapping[str, Any]) -> Profile:
    """The profile a plan's JSON holds (`_sizes_json`), validated: a ProfileError or ValueError names what is wrong."""
    if ("max_batch" in meta) == ("profile" in meta):
        raise ValueError("a plan holds exactly one of max_batch and profile")
    if "profile" in meta:
        return Profile.from_json(meta["profile"])
    max_batch = meta["max_batch"]
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch is {max_batch!r}, not a positive int")
    return Profile.batch(max_batch)


def _check_profile(graph: Graph, profile: Profile) -> None:
    """Every symbol of the graph's inputs has a range (a plan's arena and checks rely on it)."""
    missing = sorted({s for v in graph.inputs for s in v.type.symbols} - profile.symbols)
    if missing:
        raise PlanCompatibilityError(
            f"corrupt plan: its profile ({profile.describe()}) gives no range to symbol(s) {missing} of its inputs"
        )


def _check_memory(graph: Graph, memory: MemoryPlan, profile: Profile, tactics: Mapping[str, str]) -> None:
    if memory.arena_bytes < 0 or any(slot.offset < 0 or slot.size < 0 for slot in memory.slots.values()):
        raise PlanCompatibilityError("corrupt plan: the arena plan has a negative size or offset")
    if not 0 < memory.alignment <= 4096 or memory.alignment & (memory.alignment - 1):
        raise PlanCompatibilityError(
            f"corrupt plan: memory.alignment is {memory.alignment}, not a power of two up to 4096"
        )
    unplanned, _ = arena_exemptions(graph, tactics)
    planned = planned_values(graph, unplanned)
    need = {v.name: align(slot_bytes(v.type, profile), memory.alignment) for v in planned}
    for v in planned:
        slot = memory.slots.get(v.name)
        if slot is None or slot.size < need[v.name] or slot.end > memory.arena_bytes or slot.offset % memory.alignment:
            raise PlanCompatibilityError(f"corrupt plan: the arena plan has no valid slot for %{v.name}")
    extra = sorted(set(memory.slots) - {v.name for v in planned})
    if extra:
        raise PlanCompatibilityError(
            f"corrupt plan: the arena plan has a slot for %{extra[0]}, which is not an activation"
        )
    # the arena is allocated at load: no larger than every activation side by side (no reuse at all) implies
    bound = sum(need.values())
    if memory.arena_bytes > bound:
        legacy = legacy_max_batch(profile)
        at = f"max_batch {legacy}" if legacy is not None else f"the profile's largest sizes ({profile.describe()})"
        raise PlanCompatibilityError(
            f"corrupt plan: memory.arena_bytes is {memory.arena_bytes}, but its activations "
            f"need at most {bound} bytes at {at}"
        )
