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
import warnings
import weakref
from pathlib import Path
from typing import Callable

import torch

from .. import ir

CACHE_FORMAT = 1


def _tensor_digest(h, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def region_digest(region: ir.Graph) -> str:
    """Hash of a region's structure and weights (computed once per region and kept by the runtime)."""
    doc, tensors = ir.graph_to_json(region)
    h = hashlib.sha256(json.dumps(doc, sort_keys=True).encode())
    for name in sorted(tensors):
        h.update(name.encode())
        _tensor_digest(h, tensors[name])
    return h.hexdigest()


def plan_key(region_hash: str, build_options: dict, max_batch: int, fingerprint: dict) -> str:
    payload = json.dumps({"cache": CACHE_FORMAT, "region": region_hash, "options": build_options,
                          "max_batch": max_batch, "fingerprint": fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


class PlanCache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else None
        self._memory: weakref.WeakValueDictionary[str, object] = weakref.WeakValueDictionary()
        self.hits = 0
        self.builds = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.plan"

    def get_or_build(self, key: str, build: Callable[[], object], load: Callable[[bytes], object]):
        """The plan under `key`: from memory (while in use), else from disk, else built (and stored in both)."""
        plan = self._memory.get(key)
        if plan is not None:
            self.hits += 1
            return plan
        if self.directory is not None and self._path(key).exists():
            try:
                plan = load(self._path(key).read_bytes())
                self.hits += 1
            except Exception as exc:  # a damaged or foreign file must never stop inference: rebuild
                warnings.warn(f"ignoring cached plan {self._path(key)}: {exc}; rebuilding", RuntimeWarning)
                plan = None
        if plan is None:
            plan = build()
            self.builds += 1
            if self.directory is not None:
                self._write(key, plan.to_bytes())
        self._memory[key] = plan
        return plan

    def _write(self, key: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
