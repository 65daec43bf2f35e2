"""A sample of the coverage sweep on the GPU: eight architectures outside the tuned benchmark set (resnet50,
mobilenet_v2, vit_b_16, bert_base, googlenet), FP16 at batch 1 and 32, tensorforge against PyTorch eager and
`torch.compile(mode="reduce-overhead")` in the same run, on the same inputs: medians of CUDA-event timings
after warm-up, the speedups, and tensorforge's error against eager FP16 and against eager FP32.

The architectures come from scripts/zoo_catalog.py (the sweep's catalog) at realistic sizes: torchvision at
224x224, Hugging Face models at the sizes of their smallest public checkpoints (GPT-2 small, t5-small's
encoder, whisper-tiny's encoder, a 1B-class Llama cut to 8 layers), random weights.

    python bench/zoo_gpu.py [--models convnext_tiny,hf-gpt2] [--batches 1,32] [--iters 100] [--budget-s 560]
    python bench/zoo_gpu.py --device cpu --dry-run      # tiny sizes, FP32, torch.compile(backend="eager"):
                                                        # proves the script end to end on a machine without a GPU
    bash bench/gpu_check.sh zoo [ARGS...]               # on the GPU machine, results under $OUT

Writes $OUT/zoo_gpu.json after every configuration (a run cut short keeps what it measured) and
$OUT/zoo_gpu.md (the table) at the end.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "src"))
import tensorforge as forge  # noqa: E402
import zoo_catalog  # noqa: E402
from common import device_refusal, environment, summarize  # noqa: E402
from tensorforge.cli import measure_latencies  # noqa: E402

# name -> what it is; none of them is in bench/benchmark.py's set
SAMPLE = {
    "convnext_tiny": "torchvision ConvNeXt-T",
    "efficientnet_b0": "torchvision EfficientNet-B0",
    "regnet_y_1_6gf": "torchvision RegNetY-1.6GF",
    "swin_t": "torchvision Swin-T",
    "hf-gpt2": "GPT-2 small (12 layers, 768), seq 128",
    "hf-llama": "Llama (8 layers, 1024, GQA 16/4), seq 128",
    "hf-t5-encoder": "t5-small encoder (6 layers, 512), seq 128",
    "hf-whisper-encoder": "whisper-tiny encoder (4 layers, 384), 80 mels x 3000 frames",
}
BATCHES = (1, 32)
IMAGE_SIZE, SEQ_LEN = 224, 128
# the Hugging Face sizes on the GPU (the catalog's small configs are what --dry-run uses)
HF_GPU_CONFIGS = {
    "hf-gpt2": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
    "hf-llama": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
    "hf-t5-encoder": dict(d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64, vocab_size=32128),
    "hf-whisper-encoder": dict(
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        num_mel_bins=80,
        max_source_positions=1500,
        vocab_size=51865,
    ),
}
DRY_IMAGE_SIZE, DRY_SEQ_LEN, DRY_BATCHES = 64, 16, (1, 2)


def make(name: str, batch: int, dry_run: bool):
    """(model in eval mode on the CPU in float32, inputs at `batch`), seeded."""
    torch.manual_seed(0)
    if name.startswith("hf-"):
        overrides = None if dry_run else HF_GPU_CONFIGS[name]
        return zoo_catalog.make_hf(name, batch, config_overrides=overrides, seq_len=DRY_SEQ_LEN if dry_run else SEQ_LEN)
    import torchvision

    size = DRY_IMAGE_SIZE if dry_run else IMAGE_SIZE
    model = torchvision.models.get_model(name, weights=None)
    zoo_catalog._unzero_linears(model)
    zoo_catalog._calibrate_batch_norm(model, torch.randn(8 if dry_run else 16, 3, size, size))
    return model.eval(), (torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)),)


def _first(out) -> torch.Tensor:
    from tensorforge.cli.sources import _flatten

    return out if isinstance(out, torch.Tensor) else _flatten(out)[0]


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.double(), expected.double()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(name: str, batch: int, *, device: torch.device, dry_run: bool, iters: int, warmup: int) -> dict:
    precision = "fp32" if dry_run else "fp16"
    dtype = torch.float32 if dry_run else torch.float16
    model, inputs = make(name, batch, dry_run)
    with torch.no_grad():
        reference32 = _first(model.to(device)(*[t.to(device) for t in inputs])).float()
    model = model.to(device, dtype)
    inputs = tuple(t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in inputs)
    row = {
        "model": name,
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "params": sum(p.numel() for p in model.parameters()),
    }

    def times(target) -> dict:
        """`target(*inputs)`'s latency summary."""
        return summarize(measure_latencies(functools.partial(target, *inputs), device, warmup, iters), batch)

    with torch.no_grad():
        expected = _first(model(*inputs)).float()
        row["eager"] = times(model)

        torch._dynamo.reset()
        start = time.perf_counter()
        # reduce-overhead is CUDA graphs; a dry run on the CPU traces through dynamo without compiling kernels
        compiled = torch.compile(model, backend="eager") if dry_run else torch.compile(model, mode="reduce-overhead")
        for _ in range(3):
            compiled(*inputs)
        _sync(device)
        row["compile"] = {**times(compiled), "build_s": time.perf_counter() - start}
        del compiled
        torch._dynamo.reset()

        start = time.perf_counter()
        module = forge.compile(model, inputs, precision=precision, device=device).build_all(batch)
        build_s = time.perf_counter() - start
        out = _first(module(*inputs)).float()
        report = module.report
        row["forge"] = {
            **times(module),
            "build_s": build_s,
            "rel_err_vs_eager": _rel_err(out, expected),
            "rel_err_vs_fp32": _rel_err(out, reference32),
            "regions": len(module.regions),
            "node_share": report.node_share,
            "mac_share": report.mac_share,
            "fallback_nodes": sum(1 for n in module.graph.nodes if n.op != "subgraph"),
        }
        del module
    for other in ("eager", "compile"):
        row[f"speedup_vs_{other}"] = row[other]["median_ms"] / row["forge"]["median_ms"]
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| model | batch | prec | eager ms | compile ms | forge ms | vs eager | vs compile | regions | MACs off "
        "| rel err (fp16 eager / fp32) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['batch']} | {r.get('precision', '')} "
        if "error" in r or "skipped" in r:
            lines.append(head + f"| {r.get('error') or 'skipped: ' + r['skipped']} | | | | | | | |")
            continue
        f = r["forge"]
        lines.append(
            head + f"| {r['eager']['median_ms']:.3f} | {r['compile']['median_ms']:.3f} | "
            f"{f['median_ms']:.3f} | {r['speedup_vs_eager']:.2f}x | {r['speedup_vs_compile']:.2f}x | "
            f"{f['regions']} | {100 * f['mac_share']:.1f}% | "
            f"{f['rel_err_vs_eager']:.1e} / {f['rel_err_vs_fp32']:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated (default: {','.join(SAMPLE)})")
    parser.add_argument("--batches", help="comma-separated (default 1,32; 1,2 with --dry-run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, FP32, few iterations: runs on a CPU")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per method (default 100; 3 dry)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no configuration once less than the longest one so far is left of this many "
        "seconds (reported as skipped), so a time-limited call ends with its results",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    refusal = device_refusal(device, args.dry_run)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    models = args.models.split(",") if args.models else list(SAMPLE)
    unknown = [m for m in models if m not in SAMPLE]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: the sample is {', '.join(SAMPLE)}")
    batches = (
        [int(b) for b in args.batches.split(",")] if args.batches else list(DRY_BATCHES if args.dry_run else BATCHES)
    )
    iters = args.iters or (3 if args.dry_run else 100)
    warmup = 1 if args.dry_run else 10
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, started, longest = [], time.perf_counter(), 0.0
    configs = [(m, b) for m in models for b in batches]
    for i, (name, batch) in enumerate(configs, 1):
        if args.budget_s is not None and time.perf_counter() - started + longest > args.budget_s:
            row = {"model": name, "batch": batch, "skipped": "time budget", "wall_s": 0.0}
        else:
            start = time.perf_counter()
            try:
                row = bench_one(name, batch, device=device, dry_run=args.dry_run, iters=iters, warmup=warmup)
            except Exception as exc:  # noqa: BLE001 - one failure must not lose the rest of the run
                row = {
                    "model": name,
                    "batch": batch,
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                }
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row["wall_s"] = time.perf_counter() - start
            longest = max(longest, row["wall_s"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        print(
            f"[{i}/{len(configs)}] {name} batch {batch}: {row['wall_s']:.1f} s "
            f"(total {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        doc = {
            "date": time.strftime("%Y-%m-%d"),
            "environment": environment(),
            "dry_run": args.dry_run,
            "sample": {m: SAMPLE[m] for m in models},
            "results": rows,
        }
        (out_dir / "zoo_gpu.json").write_text(json.dumps(doc, indent=2))
    env = environment()
    md = (
        f"# Zoo sample on {env.get('gpu', 'the CPU (dry run)')}, {time.strftime('%Y-%m-%d')}\n\n"
        f"torch {env['torch']}, triton {env.get('triton')}; medians of {iters} calls after {warmup} warm-up; "
        f"speedups are tensorforge against each method in the same run.\n\n{table(rows)}\n"
    )
    (out_dir / "zoo_gpu.md").write_text(md)
    print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
