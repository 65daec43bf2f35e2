"""Where a cold tensorforge build spends its time: export, passes, Triton compiles, tactic timing, capture.

    python bench/build_profile.py --models mobilenet_v2,vit_b_16 --batches 1,32 [--out DIR]

Each configuration is built once, cold (a fresh Triton cache directory, no plan cache), under cProfile; the
report sums the inclusive time of a few functions that make up a build and writes the top of the profile.
The benchmark's cold build time is the same path (forge.compile(...).build_all(batch)).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="triton-cold-"))  # cold: nothing compiled yet

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorforge as forge
from benchmark import FORGE_PRECISIONS, on_cuda

# (label, file suffix, function name): the build's parts, by inclusive time
PARTS = [
    ("torch.export", "torch/export/_trace.py", "_export"),
    ("decompositions", "torch/export/exported_program.py", "run_decompositions"),
    ("engine passes", "tensorforge/engine/passes/__init__.py", "run_passes"),
    ("tactic selection", "tensorforge/engine/builder.py", "_choose_tactics"),
    ("  compile ahead", "tensorforge/engine/compile_ahead.py", "compile_ahead"),
    ("  timing", "tensorforge/engine/timing.py", "measure"),
    ("Triton compiles (this thread)", "triton/compiler/compiler.py", "compile"),
    ("plan (bind, weights)", "tensorforge/engine/plan.py", "__init__"),
    ("first call (capture)", "tensorforge/runtime/module.py", "forward"),
]


def _part_times(stats: pstats.Stats) -> dict[str, float]:
    found = {}
    for (path, _, func), (_, _, _, cumulative, _) in stats.stats.items():
        for label, suffix, name in PARTS:
            if func == name and path.replace(os.sep, "/").endswith(suffix):
                found[label] = found.get(label, 0.0) + cumulative
    return {label: round(found.get(label, 0.0), 2) for label, _, _ in PARTS}


def profile_one(name: str, precision: str, batch: int) -> dict:
    model, inputs = on_cuda(name, precision, batch)
    forge_precision = FORGE_PRECISIONS[precision]
    profiler = cProfile.Profile()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache_dir:
        profiler.enable()
        module = forge.compile(model, inputs, precision=forge_precision, device="cuda", cache_dir=cache_dir)
        module.build_all(batch)
        module(*inputs)
        torch.cuda.synchronize()
        profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(35)
    return {
        "model": name,
        "precision": precision,
        "batch": batch,
        "build_and_first_call_s": round(total, 2),
        "parts_s": _part_times(stats),
        "profile_top": text.getvalue(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2")
    parser.add_argument("--batches", default="1")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = profile_one(name, args.precision, batch)
            rows.append(row)
            print(
                f"{name} {args.precision} b{batch}: {row['build_and_first_call_s']} s  {json.dumps(row['parts_s'])}",
                flush=True,
            )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "build_profile.json"), "w") as f:
            json.dump(rows, f, indent=1)
        with open(os.path.join(args.out, "build_profile.txt"), "w") as f:
            f.write("\n\n".join(f"== {r['model']} b{r['batch']} ==\n{r['profile_top']}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
