"""Runtime options: one `BuilderConfig` (how plans are built) and the runtime's own settings, and the one place where
environment variables override them.

Every entry point (`build`, `compile`, `convert`, `load`, the command line) makes its options here, so each builder
option reaches each of them and is validated once, by `BuilderConfig`. Keyword arguments name a field of either
object (`OPTION_NAMES`): `RuntimeOptions().replace(fp16=True, cache_dir="plans", multi_engine=1)`.

As in the TVM TensorRT integration, a few settings can be changed at deployment without touching code:

| variable | overrides | meaning |
|---|---|---|
| `TENSORFORGE_USE_FP16=1` | `fp16` | let the builder run layers in FP16 |
| `TENSORFORGE_CACHE_DIR=dir` | `cache_dir` | where built plans are cached on disk |
| `TENSORFORGE_MAX_WORKSPACE_SIZE=bytes` | `max_workspace_size` | the most activation memory a plan may use |
| `TENSORFORGE_MULTI_ENGINE=0\\|1` | `multi_engine` | 0: one plan per region (for the largest batch); 1: one per batch |

One more variable is read by the engine itself, because it changes how long a build takes but never what it
builds (so it is no option, and no part of a plan's cache key): `TENSORFORGE_COMPILE_THREADS=N`, the threads
that compile Triton candidates ahead of timing (`engine/compile_ahead.py`; 1: compile as the timing goes).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.config import BuilderConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class RuntimeOptions:
    """How a module builds its plans (`builder_config`) and runs them.

    - `cache_dir`: where built plans are cached on disk (None: in memory only).
    - `multi_engine`: 0 keeps one plan per region sized for the largest batch seen; 1 one plan per batch size.
    - `cuda_graph`: on CUDA, replay the whole module (or, failing that, each plan) as one CUDA graph.
    - `max_batch_size`: a larger batch is an error (torch2trt's contract); None: plans grow to fit.
    """

    builder_config: BuilderConfig = field(default_factory=BuilderConfig)
    cache_dir: str | None = None
    multi_engine: int = 0
    cuda_graph: bool = True
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.builder_config, BuilderConfig):
            raise TypeError(f"builder_config must be a BuilderConfig, got {type(self.builder_config).__name__}")
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise ValueError(f"cache_dir must be a path or None, got {self.cache_dir!r}")
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if type(self.multi_engine) is not int or self.multi_engine not in (0, 1):
            raise ValueError(
                f"multi_engine must be 0 (one plan for the largest batch) or 1 (one plan per batch), "
                f"got {self.multi_engine!r}"
            )
        if not isinstance(self.cuda_graph, bool):
            raise ValueError(f"cuda_graph must be a bool, got {self.cuda_graph!r}")
        if self.max_batch_size is not None and (type(self.max_batch_size) is not int or self.max_batch_size < 1):
            raise ValueError(f"max_batch_size must be None or a positive int, got {self.max_batch_size!r}")

    def replace(self, **changes: Any) -> RuntimeOptions:
        """These options with `changes`, each naming a field of RuntimeOptions or of its BuilderConfig (or
        `builder_config` itself, whose fields named alongside then change it). An unknown name is a TypeError, as
        an unknown keyword argument is."""
        unknown = sorted(set(changes) - OPTION_NAMES - {"builder_config"})
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(OPTION_NAMES))}"
            )
        config = changes.pop("builder_config", self.builder_config)
        build = {name: changes.pop(name) for name in list(changes) if name in BUILDER_FIELDS}
        return dataclasses.replace(self, builder_config=config.replace(**build) if build else config, **changes)

    def with_env(self, environ: Mapping[str, str] | None = None) -> RuntimeOptions:
        """These options, with every TENSORFORGE_* variable that is set taking precedence."""
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        if "TENSORFORGE_USE_FP16" in env:
            changes["fp16"] = _flag("TENSORFORGE_USE_FP16", env["TENSORFORGE_USE_FP16"])
        if env.get("TENSORFORGE_CACHE_DIR"):
            changes["cache_dir"] = os.path.expanduser(env["TENSORFORGE_CACHE_DIR"])  # as a shell would have
        if env.get("TENSORFORGE_MAX_WORKSPACE_SIZE"):
            changes["max_workspace_size"] = _integer(
                "TENSORFORGE_MAX_WORKSPACE_SIZE", env["TENSORFORGE_MAX_WORKSPACE_SIZE"]
            )
        if env.get("TENSORFORGE_MULTI_ENGINE"):
            changes["multi_engine"] = _integer("TENSORFORGE_MULTI_ENGINE", env["TENSORFORGE_MULTI_ENGINE"])
        return self.replace(**changes)

    def option(self, name: str) -> Any:
        """The option `name` (any of OPTION_NAMES), wherever it lives."""
        return getattr(self.builder_config if name in BUILDER_FIELDS else self, name)

    def saved(self) -> dict[str, Any]:
        """What a saved module records: how its plans are built and run (`SAVED_FIELDS`), nothing about the machine."""
        return {name: self.option(name) for name in SAVED_FIELDS}

    @classmethod
    def from_saved(
        cls,
        data: Mapping[str, Any],
        *,
        cache_dir: str | None = None,
        max_workspace_size: int | None = None,
        timing_cache: str | None = None,
    ) -> RuntimeOptions:
        """Options for a module read from a file: `SAVED_FIELDS` from `data`, each checked against its type (a
        ValueError names the field), and the machine's resources (`MACHINE_FIELDS`) from the caller — never from the
        file, which may hold them (they are ignored)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"options must be a JSON object, got {type(data).__name__}")
        values = {}
        for name, (wanted, optional) in _SAVED_KINDS.items():
            if name not in data:
                continue
            value = data[name]
            if type(value) is not wanted and not (optional and value is None):
                raise ValueError(
                    f"options.{name} must be {wanted.__name__}{' or null' if optional else ''}, got {value!r}"
                )
            values[name] = value
        resources: dict[str, Any] = {"cache_dir": cache_dir, "timing_cache": timing_cache}
        if max_workspace_size is not None:
            resources["max_workspace_size"] = max_workspace_size
        return cls().replace(**values, **resources)


BUILDER_FIELDS = frozenset(f.name for f in dataclasses.fields(BuilderConfig))
# every option by name: the builder's and the runtime's own (`builder_config` is the object that holds the former)
OPTION_NAMES = BUILDER_FIELDS | ({f.name for f in dataclasses.fields(RuntimeOptions)} - {"builder_config"})
# Options that belong to the machine a module runs on, never to a file: where plans are cached, how much memory a
# build may take, where build timings are kept. A saved module carries every other option (`SAVED_FIELDS`), so a
# new build option is saved, and decides the plans of a loaded module, unless it is named here.
MACHINE_FIELDS = frozenset({"cache_dir", "max_workspace_size", "timing_cache"})
SAVED_FIELDS = tuple(sorted(OPTION_NAMES - MACHINE_FIELDS))


def _json_kind(name: str, hint: Any) -> tuple[type, bool]:
    """(the JSON type a saved option has, whether it may be null), from its annotation."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (bool, int, str):
        raise TypeError(f"option {name!r} is saved with modules, but its type {hint} has no JSON check here")
    return kinds[0], len(kinds) != len(args)


_HINTS = {**typing.get_type_hints(BuilderConfig), **typing.get_type_hints(RuntimeOptions)}
_SAVED_KINDS = {name: _json_kind(name, _HINTS[name]) for name in SAVED_FIELDS}


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected 1 or 0")


def _integer(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer") from None
