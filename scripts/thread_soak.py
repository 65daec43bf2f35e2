"""Correctness under threads, the long run: THREADS threads x CALLS calls of one compiled module, mixed batch sizes,
every output checked against the eager model's output for the same input.

    python scripts/thread_soak.py --device cpu  --threads 8 --calls 1000 --out soak-cpu.json
    python scripts/thread_soak.py --device cuda --threads 8 --calls 1000 --out soak-cuda.json

Each thread calls `module(x)` (its own contexts, made at its first call) on inputs drawn from a fixed pool of
batches 1..MAX_BATCH, a different order per thread, and starts cold together with the others (the first calls
build, or on CUDA capture, while other threads already run). Every output is compared with eager's for that input
(FP32 on the CPU within 1e-4; FP16 on CUDA within the FP16 whole-model tolerance, 2e-2), so a race that mixes two
calls' activations shows up as a wrong answer, whatever its size. Writes the counts as JSON to --out; exits 1 on
any wrong answer or exception. The unit tests (tests/runtime/test_threads.py) run the same check at 8 x 25.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time

import torch
import torchvision

import tensorforge as forge

TOLERANCE = {"cpu": 1e-4, "cuda": 2e-2}  # max |out - eager| / max |eager|, per device's precision


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1000, help="calls per thread")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--multi-engine", type=int, default=0, choices=(0, 1))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = torchvision.models.resnet18().eval().to(device)
    pool = [
        torch.randn(b, 3, args.image_size, args.image_size, device=device)
        for b in range(1, args.max_batch + 1)
        for _ in range(2)
    ]
    with torch.no_grad():
        expected = [model(x) for x in pool]
    model = model.to(dtype)
    module = forge.compile(
        model,
        (pool[0].to(dtype),),
        precision="fp16" if dtype == torch.float16 else "fp32",
        device=device,
        multi_engine=args.multi_engine,
    )
    inputs = [x.to(dtype) for x in pool]

    wrong: list[str] = []
    errors: list[str] = []
    worst = [0.0]
    lock = threading.Lock()
    start = threading.Barrier(args.threads)

    def work(t: int) -> None:
        order = random.Random(t)
        start.wait()  # cold, together: the first calls build plans and capture graphs while others run
        for k in range(args.calls):
            i = order.randrange(len(inputs))
            try:
                out = module(inputs[i])
                if device.type == "cuda":
                    torch.cuda.current_stream().synchronize()
                error = float((out.float() - expected[i]).abs().max() / expected[i].abs().max())
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none ends the run
                with lock:
                    errors.append(f"thread {t} call {k}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                worst[0] = max(worst[0], error)
                if not error <= TOLERANCE[device.type]:
                    wrong.append(f"thread {t} call {k} input {i} (batch {inputs[i].shape[0]}): error {error:.3g}")

    began = time.perf_counter()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    total = args.threads * args.calls
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": args.threads,
        "calls_per_thread": args.calls,
        "calls": total,
        "batches": f"1..{args.max_batch}",
        "multi_engine": args.multi_engine,
        "precision": str(dtype),
        "wrong": len(wrong),
        "exceptions": len(errors),
        "max_relative_error": worst[0],
        "tolerance": TOLERANCE[device.type],
        "seconds": round(seconds, 1),
        "regions": len(module.regions),
        "plans_built": sum(len(p) for p in module.plans().values()),
        "first_wrong": wrong[:5],
        "first_exceptions": errors[:5],
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("first_")}))
    for line in wrong[:5] + errors[:5]:
        print("  " + line)
    return 1 if wrong or errors or not result["plans_built"] else 0


if __name__ == "__main__":
    sys.exit(main())
