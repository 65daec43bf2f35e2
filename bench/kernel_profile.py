"""Where the time goes: the CUDA kernels of one tensorforge call next to torch.compile's, from torch.profiler.

For each model and batch: the plan's layers with their tactics, then per system the kernels of one call
(grouped by name, total microseconds per call, launches per call), largest first. Use it to find what a
plan does that the compiler does not (extra copies, unfused chains, slow library kernels).

    python bench/kernel_profile.py --models mobilenet_v2,vit_b_16 --batches 1,32 [--top 25] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorforge as forge
from benchmark import on_cuda

ITERS = 20


def kernel_table(fn, top: int) -> tuple[list[tuple[str, float, float]], float, float]:
    """([(kernel, us per call, launches per call)] largest first, total us per call, launches per call)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(ITERS):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        entry = totals[event.name[:110]]
        entry[0] += event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
        entry[1] += 1
    rows = sorted(((name, us / ITERS, n / ITERS) for name, (us, n) in totals.items()), key=lambda r: -r[1])
    return rows[:top], sum(r[1] for r in rows), sum(r[2] for r in rows)


def kernel_section(label: str, fn, top: int) -> list[str]:
    """`fn`'s kernels by time, as report lines under a heading with the totals per call."""
    rows, total, launches = kernel_table(fn, top)
    return [
        f"### {label}: {total:.1f} us of kernels, {launches:.0f} launches per call",
        *(f"  {us:9.1f} us  {n:6.1f}x  {kname}" for kname, us, n in rows),
    ]


def profile_one(name: str, batch: int, precision: str, top: int) -> str:
    model, inputs = on_cuda(name, precision, batch)
    lines = [f"## {name} {precision} batch {batch}"]
    with torch.no_grad():
        module = forge.compile(model, inputs, precision=precision, device="cuda").build_all(batch)
        for ps in module.plans().values():
            for p in ps:
                lines.append(p.describe())
        compiled = torch.compile(model, mode="reduce-overhead")
        lines += kernel_section("tensorforge", functools.partial(module, *inputs), top)
        lines += kernel_section("torch.compile", functools.partial(compiled, *inputs), top)
        del compiled
        torch._dynamo.reset()
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    report = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            try:
                text = profile_one(name, batch, args.precision, args.top)
            except Exception as exc:  # noqa: BLE001 - one failure must not lose the others
                text = f"## {name} batch {batch}: {type(exc).__name__}: {exc}"
            print(text, flush=True)
            report.append(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "profile.md").write_text("\n\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
