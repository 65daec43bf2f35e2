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

Dynamic shapes (docs/dynamic_shapes.md): `profiles` gives the ranges plans are built for, in either spelling —
per symbol (`{"seq": (16, 128, 512)}`: min, opt, max) or TensorRT's per input (`{"input_ids": ((1, 8), (8, 128),
(32, 512))}`: the min, opt and max shape). The per-input spelling is kept as given (`InputShapes`) until the graph
is known; `resolve_profiles(options, graph_inputs)` reads both spellings into `ir.Profile`s for a graph's inputs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeGuard

from ..engine.config import BuilderConfig
from ..engine.cuda_graphs import DEFAULT_MAX_GRAPHS
from ..ir.profile import MAX_SIZE, Profile, ProfileError
from ..ir.types import Dim
from .padding import PadValue, check_multiples

Shape: TypeAlias = tuple[int, ...]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class InputShapes:
    """One optimization profile in TensorRT's spelling: per input, its (min, opt, max) shape. Which symbol each
    axis sizes is known only from a graph's inputs, so the ranges per symbol are read later (`resolve_profiles`);
    what can be checked without the graph is checked here: every shape a tuple of sizes, the three of an input of
    one rank, and min <= opt <= max on every axis."""

    shapes: tuple[tuple[str, tuple[Shape, Shape, Shape]], ...]

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ProfileError("a profile in the per-input spelling names at least one input")
        for name, (lo, opt, hi) in self.shapes:
            for axis, sizes in enumerate(zip(lo, opt, hi)):
                if not sizes[0] <= sizes[1] <= sizes[2]:
                    raise ProfileError(
                        f"input {name!r} axis {axis}: the sizes must satisfy min <= opt <= max, got "
                        f"{sizes[0]}, {sizes[1]}, {sizes[2]} (shapes {_shape_str(lo)}, {_shape_str(opt)}, "
                        f"{_shape_str(hi)})"
                    )

    @staticmethod
    def of(spec: Mapping[str, Any]) -> InputShapes:
        """From `{input: (min_shape, opt_shape, max_shape)}`, each shape a sequence of ints."""
        shapes = []
        for name, value in spec.items():
            if not isinstance(name, str) or not name:
                raise ProfileError(f"a profile's input name must be a non-empty string, got {name!r}")
            if not _is_triple(value) or not all(_is_sequence(v) for v in value):
                raise ProfileError(
                    f"input {name!r}: give (min_shape, opt_shape, max_shape), e.g. ((1, 8), (8, 128), (32, 512)); "
                    f"got {value!r}"
                )
            three = tuple(tuple(_size(d, f"input {name!r} {which} shape") for d in v) for v, which in zip(value, _MOM))
            if len({len(shape) for shape in three}) != 1:
                raise ProfileError(
                    f"input {name!r}: its min, opt and max shapes must have one rank, got "
                    f"{', '.join(_shape_str(shape) for shape in three)}"
                )
            shapes.append((name, three))
        return InputShapes(tuple(shapes))  # type: ignore[arg-type]  # three shapes per input, checked above

    def as_dict(self) -> dict[str, tuple[Shape, Shape, Shape]]:
        return dict(self.shapes)

    def to_json(self) -> dict[str, list[list[int]]]:
        return {name: [list(shape) for shape in three] for name, three in self.shapes}

    def describe(self) -> str:
        """`input_ids 1x8..32x512 (opt 8x128)`, per input."""
        return ", ".join(
            f"{n} {_shape_str(lo)}..{_shape_str(hi)} (opt {_shape_str(opt)})" for n, (lo, opt, hi) in self.shapes
        )


# one profile as given: ranges per symbol, or shapes per input until the graph is known
ProfileSpec: TypeAlias = Profile | InputShapes


@dataclass(frozen=True)
class RuntimeOptions:
    """How a module builds its plans (`builder_config`) and runs them.

    - `cache_dir`: where built plans are cached on disk (None: in memory only).
    - `multi_engine`: 0 keeps one plan per region sized for the largest batch seen; 1 one plan per batch size.
    - `cuda_graph`: on CUDA, replay the whole module (or, failing that, each plan) as one CUDA graph.
    - `max_batch_size`: a larger batch is an error (torch2trt's contract); None: plans grow to fit.
    - `profiles`: the optimization profiles plans are built for (None: the frontend's ranges, else a batch-only
      profile, today's behaviour). A list of `ir.Profile`, or of dicts in either spelling: per symbol
      `{"seq": (16, 128, 512)}` (min, opt, max), or TensorRT's per input `{"input_ids": ((1, 8), (8, 128),
      (32, 512))}` (min, opt, max shape), kept as `InputShapes` until `resolve_profiles` reads it for a graph.
    - `cuda_graph_cache_size`: the most CUDA graphs kept per runner (one per concrete input shape; least
      recently used out), so traffic over many shapes does not pile up graph memory.
    - `build_on_miss`: a shape outside every profile builds a plan for a profile that covers it, with a warning;
      False: such a shape is an error that names the profiles' ranges.
    - `pad_to_multiple`: symbol -> multiple (`{"seq": 32}`): inputs are padded along that symbol to the next
      multiple and outputs sliced back, so fewer shapes need plans and graphs. Off by default; results equal
      unpadded ones only where padded positions are masked (runtime/padding.py says when it is allowed).
    - `pad_values`: input name -> the value its padded positions get (`{"attention_mask": 0, "input_ids": 0}`);
      every input padded by `pad_to_multiple` needs one.
    """

    builder_config: BuilderConfig = field(default_factory=BuilderConfig)
    cache_dir: str | None = None
    multi_engine: int = 0
    cuda_graph: bool = True
    max_batch_size: int | None = None
    profiles: tuple[ProfileSpec, ...] | None = None
    cuda_graph_cache_size: int = DEFAULT_MAX_GRAPHS
    build_on_miss: bool = True
    # read-only; left out of the hash (a mapping has none), compared by value
    pad_to_multiple: Mapping[str, int] | None = field(default=None, hash=False)
    pad_values: Mapping[str, PadValue] | None = field(default=None, hash=False)

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
        if self.profiles is not None:
            object.__setattr__(self, "profiles", _profile_specs(self.profiles))
        if type(self.cuda_graph_cache_size) is not int or self.cuda_graph_cache_size < 1:
            raise ValueError(
                f"cuda_graph_cache_size must be a positive int (CUDA graphs kept per runner), "
                f"got {self.cuda_graph_cache_size!r}"
            )
        if not isinstance(self.build_on_miss, bool):
            raise ValueError(f"build_on_miss must be a bool, got {self.build_on_miss!r}")
        if self.pad_to_multiple is not None:
            object.__setattr__(self, "pad_to_multiple", _pad_multiples(self.pad_to_multiple))
        if self.pad_values is not None:
            object.__setattr__(self, "pad_values", _pad_values(self.pad_values))

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
        """What a saved module records: how its plans are built and run (`SAVED_FIELDS`), nothing about the machine.
        JSON values: `profiles` as a list of the dicts either spelling reads from."""
        saved = {name: self.option(name) for name in SAVED_FIELDS}
        if self.profiles is not None:
            saved["profiles"] = [spec.to_json() for spec in self.profiles]
        if self.pad_to_multiple is not None:
            saved["pad_to_multiple"] = dict(self.pad_to_multiple)
        if self.pad_values is not None:
            saved["pad_values"] = dict(self.pad_values)
        return saved

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
            if wanted is object:  # a structure: the options check it as they would a caller's
                values[name] = value
                continue
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


# saved options that are JSON structures, not scalars: `saved` writes them, the options' own checks read them back
_STRUCTURED_FIELDS = frozenset({"profiles", "pad_to_multiple", "pad_values"})


def _json_kind(name: str, hint: Any) -> tuple[type, bool]:
    """(the JSON type a saved option has, whether it may be null), from its annotation; `object` for a structure."""
    if name in _STRUCTURED_FIELDS:
        return object, True
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


# -- profiles and padding ---------------------------------------------------------------------------------------

_MOM = ("min", "opt", "max")


def _is_sequence(value: object) -> TypeGuard[tuple[Any, ...] | list[Any]]:
    return isinstance(value, (tuple, list))


def _is_triple(value: object) -> TypeGuard[tuple[Any, ...] | list[Any]]:
    return _is_sequence(value) and len(value) == 3


def _size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise ProfileError(f"{what}: sizes must be ints from 0 to {MAX_SIZE}, got {value!r}")
    return value


def _shape_str(shape: Sequence[object]) -> str:
    return "x".join(str(d) for d in shape) or "()"


def profile_spec(value: object) -> ProfileSpec:
    """One profile as a caller gives it: an `ir.Profile`, an `InputShapes`, or a dict in either spelling — per
    symbol (every value a (min, opt, max) triple of ints) or per input (every value three shapes)."""
    if isinstance(value, (Profile, InputShapes)):
        return value
    if not isinstance(value, Mapping) or not value:
        raise ProfileError(
            f"a profile is an ir.Profile or a non-empty dict: {{'seq': (16, 128, 512)}} per symbol, or "
            f"{{'input_ids': ((1, 8), (8, 128), (32, 512))}} per input; got {value!r}"
        )
    kinds = {key: _entry_kind(v) for key, v in value.items()}
    odd = [key for key, kind in kinds.items() if kind is None]
    if odd:
        raise ProfileError(
            f"profile entry {odd[0]!r}: give (min, opt, max) for a symbol, e.g. (16, 128, 512), or (min_shape, "
            f"opt_shape, max_shape) for an input, e.g. ((1, 8), (8, 128), (32, 512)); got {value[odd[0]]!r}"
        )
    if set(kinds.values()) == {"symbol"}:
        return Profile(value)
    if set(kinds.values()) == {"input"}:
        return InputShapes.of(value)
    raise ProfileError(
        f"a profile mixes the two spellings: {sorted(k for k, kind in kinds.items() if kind == 'symbol')} look like "
        f"symbols (min, opt, max) and {sorted(k for k, kind in kinds.items() if kind == 'input')} like inputs (three "
        f"shapes); give each profile in one spelling"
    )


def _entry_kind(value: object) -> str | None:
    """'symbol' for a (min, opt, max) of sizes, 'input' for three shapes, None for neither."""
    if not _is_triple(value):
        return None
    nested = [_is_sequence(v) for v in value]
    return "input" if all(nested) else "symbol" if not any(nested) else None


def _profile_specs(profiles: object) -> tuple[ProfileSpec, ...]:
    if not _is_sequence(profiles):
        raise ValueError(
            f"profiles must be a list of profiles (or None for the default): write profiles=[...] even for one; "
            f"got {type(profiles).__name__}"
        )
    if not profiles:
        raise ValueError("profiles is empty: give at least one profile, or None for the default")
    specs = []
    for index, value in enumerate(profiles):
        try:
            specs.append(profile_spec(value))
        except ProfileError as exc:
            raise ProfileError(f"profiles[{index}]: {exc}") from None
    return tuple(specs)


def _pad_multiples(value: object) -> Mapping[str, int]:
    return types.MappingProxyType(dict(check_multiples(value)))


def _pad_values(value: object) -> Mapping[str, PadValue]:
    if not isinstance(value, Mapping):
        raise ValueError(f"pad_values must map input names to numbers, e.g. {{'attention_mask': 0}}, got {value!r}")
    for name, pad in value.items():
        if not isinstance(name, str) or not isinstance(pad, (bool, int, float)):
            raise ValueError(f"pad_values: input {name!r} must get a number or a bool, got {pad!r}")
    return types.MappingProxyType(dict(value))


def resolve_profiles(options: RuntimeOptions, graph_inputs: Mapping[str, Sequence[Dim]]) -> list[Profile]:
    """The options' profiles as ranges per symbol for a graph whose inputs have these dims (input name -> dims):
    the per-input spelling is read through `Profile.from_inputs`. Every profile must give a range to exactly the
    graph's symbols: one it lacks, or one the graph does not have (a typo), is a ProfileError naming it. Empty when
    the options name no profiles (the caller's default applies)."""
    if options.profiles is None:
        return []
    symbols: set[str] = set()
    for dims in graph_inputs.values():
        for d in dims:
            if not isinstance(d, int):
                symbols |= d.free_symbols
    resolved = []
    for index, spec in enumerate(options.profiles):
        where = f"profiles[{index}]"
        try:
            profile = spec if isinstance(spec, Profile) else Profile.from_inputs(graph_inputs, spec.as_dict())
        except ProfileError as exc:
            raise ProfileError(f"{where}: {exc}") from None
        unknown, missing = sorted(profile.symbols - symbols), sorted(symbols - profile.symbols)
        if unknown:
            raise ProfileError(
                f"{where} ({profile.describe()}) gives a range to {', '.join(map(repr, unknown))}, which no input "
                f"of the graph has; its symbols: {', '.join(sorted(symbols)) or 'none (all shapes static)'}"
            )
        if missing:
            raise ProfileError(
                f"{where} ({profile.describe()}) gives no range to {', '.join(map(repr, missing))}; add "
                f"{{{missing[0]!r}: (min, opt, max)}}, or the shapes of an input that has it"
            )
        resolved.append(profile)
    return resolved
