"""The runtime module: a partitioned graph that runs like any `torch.nn.Module`.

Engine regions (`subgraph` nodes) run through plans, built at first use unless built ahead
(`build_all`), kept in memory and, with a cache directory, on disk. Everything else runs through
PyTorch (each op's reference implementation, opaque ops through the operator they name).

Dynamic sizes: each plan runs every size inside its optimization profile (`ir.Profile`: min / opt / max per
symbol). A region keeps its plans by profile; which one runs a call, and which profile a miss builds, is
runtime/profiles.py's rule. For a dynamic batch alone it is the TVM integration's: multi-engine mode 0 keeps one
plan per region sized for the largest batch seen so far (smaller batches run on it); mode 1 one plan per batch size.

Where the weights live: the fallback nodes' weights on the module's device (PyTorch runs them there); each
plan's own weights (batch norm folded, packed, in the build precision) on the device, held by the plan; the
regions' weights — the model's weights as converted — in host memory only. A region's weights are read
only to build a plan (another batch size, a cache miss, a saved plan that cannot run here), and a plan
runs on its own copy, so on the device they would only double the weight memory; for a model converted
while on the GPU they are the model's own tensors, which would stay alive after the model is deleted.

For the same reason a saved module holds each weight once: `save(path)` writes a region's weights only where the
region has no plan yet; `save(path, rebuildable=True)` keeps them for every region, so the plans can be rebuilt
where the saved ones cannot run (another GPU, another library version) or for a batch above theirs. A module
loaded without a region's weights stands a meta tensor (shape and dtype, no data) in for each, and runs that region
only on its saved plans: a plan it would have to build instead is an error that says how to keep the weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
import weakref
from typing import Self

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from safetensors.torch import save_file

from .. import ir
from ..engine import Builder, BuilderConfig, LayerError, Plan, PlanCompatibilityError
from ..engine.cuda_graphs import GraphRunner, capture_lock
from ..engine.fingerprint import fingerprint as device_fingerprint
from ..ir.digest import seal, unseal
from ..ir.execute import bind_symbols
from ..ir.serialize import decode_type, encode_type, unshared_tensors
from ..ir.types import BATCH, TensorType
from .cache import PlanCache, plan_family, plan_key, region_digest
from .context import CallerState, ModuleContext
from .options import RuntimeOptions, resolve_profiles
from .padding import plan_padding
from .profiles import covers, describe_all, fits, new_profile, region_env, region_symbols, restricted, tightest
from .user_frame import user_stacklevel

MODULE_FORMAT = "tensorforge.module"
MODULE_FORMAT_VERSION = 4  # 4: a plan entry names its profile; 3: options hold strict_types, weights left out
READABLE_VERSIONS = (3, 4)  # a version-3 file's plans are batch-only: each entry names its max_batch
_META_KEY = "tensorforge.module"
_PLAN_PREFIX = "__plans__/"


class ModuleFormatError(ValueError):
    pass


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Module(torch.nn.Module):
    """A compiled model: `module(*inputs)` runs it; `save(path)` writes one `.tforge` file."""

    def __init__(
        self, graph: ir.Graph | None = None, partition_config=None, device=None, options: RuntimeOptions | None = None
    ):
        super().__init__()
        self.graph: ir.Graph | None = None
        if graph is not None:
            self._setup(graph, partition_config, device, options or RuntimeOptions())

    def _setup(self, graph: ir.Graph, partition_config, device, options: RuntimeOptions) -> None:
        self.graph = graph
        self.partition_config = partition_config
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.options = options.with_env()
        self._cache = PlanCache(self.options.cache_dir)
        self._region_hashes: dict[str, str] = {}
        # region -> {profile: plan}. Each inner dict is replaced, never changed in place (under _build_lock), so a
        # call may read it without the lock and see either the old plans or the new ones, whole
        self._plans: dict[str, dict[ir.Profile, Plan]] = {name: {} for name in graph.subgraphs}
        self._symbols = {name: region_symbols(region) for name, region in graph.subgraphs.items()}
        declared = resolve_profiles(self.options, {v.name: v.type.shape for v in graph.inputs})
        # per region, the declared profiles that apply to it (those giving a range to each of its symbols)
        self._declared: dict[str, tuple[ir.Profile, ...]] = {
            name: tuple(dict.fromkeys(p for p in (restricted(d, syms) for d in declared) if p is not None))
            for name, syms in self._symbols.items()
        }
        self._build_lock = threading.Lock()
        self._generation = 0  # bumped when a plan is replaced (mode 0): callers then drop graphs captured on the old
        self._callers = threading.local()  # .state: the calling thread's CallerState (runtime/context.py)
        self._callees = [n.attrs["callee"] for n in graph.nodes if n.op == "subgraph"]
        self._constants = {name: v.data.to(self.device) for name, v in graph.constants.items() if v.data is not None}
        self._weightless: frozenset[str] = frozenset()  # regions loaded without their weights: they run saved plans
        self._padding = (
            plan_padding(graph, self.options.pad_to_multiple, self.options.pad_values or {})
            if self.options.pad_to_multiple
            else None
        )
        _region_weights_to_host(graph)

    # -- building --------------------------------------------------------------------------------

    @property
    def builder_config(self) -> BuilderConfig:
        """How this module builds its plans (`options.builder_config`)."""
        return self.options.builder_config

    @property
    def regions(self) -> dict[str, ir.Graph]:
        return self._require_graph().subgraphs

    def plans(self) -> dict[str, list[Plan]]:
        """The plans built so far, per region (several in multi-engine mode 1)."""
        return {name: list(by_profile.values()) for name, by_profile in self._plans.items()}

    def build_all(self, batch_size: int = 1) -> Self:
        """Build (or fetch from the cache) every region's plans now, not at first run: one per declared profile
        (`profiles=`) where there are any, else for batches up to `batch_size`. A region with sizes other than the
        batch and no declared profile builds at its first run, when its sizes are known."""
        for name in self.regions:
            self.build_region(name, batch_size)
        return self

    def build_region(self, name: str, batch_size: int = 1) -> None:
        """`build_all` for one region (a progress bar can follow a build region by region)."""
        if self._declared[name]:
            for profile in self._declared[name]:
                self._plan_for_profile(name, profile)
        elif self._symbols[name] <= {BATCH}:
            self._plan_for(name, {BATCH: batch_size})

    def _plan_for(self, name: str, env: dict[str, int]) -> Plan:
        """The plan region `name` runs the sizes `env` on (the module's symbols bound by a call's inputs), built
        (once, whichever threads ask at the same time) if there is none yet. A plan that exists is found without
        taking a lock."""
        sizes = region_env(env, self._symbols[name])
        plan = self._built_plan(name, sizes)
        if plan is None:
            with self._building():
                plan = self._built_plan(name, sizes)  # another thread may have built it while this one waited
                if plan is None:
                    plan = self._build_plan(name, self._profile_to_build(name, sizes))
        return plan

    def _plan_for_profile(self, name: str, profile: ir.Profile) -> Plan:
        plan = self._plans[name].get(profile)
        if plan is None:
            with self._building():
                plan = self._plans[name].get(profile) or self._build_plan(name, profile)
        return plan

    def _building(self) -> contextlib.AbstractContextManager:
        """The build lock, and on CUDA the capture lock: no other thread captures a graph while a build runs (a
        build synchronizes the device, empties caches and captures its own timing graphs, which a capture in
        progress would not survive). A capture never waits for this module's build lock: its plans are built before
        it starts, see _forward."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._build_lock)
        if self.device.type == "cuda":
            stack.enter_context(capture_lock())
        return stack

    def _built_plan(self, name: str, sizes: dict[str, int]) -> Plan | None:
        built = self._plans[name]  # one read: a dict nobody changes (see _setup)
        fitting = [p for p in built if fits(p, sizes)]
        if self.options.multi_engine == 1 and name not in self._weightless:
            want = self._declared_for(name, sizes) or new_profile(sizes, (), 1, {})
            return built.get(want)
        # mode 1 without the weights to build this size's own plan: the tightest saved plan that covers it runs it
        best = tightest(fitting)
        return built[best] if best is not None else None

    def _declared_for(self, name: str, sizes: dict[str, int]) -> ir.Profile | None:
        return next((p for p in self._declared[name] if fits(p, sizes)), None)

    def _profile_to_build(self, name: str, sizes: dict[str, int]) -> ir.Profile:
        """The profile a miss of `sizes` builds (runtime/profiles.py's rule); under _build_lock."""
        declared = self._declared_for(name, sizes)
        if declared is not None:
            return declared
        known = [*self._declared[name], *self._plans[name]]
        cached = self._cache.find_profile(self._plan_family(name), sizes) if self._cache.directory else None
        if cached is not None and (self.options.multi_engine == 0 or cached == new_profile(sizes, (), 1, {})):
            return cached
        ranges = self._require_graph().symbol_ranges
        profile = new_profile(sizes, list(self._plans[name]), self.options.multi_engine, ranges)
        batch_only = self._symbols[name] <= {BATCH} and not self._declared[name]
        if known and not batch_only:
            outside = ", ".join(f"{s} = {v}" for s, v in sizes.items())
            if not self.options.build_on_miss:
                raise ValueError(
                    f"region {name!r}: the input sizes {outside} are outside every profile it has "
                    f"({describe_all(known)}); declare a profile that covers them (profiles=[...], "
                    f"--min/opt/max-shapes) or let a miss build one (build_on_miss=True)"
                )
            warnings.warn(
                f"region {name!r}: the input sizes {outside} are outside every profile it has "
                f"({describe_all(known)}); building a plan for {profile.describe()} (build_on_miss=False makes "
                f"this an error; declare profiles=[...] to build ahead)",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        return profile

    def _plan_family(self, name: str) -> str:
        if name not in self._region_hashes:
            self._region_hashes[name] = region_digest(self.regions[name])
        return plan_family(self._region_hashes[name], self.builder_config.to_json(), device_fingerprint(self.device))

    def _build_plan(self, name: str, profile: ir.Profile) -> Plan:
        """Build (or fetch from the cache) the plan of `name` for `profile` and publish it; under _build_lock."""
        region = self.regions[name]
        if name in self._weightless:
            needed, saved = _sizes_phrase([profile], "batch"), _sizes_phrase(list(self._plans[name]))
            raise ValueError(
                f"region {name!r} needs a plan for {needed}, but this module was saved without the region's weights "
                f"(its saved plans are for {saved}), so none can be built here; save the model "
                f"with module.save(path, rebuildable=True) (tensorforge build --rebuildable) to keep them, or build "
                f"its plans for the largest sizes first (module.build_all, or profiles=[...])"
            )
        config = self.builder_config
        family = self._plan_family(name)
        key = plan_key(self._region_hashes[name], config.to_json(), profile, device_fingerprint(self.device))
        plan = self._cache.get_or_build(
            key,
            build=lambda: Builder(config).build(region, device=self.device, profile=profile),
            load=lambda data, key: _cached_plan(region, data, key, self.device),
            # batch-only plans are found by their key, as always; only other profiles need the index's containment
            family=None if profile.is_batch_only else (family, profile),
        )
        if self.options.multi_engine == 0 and profile not in self._declared[name]:
            # the wider plan replaces those it covers (a larger batch, a longer sequence)
            kept = {p: q for p, q in self._plans[name].items() if p in self._declared[name] or not covers(profile, p)}
            replaced = len(kept) < len(self._plans[name])
            self._plans[name] = {**kept, profile: plan}
            if replaced:
                # callers drop their graphs and contexts of the old plan at their next call (runtime/context.py);
                # one that is running it now keeps it until then. Bumped after the new plan is published, so a
                # caller that sees the new generation sees the new plan too
                self._generation += 1
        else:
            self._plans[name] = {**self._plans[name], profile: plan}
        return plan

    # -- running ---------------------------------------------------------------------------------

    def forward(self, *inputs: torch.Tensor):
        """Run the model. Safe from any number of threads at once: each calling thread runs in state of its own
        (runtime/context.py), made at its first call."""
        self._require_graph()
        state = getattr(self._callers, "state", None)
        if state is None:
            state = self._callers.state = CallerState(self._generation, self.options.cuda_graph_cache_size)
        return self._forward(inputs, state)

    def create_context(self) -> ModuleContext:
        """An execution context of this module for a caller that manages its own (one per worker, say):
        `context(*inputs)` runs the module in arenas and CUDA graphs of the context's own. `module(*inputs)` needs
        none: it gives each calling thread its own."""
        self._require_graph()
        return ModuleContext(self)

    @property
    def _graph_runner(self) -> GraphRunner | None:
        """The calling thread's whole-module CUDA-graph runner (None before its first graphed call): for tests."""
        state = getattr(getattr(self, "_callers", None), "state", None)
        return state.runner if state is not None else None

    @torch.no_grad()
    def _forward(self, inputs, state: CallerState):
        """One call, padded to the buckets of `pad_to_multiple` where asked (runtime/padding.py)."""
        if self._padding is not None:
            bind_symbols(self._require_graph(), inputs)  # wrong inputs are named at the sizes the caller gave
            outs = self._padding.run(lambda *xs: self._call(xs, state), inputs)
        else:
            outs = self._call(inputs, state)
        return outs[0] if len(outs) == 1 else outs

    def _call(self, inputs, state: CallerState) -> tuple[torch.Tensor, ...]:
        graph = self._require_graph()
        env = bind_symbols(graph, inputs)  # every input checked before anything runs
        for value, tensor in zip(graph.inputs, inputs):
            if tensor.device != self.device:
                raise ValueError(
                    f"input {value.name!r} is on {tensor.device}, but this module runs on "
                    f"{self.device}; move it with .to({str(self.device)!r})"
                )
        batch = env.get(BATCH)
        if batch is not None and self.options.max_batch_size is not None and batch > self.options.max_batch_size:
            raise ValueError(
                f"batch size {batch} is above this module's max_batch_size {self.options.max_batch_size} "
                f"(convert(max_batch_size=...)); convert again with a larger max_batch_size"
            )
        if batch == 0 and self._weightless:
            raise ValueError(
                f"a batch of 0 runs through the regions' reference ops, which need the weights this "
                f"module was saved without (regions {', '.join(sorted(self._weightless))}); save the "
                f"model with module.save(path, rebuildable=True) to keep them"
            )
        if batch == 0:  # as eager: empty outputs, computed by the graph's reference ops (no plan has a zero batch)
            return tuple(ir.execute(graph, *inputs))
        if state.generation != self._generation:
            state.renew(self._generation, [p for ps in self.plans().values() for p in ps], self.device)
        if self.device.type == "cuda" and self.options.cuda_graph:
            # the whole module — plans and the PyTorch ops between them — as one CUDA graph per input shape. Before
            # a capture, plans and this caller's contexts are made on the caller's stream: a build never runs while
            # the capture lock is held, and an arena allocated there is freed in order with the caller's work on it
            if state.runner is None or not state.runner.knows(inputs):
                for name in self._callees:
                    state.context_for(self._plan_for(name, env))
            if state.runner is None:
                module, caller = weakref.ref(self), weakref.ref(state)  # the state holds the runner: no cycle

                def run_module(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    owner, owner_state = module(), caller()
                    assert owner is not None and owner_state is not None  # both outlive the runner they hold
                    return owner._run(xs, bind_symbols(graph, xs), cuda_graph=False, state=owner_state)

                state.runner = GraphRunner(run_module, name="module", max_graphs=self.options.cuda_graph_cache_size)
            outs = state.runner(*inputs)
        else:
            # on CUDA without the module graph, each plan replays as its own graph in this caller's context
            outs = self._run(inputs, env, cuda_graph=self.device.type == "cuda", state=state)
        return tuple(outs)

    def _run(self, inputs, env: dict[str, int], cuda_graph: bool, state: CallerState) -> tuple[torch.Tensor, ...]:
        graph = self._require_graph()
        values: dict[int, torch.Tensor] = {id(v): t for v, t in zip(graph.inputs, inputs)}
        for name, v in graph.constants.items():
            values[id(v)] = self._constants[name]
        for node in graph.nodes:
            args = [values[id(v)] for v in node.inputs]
            if node.op == "subgraph":
                plan = self._plan_for(node.attrs["callee"], env)
                outs = plan.run(*args, context=state.context_for(plan), cuda_graph=cuda_graph)
            else:
                outs = _run_fallback(node, args, env, self.device)
            for v, t in zip(node.outputs, outs):
                values[id(v)] = t
        return tuple(values[id(v)] for v in graph.outputs)

    def _require_graph(self) -> ir.Graph:
        if self.graph is None:
            raise RuntimeError("this module is empty: load a saved module (tensorforge.load) or a state_dict first")
        return self.graph

    @property
    def report(self):
        """The partition report: what runs in the engine and why the rest does not."""
        return getattr(self.partition_config, "report", None)

    def extra_repr(self) -> str:
        if self.graph is None:
            return "empty"
        return (
            f"device={self.device}, regions={len(self.regions)}, "
            f"fallback_nodes={sum(1 for n in self.graph.nodes if n.op != 'subgraph')}, "
            f"fp16={self.builder_config.fp16}, multi_engine={self.options.multi_engine}"
        )

    # -- saving and loading -----------------------------------------------------------------------

    def _serialize(self, rebuildable: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        graph = self._require_graph()
        if rebuildable and self._weightless:
            raise ValueError(
                f"this module was loaded without the weights of regions "
                f"{', '.join(sorted(self._weightless))}, so it cannot be saved rebuildable; save it "
                f"rebuildable where it was compiled"
            )
        doc, tensors = ir.graph_to_json(graph)
        # each weight once: a region's own weights stay out of the file where its plans hold theirs (see the module
        # docstring); the file records their types, so the region still describes what its plans compute
        omitted = {}
        for name in graph.subgraphs:
            if name in self._weightless or (not rebuildable and self._plans[name]):
                for key in [k for k in tensors if k.startswith(f"{name}/")]:
                    omitted[key] = encode_type(TensorType.of(tensors.pop(key)))
        plans = []
        for name, by_profile in self._plans.items():
            for index, (profile, plan) in enumerate(by_profile.items()):
                key = f"{_PLAN_PREFIX}{name}/{index}"
                tensors[key] = torch.frombuffer(bytearray(plan.to_bytes()), dtype=torch.uint8)
                plans.append({"region": name, "profile": profile.to_json(), "tensor": key})
        config = self.partition_config.to_json() if self.partition_config is not None else None
        meta = {
            "format": MODULE_FORMAT,
            "version": MODULE_FORMAT_VERSION,
            "graph": doc,
            "partition_config": config,
            "options": self.options.saved(),
            "plans": plans,
            "omitted_weights": omitted,
        }
        tensors = unshared_tensors(tensors)
        seal(meta, tensors)
        return tensors, {_META_KEY: json.dumps(meta)}

    def save(self, path: str | os.PathLike, *, rebuildable: bool = False) -> None:
        """Write the module (graph, fallback ops and their weights, regions, built plans) to one `.tforge` file, each
        weight once: a region's weights only where it has no plan yet. `rebuildable=True` keeps every region's
        weights too (about twice the size), so plans can be rebuilt where the saved ones cannot run (another GPU or
        library version) or for a larger batch. No pickle."""
        tensors, metadata = self._serialize(rebuildable)
        save_file(tensors, os.fspath(path), metadata=metadata)

    def to_bytes(self, *, rebuildable: bool = False) -> bytes:
        """What `save` writes, as bytes (the state_dict holds them)."""
        tensors, metadata = self._serialize(rebuildable)
        return save_safetensors_bytes(tensors, metadata=metadata)

    def _restore(
        self,
        tensors: dict[str, torch.Tensor],
        metadata: dict[str, str],
        device,
        where: str,
        *,
        cache_dir: str | None = None,
        max_workspace_size: int | None = None,
        timing_cache: str | None = None,
    ) -> None:
        """Fill this module from a saved one. Everything is checked before it is used: the digest over the whole
        description and every tensor first, then each field as data; any problem is a ModuleFormatError that names
        it. The machine's resources (cache directory, workspace, timing cache) come from the arguments and the
        environment."""
        meta = _module_description(metadata, tensors, where)
        try:
            weights = {k: v for k, v in tensors.items() if not k.startswith(_PLAN_PREFIX)}
            stand_ins = _omitted_weights(meta["omitted_weights"], meta["graph"], weights, where)
            graph = ir.graph_from_json(meta["graph"], {**weights, **stand_ins})
            graph.verify()
            config = None
            if meta.get("partition_config") is not None:
                from ..partition import PartitionConfig

                config = PartitionConfig.from_json(meta["partition_config"])
            options = RuntimeOptions.from_saved(
                meta["options"], cache_dir=cache_dir, max_workspace_size=max_workspace_size, timing_cache=timing_cache
            )
            entries = [_plan_entry(entry, graph, tensors, where) for entry in meta["plans"]]
            weightless = frozenset(key.split("/", 1)[0] for key in stand_ins)
            unplanned = sorted(weightless - {region for region, _, _ in entries})
            if unplanned:
                raise ModuleFormatError(f"{where}: region(s) {', '.join(unplanned)} have neither weights nor a plan")
        except ModuleFormatError:
            raise
        except Exception as exc:
            raise ModuleFormatError(f"{where}: not a sound tensorforge module ({type(exc).__name__}: {exc})") from exc
        self._setup(graph, config, device, options)
        self._weightless = weightless
        for region, profile, blob in entries:
            try:
                plan = Plan.from_bytes(blob.numpy().tobytes(), device=self.device)
            except PlanCompatibilityError as exc:  # its bytes passed the module's digest: the region is sound
                if region in weightless:
                    raise PlanCompatibilityError(
                        f"{where}: the saved plan for region {region!r} cannot run here ({exc}), and the file holds "
                        f"no weights to rebuild it from: module.save(path) keeps only the plans. Save the model with "
                        f"module.save(path, rebuildable=True) (tensorforge build --rebuildable) where it was "
                        f"compiled, or compile it again on this machine"
                    ) from exc
                warnings.warn(
                    f"{where}: the saved plan for region {region!r} cannot run here ({exc}); "
                    f"it will be rebuilt from the saved region",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
                continue
            if plan.profile != profile or _boundary(plan.graph) != _boundary(graph.subgraphs[region]):
                raise ModuleFormatError(
                    f"{where}: the saved plan for region {region!r} ({plan.profile.describe()}, "
                    f"{_boundary(plan.graph)}) is not a plan of that region for {profile.describe()}"
                )
            self._plans[region] = {**self._plans[region], profile: plan}

    # torch2trt-style state_dict: the whole module as one uint8 tensor (safetensors bytes inside)
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.graph is not None:
            destination[prefix + "tforge"] = torch.frombuffer(bytearray(self.to_bytes()), dtype=torch.uint8)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "tforge"
        if key not in state_dict:
            missing_keys.append(key)
            return
        data = state_dict[key].cpu().numpy().tobytes()
        try:
            tensors = load_safetensors_bytes(data)
            metadata = _safetensors_metadata(data)
            device = getattr(self, "device", None) if self.graph is not None else None
            self._restore(tensors, metadata, device, "state_dict")
        except Exception as exc:  # noqa: BLE001  (torch's load_state_dict reports every error message together)
            error_msgs.append(f"{key}: {exc}")


def _sizes_phrase(profiles: list[ir.Profile], word: str = "max_batch") -> str:
    """`max_batch 2, 6` (or `batch 8`) for batch-only profiles, what a plan was for before any other size could vary;
    else each profile's ranges."""
    if profiles and all(p.is_batch_only for p in profiles):
        return f"{word} " + ", ".join(str(p.max_env[BATCH]) for p in profiles)
    return describe_all(profiles)


def _run_fallback(node: ir.Node, args: list, env: dict[str, int], device: torch.device) -> tuple:
    """A node left to PyTorch, its failure named with the node (as a plan's layers are, engine/context.py)."""
    try:
        return node.opdef.run(args, node.attrs, env, device)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        raise LayerError(f"fallback node {node.name!r} ({node.op}) failed: {type(exc).__name__}: {exc}") from exc


def _region_weights_to_host(graph: ir.Graph) -> None:
    """Move every region's constants to host memory, in place (see the module docstring for why). A tensor
    several regions share (tied weights) gets one host copy, so they still share it. The stand-ins of weights a
    file left out stay meta tensors."""
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (the original, kept alive; its copy)
    for region in graph.subgraphs.values():
        for value in region.constants.values():
            data = value.data
            if data is not None and data.device.type not in ("cpu", "meta"):
                if id(data) not in copies:
                    copies[id(data)] = (data, data.cpu())
                value.data = copies[id(data)][1]


def _module_description(metadata: dict[str, str], tensors: dict[str, torch.Tensor], where: str) -> dict:
    """The module's JSON description, after its format, version and digest are checked (ModuleFormatError)."""
    if not isinstance(metadata, dict) or _META_KEY not in metadata:
        raise ModuleFormatError(f"{where}: not a tensorforge module (no {_META_KEY!r} metadata)")
    try:
        meta = json.loads(metadata[_META_KEY])
    except (ValueError, RecursionError) as exc:
        raise ModuleFormatError(f"{where}: the module description is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise ModuleFormatError(f"{where}: the module description is not a JSON object")
    if meta.get("format") != MODULE_FORMAT or meta.get("version") not in READABLE_VERSIONS:
        raise ModuleFormatError(
            f"{where}: module format {meta.get('format')!r} v{meta.get('version')!r} is not "
            f"readable by this tensorforge (it reads {MODULE_FORMAT} v{MODULE_FORMAT_VERSION}): "
            f"compile and save the model again with this version"
        )
    if not unseal(meta, tensors):
        raise ModuleFormatError(
            f"{where}: the module's contents do not match its sha256 digest (the file was changed "
            f"or damaged after it was saved); nothing in it was used"
        )
    return meta


def _omitted_weights(
    omitted: object, graph_doc: object, weights: dict[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """Meta tensors (shape and dtype, no data) standing in for the region weights a file left out, each entry
    checked: a constant key of a region the graph has ("<region>/<constant>"), not one the file holds, and a
    static type."""
    if not isinstance(omitted, dict):
        raise ModuleFormatError(f"{where}: omitted_weights must be a JSON object, got {type(omitted).__name__}")
    regions = graph_doc.get("subgraphs") if isinstance(graph_doc, dict) else None
    stand_ins = {}
    for key, spec in omitted.items():
        region = key.split("/", 1)[0]
        if "/" not in key or not isinstance(regions, dict) or region not in regions or key in weights:
            raise ModuleFormatError(f"{where}: omitted_weights: {key!r} is not a left-out weight of a region")
        t = decode_type(spec)
        if not t.is_static:
            raise ModuleFormatError(f"{where}: omitted_weights: {key!r} has the symbolic type {t}")
        stand_ins[key] = torch.empty(t.concrete_shape(), dtype=t.torch_dtype, device="meta")
    return stand_ins


def _plan_entry(
    entry, graph: ir.Graph, tensors: dict[str, torch.Tensor], where: str
) -> tuple[str, ir.Profile, torch.Tensor]:
    """(region, profile, plan bytes) of one saved plan, each field checked."""
    region, key = entry["region"], entry["tensor"]
    if region not in graph.subgraphs:
        raise ModuleFormatError(f"{where}: plans: a saved plan names region {region!r}, which the graph does not have")
    if "profile" in entry:
        try:
            profile = ir.Profile.from_json(entry["profile"])
        except ir.ProfileError as exc:
            raise ModuleFormatError(
                f"{where}: plans: region {region!r} has a plan with a malformed profile: {exc}"
            ) from None
    else:  # version 3: batch-only plans
        max_batch = entry["max_batch"]
        if type(max_batch) is not int or max_batch < 1:
            raise ModuleFormatError(f"{where}: plans: region {region!r} has a plan for max_batch {max_batch!r}")
        profile = ir.Profile.batch(max_batch)
    blob = tensors.get(key) if isinstance(key, str) and key.startswith(_PLAN_PREFIX) else None
    if blob is None or blob.dtype != torch.uint8 or blob.dim() != 1:
        raise ModuleFormatError(
            f"{where}: plans: the plan of region {region!r} names tensor {key!r}, which is not a plan blob"
        )
    return region, profile, blob


def _cached_plan(region: ir.Graph, data: bytes, key: str, device: torch.device) -> Plan:
    """A plan-cache entry, refused (PlanCompatibilityError: the cache warns and rebuilds) unless it was built for
    `key` and takes and gives what `region` does."""
    plan = Plan.from_bytes(data, device=device, cache_key=key)
    if _boundary(plan.graph) != _boundary(region):
        raise PlanCompatibilityError(
            f"the cached plan takes and gives {_boundary(plan.graph)}, its region {_boundary(region)}"
        )
    return plan


def _boundary(graph: ir.Graph) -> tuple:
    """The types a region or its plan takes and gives: a saved plan must fit its region's."""
    return tuple(str(v.type) for v in graph.inputs), tuple(str(v.type) for v in graph.outputs)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The metadata of in-memory safetensors bytes (the header is JSON after an 8-byte length)."""
    if len(data) < 8:
        raise ModuleFormatError("truncated tensorforge module data")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError) as exc:
        raise ModuleFormatError(f"corrupt tensorforge module data ({type(exc).__name__}: {exc})") from None
    return header.get("__metadata__", {}) if isinstance(header, dict) else {}


class EngineModule(Module):
    """The torch2trt-style module returned by `tensorforge.convert`. `EngineModule()` is empty until
    `load_state_dict` fills it; its state_dict is the whole compiled model (tensors only, no code)."""


def load(
    path: str | os.PathLike,
    device=None,
    module_class: type[Module] = Module,
    *,
    cache_dir: str | None = None,
    max_workspace_size: int | None = None,
    timing_cache: str | None = None,
) -> Module:
    """Load a `.tforge` file written by `Module.save` into a working module on `device`. The file decides what the
    model is; the caller (and TENSORFORGE_* variables) decide where plans are cached, the workspace of a rebuild and
    the timing cache it reads."""
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ModuleFormatError(f"{path}: not a readable tensorforge module ({exc})") from exc
    module = module_class()
    module._restore(
        tensors,
        metadata,
        device,
        path,
        cache_dir=cache_dir,
        max_workspace_size=max_workspace_size,
        timing_cache=timing_cache,
    )
    return module
