"""The first command: compile a real torchvision model on whatever device this machine has, and show what
tensorforge did with it.

    .venv/bin/python examples/demo.py [MODEL] [--batch N]

MODEL is a torchvision classification model: by default resnet50 on a GPU (FP16, batch 32) and resnet18 on the
CPU (FP32, batch 2; the CPU runs the engine's reference tactics, so the point there is what happens, not speed).
It prints the partition report (what runs in the engine, and why the rest does not), the build time, the plan
summary, the numerical check against PyTorch eager and, on a GPU, the speed against eager and
torch.compile(mode="reduce-overhead") in the same precision. The weights are random: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import collections
import copy
import sys
import time

import torch
import torchvision

import tensorforge as forge
from tensorforge.cli import TOLERANCES, measure_latencies


def plan_summary(module: forge.Module) -> str:
    """Each plan's header (layers, MACs, arena, streams, passes) and how many layers each tactic runs."""
    lines = []
    for plans in module.plans().values():
        for plan in plans:
            lines += plan.describe().splitlines()[:4]
            tactics = collections.Counter(layer.tactic for layer in plan.layers)
            lines.append("tactics: " + ", ".join(f"{name} x{n}" for name, n in tactics.most_common()))
    return "\n".join(lines)


def median_ms(fn, device: torch.device) -> float:
    times = sorted(measure_latencies(fn, device, warmup=10, iters=50))
    return times[len(times) // 2]


def speed(model: torch.nn.Module, module: forge.Module, x: torch.Tensor, dtype: torch.dtype) -> None:
    """tensorforge against eager PyTorch and torch.compile(mode="reduce-overhead"), all in `dtype`."""
    device = x.device
    reference = copy.deepcopy(model).to(dtype)  # the module keeps nothing of the model, but leave it untouched
    typed = x.to(dtype)
    with torch.no_grad():
        ours = median_ms(lambda: module(x), device)
        eager = median_ms(lambda: reference(typed), device)
        start = time.perf_counter()
        compiled = torch.compile(reference, mode="reduce-overhead")
        for _ in range(3):  # compiles, then records its CUDA graphs
            compiled(typed)
        torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - start
        inductor = median_ms(lambda: compiled(typed), device)
    print(f"\n== speed, median of 50 calls at batch {x.shape[0]}")
    print(f"tensorforge                              {ours:8.3f} ms")
    print(f"PyTorch eager                            {eager:8.3f} ms   tensorforge is {eager / ours:.2f}x faster")
    print(
        f"torch.compile(mode='reduce-overhead')    {inductor:8.3f} ms   tensorforge is {inductor / ours:.2f}x "
        f"faster (its compile took {compile_s:.0f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model", nargs="?", default=None, help="a torchvision model (resnet50 on a GPU, resnet18 on the CPU)"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (32 on a GPU, 2 on the CPU)")
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    name = args.model or ("resnet50" if on_gpu else "resnet18")
    batch = args.batch or (32 if on_gpu else 2)
    precision = "fp16" if on_gpu else "fp32"

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval().to(device)  # random weights: no downloads
    x = torch.randn(batch, 3, 224, 224, device=device)
    where = torch.cuda.get_device_name(device) if on_gpu else "the CPU"
    print(f"tensorforge {forge.__version__}: {name}, batch {batch}, {precision}, on {where}\n")

    start = time.perf_counter()
    module = forge.compile(model, (x,), precision=precision, device=device)  # convert and partition
    compile_s = time.perf_counter() - start
    module.build_all(batch)  # the plans, built now rather than at the first call
    build_s = time.perf_counter() - start - compile_s

    print("== partition report")
    print(module.report)
    print(f"\n== build: {compile_s + build_s:.1f} s (convert and partition {compile_s:.1f} s, plans {build_s:.1f} s)")
    print(f"\n== plan summary\n{plan_summary(module)}")

    with torch.no_grad():
        expected = model(x)
        actual = module(x)
    error = ((actual.float() - expected).abs().max() / expected.abs().max()).item()
    tolerance = TOLERANCES[precision]
    ok = error <= tolerance
    print(
        f"\n== numerical check against PyTorch eager (float32): max relative error {error:.2e} "
        f"({'OK' if ok else 'FAILED'}, tolerance {tolerance:g} for {precision})"
    )

    if on_gpu:
        speed(model, module, x, torch.float16 if precision == "fp16" else torch.float32)
    else:
        print(
            "\n(speed against eager and torch.compile is measured on a GPU only: here plans run the engine's "
            "reference tactics)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
