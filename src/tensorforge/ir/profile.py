"""Optimization profiles: the range of sizes a plan is built for, per symbol (min / opt / max).

A graph's dynamic dimensions are `SymExpr`s over named symbols (`batch`, `seq`, `height`). A `Profile` gives
each symbol a range: the plan runs every size from min to max without a rebuild, its tactics are timed at opt,
and its memory is planned for max. TensorRT spells a profile per input (`{"input_ids": ((1, 8), (8, 128),
(32, 512))}`: the min, opt and max shape); `Profile.from_inputs` turns that spelling into ranges per symbol by
reading each input's declared dims. The legacy dynamic batch is `Profile.batch(max_batch)`:
`batch: (1, max_batch, max_batch)`.

A profile is data (JSON: `{"symbol": [min, opt, max]}`), validated on every construction, so a file cannot
carry a range that is empty, negative or not made of ints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from .symbolic import SymExpr
from .types import BATCH

Range: TypeAlias = tuple[int, int, int]  # (min, opt, max)
ShapeSpec: TypeAlias = Sequence[int]
MAX_SIZE = 2**31 - 1  # larger than any tensor dimension a kernel indexes; a bigger bound is a typo or hostile


class ProfileError(ValueError):
    """A profile that is malformed, does not cover a graph's symbols, or disagrees with its inputs' shapes."""


def _check_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value <= MAX_SIZE:
        raise ProfileError(f"{what} must lie in 0..{MAX_SIZE}, got {value}")
    return value


def _check_range(symbol: object, value: object) -> tuple[str, Range]:
    if not isinstance(symbol, str) or not symbol.isidentifier():
        raise ProfileError(f"a profile's symbol must be an identifier, got {symbol!r}")
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ProfileError(f"the range of {symbol!r} must be (min, opt, max), got {value!r}")
    lo, opt, hi = (_check_size(v, f"{which} of {symbol!r}") for v, which in zip(value, ("min", "opt", "max")))
    if not lo <= opt <= hi:
        raise ProfileError(f"the range of {symbol!r} must satisfy min <= opt <= max, got {lo}, {opt}, {hi}")
    return symbol, (lo, opt, hi)


class Profile:
    """An immutable, hashable map symbol -> (min, opt, max), validated."""

    __slots__ = ("_ranges",)
    _ranges: tuple[tuple[str, Range], ...]

    def __init__(self, ranges: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]] = ()) -> None:
        items = ranges.items() if isinstance(ranges, Mapping) else ranges
        checked = dict(_check_range(s, v) for s, v in items)
        object.__setattr__(self, "_ranges", tuple(sorted(checked.items())))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Profile is immutable")

    # -- constructors ---------------------------------------------------------------------------

    @staticmethod
    def batch(max_batch: int) -> Profile:
        """The legacy dynamic batch: any batch from 1 to max_batch, tuned at max_batch."""
        return Profile({BATCH: (1, max_batch, max_batch)})

    @staticmethod
    def fixed(env: Mapping[str, int]) -> Profile:
        """Exactly the sizes of `env` (min = opt = max)."""
        return Profile({s: (v, v, v) for s, v in env.items()})

    @staticmethod
    def from_inputs(inputs: Mapping[str, Sequence[int | SymExpr]], spec: Mapping[str, Sequence[ShapeSpec]]) -> Profile:
        """Ranges per symbol from TensorRT's spelling: `spec[input] = (min_shape, opt_shape, max_shape)`.

        `inputs` maps each graph input's name to its declared dims. A bare symbol takes its range from the
        axis it sits on; `k*symbol` divides exactly; a constant dim must be given as itself; any other
        expression must agree with the ranges the bare symbols got. A symbol declared on two inputs must get
        the same range from both."""
        unknown = sorted(set(spec) - set(inputs))
        if unknown:
            raise ProfileError(f"the profile names input(s) {unknown} the graph lacks; inputs: {sorted(inputs)}")
        ranges: dict[str, Range] = {}
        where: dict[str, str] = {}
        later: list[tuple[str, int, SymExpr, Range]] = []
        for name, shapes in spec.items():
            dims = list(inputs[name])
            if not isinstance(shapes, (tuple, list)) or len(shapes) != 3:
                raise ProfileError(f"input {name!r}: give (min_shape, opt_shape, max_shape), got {shapes!r}")
            for which, shape in zip(("min", "opt", "max"), shapes):
                if not isinstance(shape, (tuple, list)) or len(shape) != len(dims):
                    raise ProfileError(
                        f"input {name!r}: the {which} shape {shape!r} must have {len(dims)} dims like the input "
                        f"({_shape_str(dims)})"
                    )
            for axis, dim in enumerate(dims):
                given: Range = tuple(_check_size(s[axis], f"input {name!r} axis {axis}") for s in shapes)  # type: ignore[assignment]
                here = f"input {name!r} axis {axis}"
                if isinstance(dim, int):
                    if given != (dim, dim, dim):
                        raise ProfileError(f"{here} is the constant {dim}; the profile gives {given}")
                    continue
                mono = _monomial(dim)
                if mono is None:
                    later.append((here, axis, dim, given))
                    continue
                symbol, scale = mono
                if any(v % scale for v in given):
                    raise ProfileError(f"{here} is {dim}: the profile's sizes {given} must be multiples of {scale}")
                rng: Range = tuple(v // scale for v in given)  # type: ignore[assignment]
                if symbol in ranges and ranges[symbol] != rng:
                    raise ProfileError(
                        f"{here} gives {symbol!r} the range {rng}, but {where[symbol]} gave it {ranges[symbol]}"
                    )
                ranges[symbol], where[symbol] = rng, here
        profile = Profile(ranges)
        for here, _axis, dim, given in later:
            missing = sorted(dim.free_symbols - set(ranges))
            if missing:
                raise ProfileError(f"{here} is {dim}; no input axis is a bare {missing[0]!r} to take its range from")
            want = tuple(dim.bind(env) for env in (profile.min_env, profile.opt_env, profile.max_env))
            if want != given:
                raise ProfileError(f"{here} is {dim}, which is {want} over the profile; the profile gives {given}")
        return profile

    # -- reading --------------------------------------------------------------------------------

    @property
    def ranges(self) -> dict[str, Range]:
        return dict(self._ranges)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for s, _ in self._ranges)

    @property
    def min_env(self) -> dict[str, int]:
        return {s: r[0] for s, r in self._ranges}

    @property
    def opt_env(self) -> dict[str, int]:
        """The sizes tactics are timed at."""
        return {s: r[1] for s, r in self._ranges}

    @property
    def max_env(self) -> dict[str, int]:
        return {s: r[2] for s, r in self._ranges}

    @property
    def is_batch_only(self) -> bool:
        """Whether this is `Profile.batch(n)` for some n: the only form plans had before issue 14."""
        if len(self._ranges) != 1:
            return False
        symbol, (lo, opt, hi) = self._ranges[0]
        return symbol == BATCH and lo == 1 and opt == hi

    def bounds(self, dim: int | SymExpr) -> tuple[int, int]:
        """The least and greatest size `dim` takes inside this profile."""
        if isinstance(dim, int):
            return dim, dim
        return dim.bounds({s: (r[0], r[2]) for s, r in self._ranges})

    def violations(self, env: Mapping[str, int]) -> list[str]:
        """What in `env` lies outside this profile (empty when it fits): one phrase per symbol."""
        found = []
        for symbol, (lo, _, hi) in self._ranges:
            value = env.get(symbol)
            if value is None:
                found.append(f"{symbol} is not bound")
            elif not lo <= value <= hi:
                found.append(f"{symbol} = {value} is outside {lo}..{hi}")
        return found

    def contains(self, env: Mapping[str, int]) -> bool:
        return not self.violations(env)

    def covering(self, env: Mapping[str, int]) -> Profile:
        """This profile widened to include `env` (opt kept, clamped into the new range)."""
        ranges = {}
        for symbol, (lo, opt, hi) in self._ranges:
            value = env.get(symbol, opt)
            lo, hi = min(lo, value), max(hi, value)
            ranges[symbol] = (lo, min(max(opt, lo), hi), hi)
        for symbol, value in env.items():
            ranges.setdefault(symbol, (value, value, value))
        return Profile(ranges)

    def describe(self) -> str:
        """`batch 1..8 (opt 8), seq 16..512 (opt 128)`; a fixed size reads `seq = 64`."""
        parts = []
        for symbol, (lo, opt, hi) in self._ranges:
            parts.append(f"{symbol} = {lo}" if lo == hi else f"{symbol} {lo}..{hi} (opt {opt})")
        return ", ".join(parts) or "static"

    # -- data -----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, list[int]]:
        return {s: list(r) for s, r in self._ranges}

    @staticmethod
    def from_json(data: Any) -> Profile:
        if not isinstance(data, dict):
            raise ProfileError(f"a profile must be a JSON object of symbol: [min, opt, max], got {type(data).__name__}")
        return Profile(data)

    def key(self) -> str:
        """Canonical text of the ranges (cache keys, digests)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and other._ranges == self._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Profile, (self.to_json(),))

    def __repr__(self) -> str:
        return f"Profile({self.to_json()})"


def _monomial(dim: SymExpr) -> tuple[str, int] | None:
    """(symbol, k) when `dim` is k*symbol with k >= 1, else None."""
    if dim.to_dim() is None or len(dim.terms) != 1:
        return None
    (mono, coeff) = dim.terms[0]
    atom = mono[0][0]
    return (atom, coeff) if isinstance(atom, str) else None


def _shape_str(dims: Sequence[int | SymExpr]) -> str:
    return "x".join(str(d) for d in dims)
