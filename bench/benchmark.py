"""The benchmark: tensorforge plans side by side with PyTorch eager and torch.compile, in one run.

For each model, precision and batch size: median / p90 / p99 latency and throughput of
  eager     the model in PyTorch eager mode,
  compile   torch.compile(mode="reduce-overhead") (CUDA graphs),
  forge     a tensorforge module (cold build time, plan load time from the on-disk cache),
with peak GPU memory, on the same inputs, and the speedups. Two tensorforge peaks: `peak_mem_bytes`, from
its build through its timed runs with the PyTorch model still on the GPU (the build reads the model, so
its weights are resident then, as for eager and torch.compile), and `serving`: a fresh load of the saved
.tforge with the PyTorch model moved off the GPU, as a deployment runs it, through its first call and
steady-state runs. The serving peak is the one to compare with eager's peak (weights + activations).
Writes JSON under --out after every configuration; prints each configuration's wall time and a summary.

    python bench/benchmark.py                  # --suite full: the whole set, sized for one 10-minute GPU call
    python bench/benchmark.py --models resnet50,vit_b_16 --batches 1,32 --precisions fp16,tf32 \
        [--methods eager,compile,forge] [--out DIR] [--budget-s S]
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorforge as forge
from common import cuda_latencies, environment, summarize, timed

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
FORGE_PRECISIONS = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32-strict", "tf32": "tf32"}  # forge.compile's names
MODELS = ("resnet50", "mobilenet_v2", "vit_b_16", "bert_base")
BATCHES = (1, 32, 128)
# (model, precision, batch), grouped by model so each model is made once; googlenet's parallel inception
# branches are where multi-stream execution shows
SUITES = {
    "full": [
        *(("resnet50", precision, b) for precision in ("fp16", "tf32") for b in BATCHES),
        *((m, "fp16", b) for m in MODELS[1:] for b in BATCHES),
        ("googlenet", "fp16", 1),
    ],
}
TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": False, "init_weights": True}}  # no training-only heads


def make_model(name: str):
    """A fresh copy of the random-weight model `name` (eval mode, on the CPU, float32) and its input maker."""
    model, make_inputs = _reference_model(name)
    return copy.deepcopy(model), make_inputs


@functools.lru_cache(maxsize=1)  # the suite runs a model's configurations one after another
def _reference_model(name: str):
    torch.manual_seed(0)
    if name == "bert_base":
        import transformers

        config = transformers.BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads
        model = transformers.BertModel(config, add_pooling_layer=True)
        return model.eval(), lambda b: (
            torch.randint(0, config.vocab_size, (b, 128)),
            torch.ones(b, 128, dtype=torch.long),
        )
    import torchvision

    model = getattr(torchvision.models, name)(**TORCHVISION_OPTIONS.get(name, {}))
    if hasattr(model, "heads"):  # torchvision's ViT starts with a zero head: every output would be 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    # random weights with untouched batch-norm statistics make activations vanish or explode layer after
    # layer (a zero output matches anything); a few training-mode passes give realistic statistics
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        device = "cuda" if torch.cuda.is_available() else "cpu"  # seconds on the host's CPU, nothing on the GPU
        model.to(device).train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(16, 3, 224, 224, device=device))
        model.cpu()
    return model.eval(), lambda b: (torch.randn(b, 3, 224, 224),)


def on_cuda(name: str, precision: str, batch: int):
    """(model, inputs): a fresh `name` on the GPU in `precision`'s dtype, and its inputs at `batch` (seeded)."""
    model, make_inputs = make_model(name)
    dtype = DTYPES[precision]
    model = model.to("cuda", dtype)
    torch.manual_seed(1)
    return model, tuple(t.to("cuda", dtype) if t.is_floating_point() else t.to("cuda") for t in make_inputs(batch))


def _first(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]


def fresh_peak() -> None:
    """Start a memory account: its peak is what is allocated from here (build, capture, runs) plus what is
    resident already (the inputs, and for eager, compile and the forge build the PyTorch model's weights).

    cuBLAS keeps a workspace per stream it has run on (tens of MiB on Hopper) until told to drop them; the
    streams of earlier methods' CUDA-graph warm-ups would otherwise stay in every later account. Dropped
    here (nothing captured is alive at this point), each method pays for the workspaces it uses, as it
    would in a process of its own."""
    gc.collect()
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peak() -> int:
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def _tactic_counts(plans) -> dict:
    counts: dict[str, int] = {}
    for ps in plans.values():
        for p in ps:
            for layer in p.layers:
                key = f"{layer.op}:{layer.tactic}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def _counters(plans) -> dict:
    total: dict[str, int] = {}
    for ps in plans.values():
        for p in ps:
            for k, v in p.counters.items():
                total[k] = total.get(k, 0) + v
    return total


def bench_one(
    name: str, precision: str, batch: int, methods: list[str], iters: int, cache_dir: str, cached_build: bool = True
) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    model, inputs = on_cuda(name, precision, batch)
    result = {
        "model": name,
        "precision": precision,
        "batch": batch,
        "model_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
    }
    with torch.no_grad():
        expected = _first(model(*inputs)).float()
        if "eager" in methods:
            fresh_peak()
            result["eager"] = summarize(cuda_latencies(lambda: model(*inputs), iters=iters), batch)
            result["eager"]["peak_mem_bytes"] = peak()
        if "compile" in methods:
            torch._dynamo.reset()
            fresh_peak()
            compiled = torch.compile(model, mode="reduce-overhead")
            _, build_s = timed(lambda: [compiled(*inputs) for _ in range(3)])
            result["compile"] = summarize(cuda_latencies(lambda: compiled(*inputs), iters=iters), batch)
            result["compile"]["build_s"] = build_s
            result["compile"]["peak_mem_bytes"] = peak()
            del compiled
            torch._dynamo.reset()
        if "forge" in methods:
            forge_precision = FORGE_PRECISIONS[precision]
            fresh_peak()
            module, build_s = timed(
                lambda: forge.compile(
                    model, inputs, precision=forge_precision, device="cuda", cache_dir=cache_dir
                ).build_all(batch)
            )
            out = _first(module(*inputs)).float()
            result["forge"] = summarize(cuda_latencies(lambda: module(*inputs), iters=iters), batch)
            result["forge"]["peak_mem_bytes"] = peak()  # build included, the PyTorch model resident
            saved = os.path.join(cache_dir, f"{name}-{precision}-{batch}.tforge")
            module.save(saved)
            plans = module.plans()
            result["forge"].update(
                build_s=build_s,
                max_abs_err=float((out - expected).abs().max()),
                rel_err=float((out - expected).abs().max() / expected.abs().max().clamp_min(1e-9)),
                regions=len(module.regions),
                fallback_nodes=sum(1 for n in module.graph.nodes if n.op != "subgraph"),
                layers=sum(len(p.layers) for ps in plans.values() for p in ps),
                tactics=_tactic_counts(plans),
                counters=_counters(plans),
            )
            del module, plans, out
            gc.collect()
            torch.cuda.empty_cache()
            if cached_build:  # what a second process pays: convert + partition + plans from the on-disk cache
                again, cached_s = timed(
                    lambda: forge.compile(
                        model, inputs, precision=forge_precision, device="cuda", cache_dir=cache_dir
                    ).build_all(batch)
                )
                del again
                result["forge"]["cached_build_s"] = cached_s
            try:
                result["forge"]["serving"] = serving = serve(saved, model, inputs, expected, batch)
                result["forge"]["plan_load_s"] = serving["load_s"]
            except Exception as exc:  # noqa: BLE001 - the other measurements of this configuration still count
                result["forge"]["serving"] = {"error": f"{type(exc).__name__}: {exc}"}
    for other in ("eager", "compile"):
        if other in result and "forge" in result:
            result[f"speedup_vs_{other}"] = result[other]["median_ms"] / result["forge"]["median_ms"]
    return result


def serve(saved: str, model, inputs, expected, batch: int, iters: int = 20) -> dict:
    """A deployment's memory: the saved .tforge loaded afresh on a GPU that holds no PyTorch copy of the model
    (moved to the host here; nothing runs it afterwards), then its first call (CUDA-graph capture) and
    `iters` steady-state calls. The inputs and the eager reference output stay resident, as they are in
    eager's peak. It runs in this process, where the build already chose cuDNN's algorithms: a new process
    would search again at its first call, which can raise that call's peak (not the steady state's)."""
    model.to("cpu")
    fresh_peak()
    baseline = torch.cuda.memory_allocated()
    loaded, load_s = timed(lambda: forge.load(saved, device="cuda"))
    out, first_call_s = timed(lambda: _first(loaded(*inputs)).float())
    first_call_peak = peak()
    max_abs_err = float((out - expected).abs().max())
    del out
    torch.cuda.reset_peak_memory_stats()
    latencies = cuda_latencies(lambda: loaded(*inputs), warmup=2, iters=iters)
    steady_peak = peak()
    resident = torch.cuda.memory_allocated()
    return {
        "load_s": load_s,
        "first_call_s": first_call_s,
        "median_ms": summarize(latencies, batch)["median_ms"],
        "max_abs_err": max_abs_err,
        "baseline_bytes": baseline,
        "first_call_peak_bytes": first_call_peak,
        "steady_peak_bytes": steady_peak,
        "peak_bytes": max(first_call_peak, steady_peak),
        "resident_bytes": resident,
    }


def configurations(args) -> list[tuple[str, str, int]]:
    """The suite's list, unless --models, --precisions or --batches ask for a grid (defaults for the rest)."""
    if args.models is None and args.precisions is None and args.batches is None:
        return list(SUITES[args.suite])
    models = args.models.split(",") if args.models else list(MODELS)
    precisions = args.precisions.split(",") if args.precisions else ["fp16"]
    batches = [int(b) for b in args.batches.split(",")] if args.batches else list(BATCHES)
    return [(m, p, b) for m in models for p in precisions for b in batches]


def _mib(n) -> str:
    return f"{n / 2**20:.0f}" if n is not None else "-"


def summary(rows) -> str:
    """One line per configuration: latencies, the speedup over torch.compile, peaks in MiB and wall time."""
    head = (
        f"{'model':<13} {'prec':<5} {'batch':>5} {'eager ms':>9} {'compile ms':>10} {'forge ms':>9} "
        f"{'vs compile':>10} {'eager peak':>10} {'serving peak':>12} {'forge peak*':>11} {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        label = f"{r['model']:<13} {r['precision']:<5} {r['batch']:>5}"
        if "error" in r or "skipped" in r:
            lines.append(f"{label}  {r.get('error') or 'skipped: ' + r['skipped']}"[: len(head)])
            continue
        ms = {m: f"{r[m]['median_ms']:.3f}" if m in r else "-" for m in ("eager", "compile", "forge")}
        f = r.get("forge", {})
        speedup = f"{r['speedup_vs_compile']:.2f}x" if "speedup_vs_compile" in r else "-"
        lines.append(
            f"{label} {ms['eager']:>9} {ms['compile']:>10} {ms['forge']:>9} {speedup:>10} "
            f"{_mib(r.get('eager', {}).get('peak_mem_bytes')):>10} "
            f"{_mib(f.get('serving', {}).get('peak_bytes')):>12} {_mib(f.get('peak_mem_bytes')):>11} "
            f"{r['wall_s']:>7.1f}"
        )
    lines.append(
        "peaks in MiB; serving: a fresh load of the saved .tforge without the PyTorch model on the GPU; "
        "forge peak*: build and runs with the PyTorch model resident"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default="full",
        help="the configurations to run when none of --models/--precisions/--batches is given "
        "(full: " + ", ".join(f"{m} {p} b{b}" for m, p, b in SUITES["full"]) + ")",
    )
    parser.add_argument("--models", help=f"comma-separated (default {','.join(MODELS)}; also googlenet)")
    parser.add_argument("--batches", help=f"comma-separated (default {','.join(map(str, BATCHES))})")
    parser.add_argument("--precisions", help="comma-separated: fp16, bf16, tf32, fp32 (default fp16)")
    parser.add_argument("--methods", default="eager,compile,forge")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument(
        "--cached-builds",
        choices=("first", "all"),
        default="first",
        help="time the build from the plan cache at the first batch of each model and precision "
        "(default: it is mostly torch.export, the same at every batch) or at all of them",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no configuration once less than the longest one so far is left of this many "
        "seconds (they are reported as skipped), so a time-limited call ends with its results",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--tag", default="benchmark")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("the benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    methods = args.methods.split(",")
    configs = configurations(args)
    rows = []
    cache_dir = tempfile.mkdtemp(prefix="tforge-bench-cache-")
    out_path = Path(args.out) / f"{args.tag}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started, longest = time.perf_counter(), 0.0
    cached_timed: set[tuple[str, str]] = set()
    for i, (name, precision, batch) in enumerate(configs, 1):
        if args.budget_s is not None and time.perf_counter() - started + longest > args.budget_s:
            row = {"model": name, "precision": precision, "batch": batch, "skipped": "time budget", "wall_s": 0.0}
        else:
            start = time.perf_counter()
            try:
                cached = args.cached_builds == "all" or (name, precision) not in cached_timed
                row = bench_one(name, precision, batch, methods, args.iters, cache_dir, cached_build=cached)
                cached_timed.add((name, precision))
            except Exception as exc:  # noqa: BLE001 - one failure must not lose the rest of the run
                row = {"model": name, "precision": precision, "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
            gc.collect()  # this configuration's model and plans, gone with bench_one's frame, leave the GPU
            torch.cuda.empty_cache()
            row["wall_s"] = time.perf_counter() - start
            longest = max(longest, row["wall_s"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        print(
            f"[{i}/{len(configs)}] {name} {precision} batch {batch}: {row['wall_s']:.1f} s "
            f"(total {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        # written after every configuration, so a run stopped part-way keeps what it measured
        doc = {"date": time.strftime("%Y-%m-%d"), "environment": environment(), "results": rows}
        out_path.write_text(json.dumps(doc, indent=2))
    print(summary(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
