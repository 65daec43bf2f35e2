"""Measuring: latencies, their percentiles and peak GPU memory."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


def measure_latencies(fn: Callable, device, warmup: int, iters: int) -> list[float]:
    """Milliseconds per call after `warmup` calls: CUDA events on a GPU, perf_counter on the CPU."""
    import torch

    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _summarize(latencies: list[float], batch: int) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731  (nearest rank)
    p50 = statistics.median(ordered)
    return {
        "p50_ms": p50,
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "throughput_per_s": batch * 1e3 / p50 if p50 > 0 else math.inf,
    }


def _fresh_peak(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    import torch

    if device.type != "cuda":
        return None  # no allocator statistics for the CPU: reported as n/a
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n < 1 << 10:
        return f"{n} B"
    return f"{n / 2**10:.1f} KiB" if n < 1 << 20 else f"{n / 2**20:.2f} MiB"
