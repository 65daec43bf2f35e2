"""Which GPUs a server places its model instances on: `--gpus all|0,1,...` (serve and export-triton).

`parse_gpus` reads the option (syntax only: an exported repository's GPUs are the serving machine's, not this
one's); `local_gpus` resolves it against the GPUs of this process, for `serve`, which loads the model on each.
A plan's fingerprint records the GPU's model, not its index (engine/fingerprint.py), so the plans a `.tforge` holds
run on every identical GPU of the host without a rebuild; on another model of GPU they are rebuilt, with a warning
that says so (runtime's load path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ALL = "all"
GpuSpec = str | Sequence[int]  # "all", "0,1", or indices


def parse_gpus(spec: GpuSpec | None) -> tuple[int, ...] | str | None:
    """None (no GPU list), "all", or the sorted distinct GPU indices of `spec` ("0,1" or [0, 1])."""
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == ALL:
            return ALL
        parts = [p.strip() for p in text.split(",")]
        if not text or any(not p.isdigit() for p in parts):
            raise ValueError(f"GPUs {spec!r}: expected 'all' or comma-separated GPU indices such as 0,1")
        indices = [int(p) for p in parts]
    else:
        indices = list(spec)
        if not indices or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in indices):
            raise ValueError(f"GPUs {list(spec)!r}: expected GPU indices (integers >= 0)")
    if len(set(indices)) != len(indices):
        raise ValueError(f"GPUs {spec!r}: an index is listed twice")
    return tuple(sorted(indices))


def local_gpus(spec: GpuSpec | None) -> tuple[int, ...] | None:
    """The indices of this process's GPUs that `spec` names (all of them for "all"); None for no list. A clear
    error where there is no CUDA GPU or an index is past the last one."""
    if spec is None:
        return None
    parsed = parse_gpus(spec)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"--gpus {_show(spec)}: this machine has no CUDA GPU (serve on the CPU without --gpus)")
    if parsed == ALL:
        return tuple(range(count))
    assert isinstance(parsed, tuple)
    missing = [i for i in parsed if i >= count]
    if missing:
        raise ValueError(f"--gpus {_show(spec)}: GPU {missing[0]} does not exist here (GPUs 0 to {count - 1})")
    return parsed


def _show(spec: GpuSpec) -> str:
    return spec if isinstance(spec, str) else ",".join(map(str, spec))
