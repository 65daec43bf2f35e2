"""Built plans, cached in memory and (with a directory) on disk under a content hash.

In memory a plan stays cached only while something uses it (regions with the same key share one plan):
a plan the module has replaced (multi-engine mode 0 grows a region's plan to a larger batch) is freed
with its weights and arena instead of staying on the device behind the cache.

The key hashes everything that decides what a plan is: the region (its JSON), its weights (their bytes),
the build options, the batch size it is built for, the device and library fingerprint. Many models can
share one directory. Files are written to a temporary name in the same directory and renamed into place,
so a reader never sees half a file and two processes building the same plan at once both succeed (the
later rename wins, and both files are equal). A cached file that cannot be read is ignored, with a
warning, and the plan is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import ir
from ..ir.digest import content_digest
from .user_frame import user_stacklevel

if TYPE_CHECKING:
    from ..engine import Plan

CACHE_FORMAT = 1


def region_digest(region: ir.Graph) -> str:
    """Hash of a region's structure and weights (computed once per region and kept by the runtime)."""
    return content_digest(*ir.graph_to_json(region))


def plan_key(region_hash: str, build_options: dict, profile: ir.Profile, fingerprint: dict) -> str:
    """The cache key of a region's plan for `profile`. A batch-only profile keys as plans always have (by max_batch),
    so caches filled before other symbols could be dynamic keep their hits."""
    sizes: dict[str, Any] = (
        {"max_batch": profile.max_env["batch"]} if profile.is_batch_only else {"profile": profile.to_json()}
    )
    payload = json.dumps(
        {"cache": CACHE_FORMAT, "region": region_hash, "options": build_options, **sizes, "fingerprint": fingerprint},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def plan_family(region_hash: str, build_options: dict, fingerprint: dict) -> str:
    """What the plans of one region, built one way for one device, share whatever their profile: the name of the
    cache's index of their profiles, so a later process finds the plan whose profile holds its sizes."""
    payload = json.dumps(
        {"cache": CACHE_FORMAT, "region": region_hash, "options": build_options, "fingerprint": fingerprint},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


class PlanCache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else None
        self._memory: weakref.WeakValueDictionary[str, Plan] = weakref.WeakValueDictionary()
        # one lookup or build at a time: two threads missing the same key must not both build it, and a
        # WeakValueDictionary is not safe to change from two threads. Builds of different keys wait for each other
        # too; a module builds one plan at a time anyway (runtime/module.py)
        self._lock = threading.Lock()
        self.hits = 0
        self.builds = 0
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # the cache only ever saves time: run without it rather than not at all
                warnings.warn(
                    f"plan cache directory {self.directory} cannot be used ({exc}); plans will be built "
                    f"and kept in memory only",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
                self.directory = None

    def _path(self, key: str) -> Path:
        assert self.directory is not None, "the cache keeps plans in memory only"
        return self.directory / f"{key}.plan"

    def get_or_build(
        self,
        key: str,
        build: Callable[[], Plan],
        load: Callable[[bytes, str], Plan],
        family: tuple[str, ir.Profile] | None = None,
    ) -> Plan:
        """`_get_or_build` under the cache's lock (see __init__): safe from any number of threads. With `family`
        (`plan_family(...)`, the plan's profile) the profile joins that family's index on disk (`find_profile`)."""
        with self._lock:
            plan = self._get_or_build(key, build, load)
            if family is not None and self.directory is not None:
                self._index_profile(*family)
            return plan

    def _index_path(self, family: str) -> Path:
        assert self.directory is not None, "the cache keeps plans in memory only"
        return self.directory / f"{family}.profiles.json"

    def profiles(self, family: str) -> list[ir.Profile]:
        """The profiles plans of `family` were cached for. The index is data: an entry that is not a sound profile
        is skipped, and an unreadable index reads as empty (it only ever saves a build)."""
        if self.directory is None:
            return []
        try:
            entries = json.loads(self._index_path(family).read_text())
        except (OSError, ValueError, RecursionError):
            return []
        found = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                found.append(ir.Profile.from_json(entry))
            except ir.ProfileError:
                continue
        return found

    def find_profile(self, family: str, sizes: dict[str, int]) -> ir.Profile | None:
        """A cached profile of `family` that holds `sizes` (the tightest, if several), or None."""
        from .profiles import fits, tightest

        return tightest(p for p in self.profiles(family) if fits(p, sizes))

    def _index_profile(self, family: str, profile: ir.Profile) -> None:
        """Add `profile` to the family's index: read, extend, write to a temporary file and rename, as plans are.
        Two processes adding at once may lose one entry; that costs a later build, never a wrong plan (the plan
        file itself is keyed by its profile)."""
        known = self.profiles(family)
        if profile in known:
            return
        data = json.dumps([p.to_json() for p in (*known, profile)], sort_keys=True).encode()
        try:
            self._write_file(self._index_path(family), data)
        except OSError as exc:
            warnings.warn(
                f"could not write the plan cache index {self._index_path(family)} ({exc})",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )

    def _get_or_build(self, key: str, build: Callable[[], Plan], load: Callable[[bytes, str], Plan]) -> Plan:
        """The plan under `key`: from memory (while in use), else from disk, else built (and stored in both).

        `load(data, key)` must refuse an entry that was not built for `key` (Plan.from_bytes(cache_key=key) does: a
        valid plan of another model copied under this key would otherwise give that model's answers)."""
        plan = self._memory.get(key)
        if plan is not None:
            self.hits += 1
            return plan
        if self.directory is not None and self._path(key).exists():
            try:
                plan = load(self._path(key).read_bytes(), key)
                self.hits += 1
            except Exception as exc:  # noqa: BLE001  (a damaged or foreign file must never stop inference: rebuild)
                warnings.warn(
                    f"ignoring cached plan {self._path(key)}: {exc}; rebuilding",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
                plan = None
        if plan is None:
            plan = build()
            self.builds += 1
            if self.directory is not None:
                try:
                    self._write(key, plan.to_bytes(cache_key=key))
                except OSError as exc:  # a full disk or an unwritable entry must never stop inference
                    warnings.warn(
                        f"could not write plan cache entry {self._path(key)} ({exc}); the plan is used from memory",
                        RuntimeWarning,
                        stacklevel=user_stacklevel(),
                    )
        self._memory[key] = plan
        return plan

    def _write(self, key: str, data: bytes) -> None:
        self._write_file(self._path(key), data)

    def _write_file(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
