"""Multi-stream branches, measured: the same model built with one CUDA stream and with several, same run.

    python bench/streams.py [--models googlenet] [--batches 1,4] [--out DIR]

For each model and batch: median latency of a tensorforge module built with `max_streams=1` and with the default
(4), on the same inputs, both replayed as CUDA graphs; the stream count and sections of the plan; the speedup.
Writes streams.json under --out.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorforge as forge
from benchmark import make_model
from common import cuda_latencies, environment, summarize


def measure(name: str, batch: int) -> dict:
    model, make_inputs = make_model(name)
    model = model.to("cuda", torch.float16)
    inputs = tuple(t.to("cuda", torch.float16) for t in make_inputs(batch))
    row = {"model": name, "batch": batch}
    outputs = {}
    with torch.no_grad():
        for streams in (1, 4):
            module = forge.compile(model, inputs, precision="fp16", device="cuda", max_streams=streams).build_all(batch)
            plans = [p for ps in module.plans().values() for p in ps]
            outputs[streams] = module(*inputs).float()
            latencies = cuda_latencies(functools.partial(module, *inputs), iters=200)
            row[f"streams_{streams}"] = {
                **summarize(latencies, batch),
                "plan_streams": max(p.num_streams for p in plans),
            }
            del module, plans
    row["speedup"] = row["streams_1"]["median_ms"] / row["streams_4"]["median_ms"]
    row["max_abs_diff"] = float((outputs[1] - outputs[4]).abs().max())
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="googlenet")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(name, batch)
            rows.append(row)
            print(
                f"{name} b{batch}: 1 stream {row['streams_1']['median_ms']:.3f} ms, "
                f"{row['streams_4']['plan_streams']} streams {row['streams_4']['median_ms']:.3f} ms "
                f"({row['speedup']:.2f}x), max |diff| {row['max_abs_diff']:.2e}",
                flush=True,
            )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    doc = {"date": time.strftime("%Y-%m-%d"), "environment": environment(), "results": rows}
    (Path(args.out) / "streams.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
