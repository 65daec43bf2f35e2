"""Shared by the GPU benchmarks: timing with CUDA events, peak memory, environment description."""

from __future__ import annotations

import platform
import statistics
import time

import torch


def cuda_latencies(fn, *, warmup: int = 10, iters: int = 100) -> list[float]:
    """Milliseconds per call, one CUDA event pair per call, after warm-up (the CLI's `bench` measures so too)."""
    from tensorforge.cli import measure_latencies

    return measure_latencies(fn, torch.device("cuda"), warmup, iters)


def summarize(latencies: list[float], batch: int) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    median = statistics.median(ordered)
    return {
        "median_ms": median,
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "min_ms": ordered[0],
        "throughput_per_s": batch * 1000.0 / median,
    }


def timed(fn):
    """(result, seconds) of one call, synchronized."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def environment() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(),
            capability=list(torch.cuda.get_device_capability()),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def device_refusal(device: torch.device, dry_run: bool) -> str | None:
    """Why a GPU benchmark cannot run on `device` as asked (None when it can): its real sizes are for a GPU, and a CPU
    runs it only as the end-to-end check at tiny sizes (--dry-run)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here: run with --device cpu --dry-run"
    if device.type == "cpu" and not dry_run:
        return "--device cpu needs --dry-run (the real sizes are for the GPU)"
    return None
