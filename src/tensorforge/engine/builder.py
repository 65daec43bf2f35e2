"""Builder: region graph -> Plan. The one place the build steps are ordered:

1. check the region (it verifies; its only symbol is `batch`, bound to max_batch);
2. run the passes (`passes.PASSES`), then verify the optimized graph;
3. choose a tactic per layer (`timing.select_tactic`; every unsupported layer reported at once), the Triton
   candidates compiled in parallel first (`compile_ahead.py`);
4. spread independent branches over CUDA streams (`streams.plan_streams`; one stream on the CPU);
5. plan the activation arena at max_batch for that schedule and enforce `max_workspace_size` (when the streams
   make the arena too large, one stream it is);
6. make the Plan (bind kernels, move weights to the device).
"""

from __future__ import annotations

import contextlib

import torch

from ..ir import Graph, VerificationError
from ..ir.types import BATCH
from .compile_ahead import compile_ahead
from .config import BuilderConfig
from .errors import BuildError
from .fingerprint import fingerprint
from .memory import arena_exemptions, plan_memory
from .passes import PassContext, run_passes
from .plan import Plan, _normalize_device
from .precision import tf32_mode
from .streams import plan_streams, single_stream
from .tactics import BindContext, candidates
from .timing import TimingCache, needs_timing, select_tactic


class Builder:
    def __init__(self, config: BuilderConfig | None = None) -> None:
        self.config = config or BuilderConfig()

    def build(self, region: Graph, max_batch: int = 1, device: torch.device | str = "cpu") -> Plan:
        """An optimized plan of `region` for `device`, running any batch from 1 to `max_batch`."""
        config = self.config
        device = self._check_device(device)
        self._check_region(region, max_batch)

        ctx = PassContext(config=config, max_batch=max_batch)
        try:
            graph = run_passes(region, ctx)
            graph.verify()
        except VerificationError as exc:
            raise BuildError(
                f"internal error: the optimized graph of region {region.name!r} does not verify ({exc})"
            ) from exc

        with tf32_mode(config.tf32) if device.type == "cuda" else contextlib.nullcontext():
            tactics = self._choose_tactics(graph, device, max_batch)  # timed as they will run
        unplanned, aliases = arena_exemptions(graph, tactics)
        schedule = plan_streams(graph, device.type, config.max_streams, max_batch)
        memory = plan_memory(graph, {BATCH: max_batch}, unplanned=unplanned, aliases=aliases, schedule=schedule)
        if memory.arena_bytes > config.max_workspace_size and schedule.num_streams > 1:
            # concurrent branches keep their activations alive longer: on one stream the plan may still fit
            schedule = single_stream(graph)
            memory = plan_memory(graph, {BATCH: max_batch}, unplanned=unplanned, aliases=aliases)
        if memory.arena_bytes > config.max_workspace_size:
            raise BuildError(
                f"region {region.name!r} needs an activation arena of {memory.arena_bytes} bytes "
                f"({memory.arena_bytes / 2**20:.1f} MiB) at max_batch={max_batch}, but max_workspace_size allows "
                f"{config.max_workspace_size} bytes; raise max_workspace_size or lower max_batch"
            )
        return Plan(
            graph,
            tactics,
            memory,
            config=config,
            max_batch=max_batch,
            device=device,
            counters=ctx.counters,
            built_for=fingerprint(device),
            schedule=schedule,
        )

    @staticmethod
    def _check_device(requested: torch.device | str) -> torch.device:
        try:
            device = torch.device(requested)
        except (RuntimeError, TypeError) as exc:
            raise BuildError(f"unknown device {requested!r}: {exc}") from exc
        if device.type not in ("cpu", "cuda"):
            raise BuildError(f"the engine builds for cpu or cuda, not {device.type}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BuildError("device cuda was asked for, but this machine has no usable CUDA device")
        return _normalize_device(device)

    @staticmethod
    def _check_region(region: Graph, max_batch: int) -> None:
        if not isinstance(region, Graph):
            raise TypeError(f"Builder.build takes an ir.Graph, got {type(region).__name__}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise BuildError(f"max_batch must be a positive int, got {max_batch!r}")
        try:
            region.verify()
        except VerificationError as exc:
            raise BuildError(f"region {region.name!r} is not a valid graph: {exc}") from exc
        others = sorted({f"%{v.name} has symbol {s!r}" for v in region.inputs for s in v.type.symbols if s != BATCH})
        if others:
            raise BuildError(
                f"region {region.name!r}: the engine binds only the symbol {BATCH!r} (to max_batch), "
                f"but {', '.join(others)}"
            )

    def _choose_tactics(self, graph: Graph, device: torch.device, max_batch: int) -> dict[str, str]:
        config = self.config
        cache = TimingCache(config.timing_cache) if config.timing_cache else TimingCache()
        bind_ctx = BindContext(device, config, max_batch)
        device_name = fingerprint(device)["device_name"]
        chosen, problems = {}, []
        # the build device's own: tactics that need a compute capability are judged by this GPU's
        pool = [(node, *candidates(node, device, config)) for node in graph.nodes]
        compile_ahead(
            [(node, supported) for node, supported, _ in pool if needs_timing(supported, config)],
            bind_ctx,
            cache,
            device_name,
        )
        for node, supported, refused in pool:
            selection = select_tactic(node, supported, bind_ctx, cache, device_name)
            if selection is None:
                reasons = [f"{t.name}: {why}" for t, why in refused] or ["no tactic is registered for it"]
                problems.append(f"layer {node.name!r} ({node.op}) on {device.type}: " + "; ".join(reasons))
                continue
            chosen[node.name] = selection.tactic.name
        cache.save()
        if problems:
            raise BuildError(f"{len(problems)} layer(s) have no tactic that can run them:\n  " + "\n  ".join(problems))
        return chosen
