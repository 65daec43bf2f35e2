"""Builder: region graph -> Plan. The one place the build steps are ordered:

1. check the region (it verifies; the profile gives a range to every symbol of its inputs);
2. run the passes (`passes.PASSES`), then verify the optimized graph;
3. choose a tactic per layer (`timing.select_tactic`, timed at the profile's opt; every unsupported layer reported
   at once), the Triton candidates compiled in parallel first (`compile_ahead.py`);
4. spread independent branches over CUDA streams (`streams.plan_streams`; one stream on the CPU);
5. plan the activation arena for that schedule, every slot sized for the profile's largest sizes, and enforce
   `max_workspace_size` (when the streams make the arena too large, one stream it is);
6. make the Plan (bind kernels, move weights to the device).

A plan is built for a `Profile` (ir/profile.py): per symbol a range (min, opt, max). It runs every size inside
the profile without a rebuild; `max_batch=n` is the legacy dynamic batch, `Profile.batch(n)`.
"""

from __future__ import annotations

import contextlib

import torch

from ..ir import Graph, VerificationError
from ..ir.profile import Profile
from .compile_ahead import compile_ahead
from .config import BuilderConfig
from .errors import BuildError
from .fingerprint import fingerprint
from .memory import arena_exemptions, plan_memory
from .passes import PassContext, run_passes
from .plan import Plan, _normalize_device, legacy_max_batch
from .precision import tf32_mode
from .streams import plan_streams, single_stream
from .tactics import BindContext, candidates
from .timing import TimingCache, needs_timing, select_tactic


class Builder:
    def __init__(self, config: BuilderConfig | None = None) -> None:
        self.config = config or BuilderConfig()

    @torch.inference_mode(False)  # tensors made while building outlive the call: see Plan.__init__
    def build(
        self,
        region: Graph,
        max_batch: int | None = None,
        device: torch.device | str = "cpu",
        *,
        profile: Profile | None = None,
    ) -> Plan:
        """An optimized plan of `region` for `device`, running every size inside `profile` (its tactics timed at
        the profile's opt, its arena sized for the largest). `max_batch=n` is `profile=Profile.batch(n)`: any batch
        from 1 to n; give one or the other (neither: `Profile.batch(1)`)."""
        config = self.config
        device = self._check_device(device)
        profile = self._profile(max_batch, profile)
        self._check_region(region, profile)

        ctx = PassContext(config=config, profile=profile)
        try:
            graph = run_passes(region, ctx)
            graph.verify()
        except VerificationError as exc:
            raise BuildError(
                f"internal error: the optimized graph of region {region.name!r} does not verify ({exc})"
            ) from exc

        with tf32_mode(config.tf32) if device.type == "cuda" else contextlib.nullcontext():
            tactics = self._choose_tactics(graph, device, profile)  # timed as they will run
        unplanned, aliases = arena_exemptions(graph, tactics)
        schedule = plan_streams(graph, device.type, config.max_streams, profile)
        memory = plan_memory(graph, profile, unplanned=unplanned, aliases=aliases, schedule=schedule)
        if memory.arena_bytes > config.max_workspace_size and schedule.num_streams > 1:
            # concurrent branches keep their activations alive longer: on one stream the plan may still fit
            schedule = single_stream(graph)
            memory = plan_memory(graph, profile, unplanned=unplanned, aliases=aliases)
        if memory.arena_bytes > config.max_workspace_size:
            legacy = legacy_max_batch(profile)
            at, lower = (
                (f"max_batch={legacy}", "lower max_batch")
                if legacy is not None
                else (f"the profile's largest sizes ({profile.describe()})", "lower the profile's max sizes")
            )
            raise BuildError(
                f"region {region.name!r} needs an activation arena of {memory.arena_bytes} bytes "
                f"({memory.arena_bytes / 2**20:.1f} MiB) at {at}, but max_workspace_size allows "
                f"{config.max_workspace_size} bytes; raise max_workspace_size or {lower}"
            )
        return Plan(
            graph,
            tactics,
            memory,
            config=config,
            profile=profile,
            device=device,
            counters=ctx.counters,
            built_for=fingerprint(device),
            schedule=schedule,
        )

    @staticmethod
    def _profile(max_batch: int | None, profile: Profile | None) -> Profile:
        if profile is not None:
            if max_batch is not None:
                raise BuildError(
                    f"give max_batch or profile, not both (max_batch={max_batch!r} is profile=Profile.batch(n); put "
                    f"the batch's range into the profile instead)"
                )
            if not isinstance(profile, Profile):
                raise BuildError(f"profile must be an ir.Profile, got {type(profile).__name__}")
            return profile
        if max_batch is None:
            return Profile.batch(1)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise BuildError(f"max_batch must be a positive int, got {max_batch!r}")
        return Profile.batch(max_batch)

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
    def _check_region(region: Graph, profile: Profile) -> None:
        if not isinstance(region, Graph):
            raise TypeError(f"Builder.build takes an ir.Graph, got {type(region).__name__}")
        try:
            region.verify()
        except VerificationError as exc:
            raise BuildError(f"region {region.name!r} is not a valid graph: {exc}") from exc
        where: dict[str, str] = {}  # symbol without a range -> the first input that has it
        for v in region.inputs:
            for symbol in sorted(v.type.symbols - profile.symbols):
                where.setdefault(symbol, f"%{v.name}: {v.type}")
        if where:
            example = ", ".join(f"{s!r}: (min, opt, max)" for s in where)
            raise BuildError(
                f"region {region.name!r}: the profile ({profile.describe()}) gives no range to "
                + ", ".join(f"symbol {s!r} (input {w})" for s, w in where.items())
                + f"; pass profile=Profile({{{example}}}) with every symbol of the region's inputs"
            )

    def _choose_tactics(self, graph: Graph, device: torch.device, profile: Profile) -> dict[str, str]:
        config = self.config
        cache = TimingCache(config.timing_cache) if config.timing_cache else TimingCache()
        bind_ctx = BindContext(device, config, profile)
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
