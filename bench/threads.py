"""Throughput of one compiled module called from 1, 2, 4, 8 threads: per-thread contexts against one context
behind a lock.

    python bench/threads.py [--device cuda] [--model resnet50] [--batches 1,32] [--threads 1,2,4,8]
                            [--iters 50] [--modes per_thread,per_thread_one_stream,locked] --out threads.json
    python bench/threads.py --device cpu --model resnet18 --image-size 32 --batches 1,4 --iters 5 --out t.json

Modes (every thread calls the same module on the same input, ITERS calls after its own warm-up):
  per_thread              `module(x)`: each thread runs in its own contexts (arenas, CUDA graphs), on CUDA each
                          on a stream of its own, as a serving framework's model instances are;
  per_thread_one_stream   the same on the default stream (CUDA only): what concurrency the CPU side alone gives;
  locked                  one `module.create_context()` shared behind a `threading.Lock`, on the default stream:
                          a lock-serialized context, what a caller would have written before contexts per thread.
Throughput is images per second over the wall time from the moment every thread has warmed up to the moment the
last one's work is done (the GPU synchronized). Also recorded: the peak GPU memory of each configuration (one arena
and one set of CUDA graphs per thread shows there), and the largest difference between a thread's output and the
single-thread output. On CUDA the model runs in FP16, on the CPU in FP32. Writes the JSON to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorforge as forge
from common import environment

DEFAULTS = {  # device -> (model, image size, batches, iterations per thread)
    "cuda": ("resnet50", 224, "1,32", 50),
    "cpu": ("resnet18", 32, "1,4", 5),
}


def make(model_name: str, device: str, image_size: int, batch: int):
    """(compiled module, eager model, input) for `batch`, the plan built for it."""
    if device == "cuda" and image_size == 224:
        from benchmark import on_cuda  # realistic batch-norm statistics, seeded inputs, as the other benchmarks

        model, (x,) = on_cuda(model_name, "fp16", batch)
    else:
        import torchvision

        torch.manual_seed(0)
        dtype = torch.float16 if device == "cuda" else torch.float32
        model = getattr(torchvision.models, model_name)().eval().to(device, dtype)
        x = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
    precision = "fp16" if device == "cuda" else "fp32"
    module = forge.compile(model, (x,), precision=precision, device=device).build_all(batch)
    return module, model, x


def run_threads(call, x, threads: int, iters: int, own_streams: bool) -> tuple[float, list[torch.Tensor]]:
    """Wall seconds for `threads` threads to make `iters` calls each (after their warm-up), and each one's last
    output."""
    warmed = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    outputs: list = [None] * threads
    errors: list = []

    def work(t: int) -> None:
        stream = torch.cuda.Stream() if own_streams else None
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for _ in range(3):  # the thread's first calls make its contexts and capture its graphs
                    call(x)
                if stream is not None:
                    stream.synchronize()
                warmed.wait()
                for _ in range(iters):
                    y = call(x)
                if x.is_cuda:
                    torch.cuda.current_stream().synchronize()
                outputs[t] = y
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread, the barriers broken
            errors.append(exc)
            warmed.abort()
            done.abort()
            return
        done.wait()

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    try:
        warmed.wait()
        start = time.perf_counter()
        done.wait()
        elapsed = time.perf_counter() - start
    except threading.BrokenBarrierError:
        elapsed = float("nan")
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return elapsed, outputs


def callers(module, mode: str):
    """(call, own_streams) for a mode (see the module docstring)."""
    if mode == "locked":
        context, lock = module.create_context(), threading.Lock()

        def call(x):
            with lock:
                return context(x)

        return call, False
    return module, mode == "per_thread" and module.device.type == "cuda"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--model")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batches")
    parser.add_argument("--threads", default="1,2,4,8")
    parser.add_argument("--iters", type=int, help="calls per thread, timed")
    parser.add_argument("--modes")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    model_name, image_size, batches, iters = DEFAULTS[args.device]
    model_name = args.model or model_name
    image_size = args.image_size or image_size
    batches = [int(b) for b in (args.batches or batches).split(",")]
    iters = args.iters or iters
    thread_counts = [int(t) for t in args.threads.split(",")]
    modes = (
        args.modes or ("per_thread,per_thread_one_stream,locked" if args.device == "cuda" else "per_thread,locked")
    ).split(",")
    cuda = args.device == "cuda"
    rows = []
    for batch in batches:
        module, model, x = make(model_name, args.device, image_size, batch)
        with torch.no_grad():
            reference = module(x).float()
            eager_diff = float((reference - model(x).float()).abs().max())
        del model
        for mode in modes:
            call, own_streams = callers(module, mode)
            for threads in thread_counts:
                gc.collect()
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    before = torch.cuda.memory_allocated()
                elapsed, outputs = run_threads(call, x, threads, iters, own_streams)
                row = {
                    "batch": batch,
                    "mode": mode,
                    "threads": threads,
                    "iters_per_thread": iters,
                    "seconds": elapsed,
                    "images_per_s": threads * iters * batch / elapsed,
                    "max_abs_diff_vs_one_thread": max(float((o.float() - reference).abs().max()) for o in outputs),
                }
                if cuda:
                    row["peak_extra_bytes"] = torch.cuda.max_memory_allocated() - before
                rows.append(row)
                print(
                    f"{model_name} b{batch} {mode:<22} {threads} threads: {row['images_per_s']:9.1f} img/s "
                    f"({elapsed:.3f} s)"
                    + (f", peak +{row['peak_extra_bytes'] / 2**20:.0f} MiB" if cuda else "")
                    + f", max |diff| {row['max_abs_diff_vs_one_thread']:.2e}",
                    flush=True,
                )
        plan = next(p for ps in module.plans().values() for p in ps)
        rows.append(
            {"batch": batch, "plan_arena_bytes": plan.peak_activation_bytes, "max_abs_diff_vs_eager": eager_diff}
        )
        del module, call
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment(),
        "model": model_name,
        "device": args.device,
        "image_size": image_size,
        "torch_threads": torch.get_num_threads(),
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
