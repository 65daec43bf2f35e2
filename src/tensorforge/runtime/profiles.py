"""Which profile a region's plan is built for, and which built plan runs a given set of sizes.

A region's inputs carry symbols (`batch`, `seq`, `height`); a plan runs every size inside its `ir.Profile`. The
runtime keeps the plans of a region by profile and, for the sizes of a call (`env`, the symbols bound from the
inputs), picks or builds one:

1. a plan whose profile contains the sizes runs them (mode 1, `multi_engine=1`: only the plan built for exactly the
   profile this call would build, so each batch size keeps its own plan, as before);
2. else, a profile the user declared (`profiles=`, per symbol or TensorRT's per input) that contains them;
3. else, with a cache directory, a profile a plan was built for earlier (by this process or another) that contains
   them: its plan loads from the cache instead of being built;
4. else a new profile, built on a miss (`build_on_miss=True`, the default; a warning says so where the region
   already had a profile, which it names; `build_on_miss=False` makes it an error that names them):
   - a region whose only symbol is the batch gets `batch: (1, n, n)` — mode 0 for the largest batch seen, the plan
     then replaces the smaller one; mode 1 one per batch size (TVM's multi-engine modes, unchanged);
   - otherwise mode 0 widens the region's widest profile to the new sizes, rounding each grown maximum up to a power
     of two (so a sequence growing one token at a time rebuilds a handful of times, not at every length) within the
     range the model declares (torch.export's `Dim(min=, max=)`), tuned at the sizes first seen; mode 1 pins the
     sizes (min = opt = max) but the batch, which keeps its range from 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .. import ir
from ..ir.profile import Profile
from ..ir.types import BATCH


def region_symbols(region: ir.Graph) -> frozenset[str]:
    """The symbols a region's sizes depend on: those of its inputs' types (the partitioner gives each region the
    module's own symbol names)."""
    return frozenset(s for v in region.inputs for s in v.type.symbols)


def region_env(env: Mapping[str, int], symbols: frozenset[str]) -> dict[str, int]:
    return {s: env[s] for s in sorted(symbols)}


def restricted(profile: Profile, symbols: frozenset[str]) -> Profile | None:
    """`profile` over `symbols` only, or None where it gives no range for one of them (it was declared for other
    inputs and does not apply to this region)."""
    ranges = profile.ranges
    if not symbols <= ranges.keys():
        return None
    return Profile({s: ranges[s] for s in symbols})


def fits(profile: Profile, sizes: Mapping[str, int]) -> bool:
    """Whether a plan of `profile` runs `sizes` (a symbol the sizes do not bind, like the batch range every plan of a
    static region has, takes its opt)."""
    return profile.contains({**profile.opt_env, **sizes})


def covers(wide: Profile, narrow: Profile) -> bool:
    """Whether every size `narrow` allows, `wide` allows too (a plan of `wide` can replace one of `narrow`)."""
    ranges = wide.ranges
    return all(s in ranges and ranges[s][0] <= lo and hi <= ranges[s][2] for s, (lo, _, hi) in narrow.ranges.items())


def tightest(profiles: Iterable[Profile]) -> Profile | None:
    """The profile with the smallest maxima (its plan has the smallest arena), or None."""
    return min(profiles, key=lambda p: (sorted(p.max_env.values()), p.key()), default=None)


def describe_all(profiles: Sequence[Profile]) -> str:
    return "; ".join(f"[{p.describe()}]" for p in profiles) or "none"


def new_profile(
    env: Mapping[str, int],
    built: Sequence[Profile],
    multi_engine: int,
    declared_ranges: Mapping[str, tuple[int, int | None]],
) -> Profile:
    """The profile a miss builds for the sizes `env` (step 4 of the module docstring)."""
    symbols = frozenset(env)
    if symbols <= {BATCH}:
        return Profile.batch(env.get(BATCH, 1))
    if multi_engine == 1:
        return Profile({s: (1, v, v) if s == BATCH else (v, v, v) for s, v in env.items()})
    widest = max(built, key=lambda p: sorted(p.max_env.values()), default=None)
    ranges: dict[str, tuple[int, int, int]] = {}
    for symbol, value in env.items():
        if symbol == BATCH:
            top = max(value, widest.max_env.get(BATCH, 0) if widest is not None else 0)
            ranges[symbol] = (1, top, top)  # as the legacy batch: tuned at the largest batch
            continue
        low, high = declared_ranges.get(symbol, (1, None))
        old = widest.ranges.get(symbol) if widest is not None else None
        lo = min(value, old[0]) if old is not None else max(1, min(value, low))
        opt = old[1] if old is not None else value
        hi = old[2] if old is not None and old[2] >= value else _round_up_pow2(value)
        if high is not None:
            hi = max(value, min(hi, high))
        ranges[symbol] = (lo, min(max(opt, lo), hi), hi)
    return Profile(ranges)


def _round_up_pow2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()
