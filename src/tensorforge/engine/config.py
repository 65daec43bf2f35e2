"""BuilderConfig: the options of one build, with TensorRT's names and meanings.

A small frozen dataclass (hashable, so the runtime can key caches on it), validated here and nowhere else. The
runtime's options hold one (`runtime.options.RuntimeOptions.builder_config`), so every entry point passes each
builder option through; environment variables never reach it directly: the runtime overrides fields in one place
(`RuntimeOptions.with_env`) before building.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ir.profile import Profile

# Options that name a file of the machine that builds rather than say how a plan is built: a plan, which may be
# copied to another machine, never stores them (`to_plan_json`), and loads without them.
MACHINE_LOCAL_OPTIONS = frozenset({"timing_cache"})


@dataclass(frozen=True)
class BuilderConfig:
    """Options of `Builder.build`.

    - `fp16` / `bf16`: the builder *may* run layers in that precision (TensorRT's meaning): the
      `assign_precision` pass runs every precision-safe layer (conv, dense, matmul, attention, activations,
      elementwise and data movement) in it with its weights converted at build time, keeps sensitive layers
      (softmax, norms, reductions, exp/log/power: `passes.assign_precision.SENSITIVE_OPS`) in float32, and keeps
      the region's input and output types. With both set, float16 is used (more mantissa, same speed).
    - `tf32`: float32 matrix products and convolutions may use TF32 on GPUs that have it; False makes them
      full IEEE float32 (`engine.precision.tf32_mode`).
    - `strict_types`: the requested precision is a requirement, not a permission: with fp16/bf16 every float
      layer runs in it, sensitive ones included (only the region's I/O types stay). Without fp16/bf16 it
      changes nothing.
    - `max_workspace_size`: bytes the activation arena may take; a plan that needs more is a BuildError.
    - `optimization_level`: 0 takes the first supported tactic of each layer; higher levels time the
      candidates on the real shapes and keep the fastest (only where a layer has more than one), with more
      timing runs per candidate as the level rises. Levels 4 and 5 also search the tactics registered with
      `min_level=4` (the wide and the persistent TMA Triton GEMM tiles): each is a Triton compile and a timing
      per layer shape, for gains that are rare on the benchmark models. The default is 3.
    - `timing_cache`: path of a JSON timing cache that builds read and extend, or None.
    - `max_streams`: on CUDA, the most streams a plan may spread independent branches over (`engine/streams.py`);
      1 runs every layer on the caller's stream. CPU plans always run on one.
    """

    fp16: bool = False
    bf16: bool = False
    tf32: bool = True
    strict_types: bool = False
    max_workspace_size: int = 1 << 30
    optimization_level: int = 3
    timing_cache: str | None = None
    max_streams: int = 4

    def __post_init__(self) -> None:
        for name in ("fp16", "bf16", "tf32", "strict_types"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"BuilderConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if _not_int(self.max_workspace_size) or self.max_workspace_size < 0:
            raise ValueError(
                f"BuilderConfig.max_workspace_size must be a non-negative int (bytes), got {self.max_workspace_size!r}"
            )
        if _not_int(self.optimization_level) or not 0 <= self.optimization_level <= 5:
            raise ValueError(
                f"BuilderConfig.optimization_level must be an int from 0 to 5, got {self.optimization_level!r}"
            )
        if _not_int(self.max_streams) or self.max_streams < 1:
            raise ValueError(f"BuilderConfig.max_streams must be a positive int, got {self.max_streams!r}")
        if self.timing_cache is not None:
            if not isinstance(self.timing_cache, (str, os.PathLike)):
                raise ValueError(f"BuilderConfig.timing_cache must be a path or None, got {self.timing_cache!r}")
            object.__setattr__(self, "timing_cache", os.fspath(self.timing_cache))

    def to_json(self) -> dict[str, Any]:
        """Every option as a JSON-able dict (the runtime hashes it for its plan cache keys)."""
        return dataclasses.asdict(self)

    def to_plan_json(self) -> dict[str, Any]:
        """The options a plan stores: `to_json()` without the machine-local ones (`MACHINE_LOCAL_OPTIONS`)."""
        return {name: value for name, value in self.to_json().items() if name not in MACHINE_LOCAL_OPTIONS}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | str) -> BuilderConfig:
        """From `to_json()`'s dict (or its JSON text); unknown keys are an error, missing ones take defaults."""
        values: Mapping[str, Any] = json.loads(doc) if isinstance(doc, str) else doc
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"BuilderConfig has no option(s) {unknown}; it has {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> BuilderConfig:
        return dataclasses.replace(self, **changes)


def _not_int(value: object) -> bool:
    """True for anything but an int (True is no workspace size or level)."""
    return isinstance(value, bool) or not isinstance(value, int)


def as_profile(sizes: Profile | int) -> Profile:
    """The profile a plan is built for: a `Profile` as given, or an int n, the legacy dynamic batch
    `Profile.batch(n)` (any batch 1..n, tuned at n): what `Builder.build(max_batch=n)` means."""
    if isinstance(sizes, Profile):
        return sizes
    if _not_int(sizes) or sizes < 1:
        raise ValueError(f"a plan is built for a Profile or a max batch (a positive int), got {sizes!r}")
    return Profile.batch(sizes)
