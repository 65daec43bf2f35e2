"""Runtime options and the one place where environment variables override them.

As in the TVM TensorRT integration, a few settings can be changed at deployment without touching code:

| variable | overrides | meaning |
|---|---|---|
| `TENSORFORGE_USE_FP16=1` | `fp16` | let the builder run layers in FP16 |
| `TENSORFORGE_CACHE_DIR=dir` | `cache_dir` | where built plans are cached on disk |
| `TENSORFORGE_MAX_WORKSPACE_SIZE=bytes` | `max_workspace_size` | the most activation memory a plan may use |
| `TENSORFORGE_MULTI_ENGINE=0\\|1` | `multi_engine` | 0: one plan per region sized for the largest batch seen; 1: one plan per batch size |

One more variable is read by the engine itself, because it changes how long a build takes but never what it
builds (so it is no option, and no part of a plan's cache key): `TENSORFORGE_COMPILE_THREADS=N`, the threads
that compile Triton candidates ahead of timing (`engine/compile_ahead.py`; 1: compile as the timing goes).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class RuntimeOptions:
    fp16: bool = False
    bf16: bool = False
    tf32: bool = True
    cache_dir: str | None = None
    max_workspace_size: int = 1 << 30
    multi_engine: int = 0
    optimization_level: int = 3
    cuda_graph: bool = True  # on CUDA, replay the whole module (or, failing that, each plan) as one graph
    max_streams: int = 4  # CUDA streams a plan may run independent branches on (1: one stream)
    max_batch_size: int | None = None  # a larger batch is an error (torch2trt's contract); None: plans grow to fit

    def __post_init__(self):
        if self.multi_engine not in (0, 1):
            raise ValueError(f"multi_engine must be 0 (one plan for the largest batch) or 1 (one plan per batch), "
                             f"got {self.multi_engine!r}")
        if isinstance(self.max_streams, bool) or not isinstance(self.max_streams, int) or self.max_streams < 1:
            raise ValueError(f"max_streams must be a positive int, got {self.max_streams!r}")
        if self.max_batch_size is not None and (isinstance(self.max_batch_size, bool) or self.max_batch_size < 1):
            raise ValueError(f"max_batch_size must be None or a positive int, got {self.max_batch_size!r}")
        if self.max_workspace_size <= 0:
            raise ValueError(f"max_workspace_size must be positive, got {self.max_workspace_size}")

    def with_env(self, environ: Mapping[str, str] | None = None) -> "RuntimeOptions":
        """These options, with every TENSORFORGE_* variable that is set taking precedence."""
        env = os.environ if environ is None else environ
        changes: dict = {}
        if "TENSORFORGE_USE_FP16" in env:
            changes["fp16"] = _flag("TENSORFORGE_USE_FP16", env["TENSORFORGE_USE_FP16"])
        if env.get("TENSORFORGE_CACHE_DIR"):
            changes["cache_dir"] = os.path.expanduser(env["TENSORFORGE_CACHE_DIR"])  # as a shell would have
        if env.get("TENSORFORGE_MAX_WORKSPACE_SIZE"):
            changes["max_workspace_size"] = _integer("TENSORFORGE_MAX_WORKSPACE_SIZE", env["TENSORFORGE_MAX_WORKSPACE_SIZE"])
        if env.get("TENSORFORGE_MULTI_ENGINE"):
            changes["multi_engine"] = _integer("TENSORFORGE_MULTI_ENGINE", env["TENSORFORGE_MULTI_ENGINE"])
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "RuntimeOptions":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def saved(self) -> dict:
        """What a saved module records: how its plans are built and run (`SAVED_FIELDS`), nothing about the machine."""
        return {name: getattr(self, name) for name in SAVED_FIELDS}

    @classmethod
    def from_saved(cls, data: Mapping, *, cache_dir: str | None = None,
                   max_workspace_size: int | None = None) -> "RuntimeOptions":
        """Options for a module read from a file: `SAVED_FIELDS` from `data`, each checked against its type (a
        ValueError names the field), and the machine's resources from the caller — never from the file."""
        if not isinstance(data, Mapping):
            raise ValueError(f"options must be a JSON object, got {type(data).__name__}")
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {}
        for name in SAVED_FIELDS:
            if name not in data:
                continue
            value = data[name]
            wanted = bool if kinds[name] in (bool, "bool") else int
            optional = "None" in str(kinds[name])
            if type(value) is not wanted and not (optional and value is None):  # noqa: E721 - a bool is no int here
                raise ValueError(f"options.{name} must be {wanted.__name__}{' or null' if optional else ''}, "
                                 f"got {value!r}")
            values[name] = value
        resources = {"cache_dir": cache_dir}
        if max_workspace_size is not None:
            resources["max_workspace_size"] = max_workspace_size
        return cls(**values, **resources)


# The options a saved module carries (and restores). cache_dir and max_workspace_size are left out on purpose: where
# plans are cached and how much memory a rebuild may take belong to the machine that loads the file.
SAVED_FIELDS = ("fp16", "bf16", "tf32", "multi_engine", "optimization_level", "cuda_graph", "max_streams",
                "max_batch_size")


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
