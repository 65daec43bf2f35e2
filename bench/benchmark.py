"""The benchmark: tensorforge plans side by side with PyTorch eager and torch.compile, in one run.

For each model, precision and batch size: median / p90 / p99 latency and throughput of
  eager     the model in PyTorch eager mode,
  compile   torch.compile(mode="reduce-overhead") (CUDA graphs),
  forge     a tensorforge module (cold build time, plan load time from the on-disk cache),
with peak GPU memory for each, on the same inputs, and the speedups. Writes JSON under --out.

    python bench/benchmark.py --models resnet50,mobilenet_v2,vit_b_16,bert_base --batches 1,32,128 \
        --precisions fp16 [--methods eager,compile,forge] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cuda_latencies, environment, summarize, timed  # noqa: E402

import tensorforge as forge  # noqa: E402

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def make_model(name: str):
    torch.manual_seed(0)
    if name == "bert_base":
        import transformers
        config = transformers.BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads
        model = transformers.BertModel(config, add_pooling_layer=True)
        return model.eval(), lambda b: (torch.randint(0, config.vocab_size, (b, 128)),
                                        torch.ones(b, 128, dtype=torch.long))
    import torchvision
    model = getattr(torchvision.models, name)()
    if hasattr(model, "heads"):  # torchvision's ViT starts with a zero head: every output would be 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    # random weights with untouched batch-norm statistics make activations vanish or explode layer after
    # layer (a zero output matches anything); a few training-mode passes give realistic statistics
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(16, 3, 224, 224))
    return model.eval(), lambda b: (torch.randn(b, 3, 224, 224),)


def _first(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]


def fresh_peak() -> None:
    """Start a method's memory account: what it allocates from here (build, capture, runs) is its peak.
    The model's weights and the inputs are resident for every method, so every peak includes them."""
    gc.collect()
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


def bench_one(name: str, precision: str, batch: int, methods: list[str], iters: int, cache_dir: str) -> dict:
    model, make_inputs = make_model(name)
    dtype = DTYPES[precision]
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    model = model.to("cuda", dtype)
    torch.manual_seed(1)
    inputs = tuple(t.to("cuda", dtype) if t.is_floating_point() else t.to("cuda") for t in make_inputs(batch))
    result = {"model": name, "precision": precision, "batch": batch}
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
            forge_precision = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32-strict", "tf32": "tf32"}[precision]
            fresh_peak()
            module, build_s = timed(lambda: forge.compile(model, inputs, precision=forge_precision, device="cuda",
                                                          cache_dir=cache_dir).build_all(batch))
            out = _first(module(*inputs)).float()
            result["forge"] = summarize(cuda_latencies(lambda: module(*inputs), iters=iters), batch)
            result["forge"]["peak_mem_bytes"] = peak()
            saved = os.path.join(cache_dir, f"{name}-{precision}-{batch}.tforge")
            module.save(saved)
            plans = module.plans()
            result["forge"].update(
                build_s=build_s, max_abs_err=float((out - expected).abs().max()),
                rel_err=float((out - expected).abs().max() / expected.abs().max().clamp_min(1e-9)),
                regions=len(module.regions), fallback_nodes=sum(1 for n in module.graph.nodes if n.op != "subgraph"),
                layers=sum(len(p.layers) for ps in plans.values() for p in ps),
                tactics=_tactic_counts(plans), counters=_counters(plans))
            del module, plans
            gc.collect()
            torch.cuda.empty_cache()
            # what a second process pays: convert + partition + plans from the on-disk cache; and loading a
            # saved .tforge (plans inside)
            again, cached_s = timed(lambda: forge.compile(model, inputs, precision=forge_precision, device="cuda",
                                                          cache_dir=cache_dir).build_all(batch))
            del again
            loaded, load_s = timed(lambda: forge.load(saved, device="cuda").build_all(batch))
            del loaded
            result["forge"].update(cached_build_s=cached_s, plan_load_s=load_s)
    for other in ("eager", "compile"):
        if other in result and "forge" in result:
            result[f"speedup_vs_{other}"] = result[other]["median_ms"] / result["forge"]["median_ms"]
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,mobilenet_v2,vit_b_16,bert_base")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--precisions", default="fp16")
    parser.add_argument("--methods", default="eager,compile,forge")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--tag", default="benchmark")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("the benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    methods = args.methods.split(",")
    rows = []
    cache_dir = tempfile.mkdtemp(prefix="tforge-bench-cache-")
    for name in args.models.split(","):
        for precision in args.precisions.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                start = time.perf_counter()
                try:
                    row = bench_one(name, precision, batch, methods, args.iters, cache_dir)
                except Exception as exc:  # one failure must not lose the rest of the run
                    row = {"model": name, "precision": precision, "batch": batch, "error": f"{type(exc).__name__}: {exc}"}
                row["wall_s"] = time.perf_counter() - start
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    doc = {"date": time.strftime("%Y-%m-%d"), "environment": environment(), "results": rows}
    (Path(args.out) / f"{args.tag}.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
