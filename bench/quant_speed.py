"""Issue 16's speed of quantized plans: tensorforge INT8 and FP8 beside its FP16 plans, torch.compile and torchao, in
one run, on the same inputs.

For each model (ResNet-50 and MobileNetV2 from torchvision, BERT-base: Hugging Face BertModel(BertConfig()), random
weights, seq 128, int64 input_ids + attention_mask) and batch (1, 32, 128): median / p90 / p99 latency and
throughput of
  eager_fp16    the model in PyTorch eager, FP16 (the reference the errors are measured against),
  compile_fp16  torch.compile(mode="reduce-overhead") of the FP16 model (as bench/benchmark.py),
  forge_fp16    tensorforge.compile(precision="fp16"),
  forge_int8    tensorforge.compile(precision="int8", calib_data=<a few random batches>, calib_method="minmax"),
  forge_fp8     the same with precision="fp8" (compute capability >= 8.9),
  torchao_int8  torchao's quantize_(Int8DynamicActivationInt8WeightConfig()) on the BF16 model, then
                torch.compile(mode="max-autotune"); torchao quantizes nn.Linear only: on the CNNs only the
                classifier is quantized (the row says how many layers it quantized and left in BF16),
  torchao_fp8   quantize_(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())), same (capability >= 8.9;
                torchao's FP8 convolutions need Blackwell, so on Hopper it too takes the Linears alone),
with each method's build time, relative error against eager FP16, peak GPU memory, and for the tensorforge modules
the tactics their plans chose (count per op:tactic) and which layers ran quantized kernels (engine.qconv /
engine.qdense, or a tactic named for int8 / fp8) as opposed to Q/DQ layers around FP16 kernels. Every row gets the
speedups of forge_int8 / forge_fp8 over forge_fp16 and over torchao of the same precision, and the issue's targets
are checked beside the numbers (TARGETS). A method that fails records its message and the run goes on.

    python bench/quant_speed.py [--models resnet50,bert_base] [--batches 1,32,128] [--methods forge_fp16,forge_int8]
        [--budget-s 540] [--iters 100] [--out DIR]
    python bench/quant_speed.py --device cpu --models mobilenet_v2 --batches 1 \\
        --methods forge_fp16,forge_int8,eager_fp16
        # a smoke run on a CPU: tiny sizes (images 64x64, seq 16), FP32, torch.compile(backend="eager"), 3 calls
    bash bench/gpu_check.sh quantspeed [ARGS...]     # on the GPU machine (carry .gpu_wheels: the torchao wheel)

Writes $OUT/quant_speed.json after every method (a run cut short keeps what it measured), then quant_speed.md (the
table and the targets) and quant_speed.png (throughput per model, batch and method; where matplotlib imports).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
import tensorforge as forge  # noqa: E402
from benchmark import _counters, _first, _tactic_counts, fresh_peak, make_model, peak  # noqa: E402
from common import cuda_latencies, device_refusal, environment, summarize, timed  # noqa: E402
from kernel_profile import kernel_table  # noqa: E402
from tensorforge.cli import measure_latencies  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2", "bert_base")
BATCHES = (1, 32, 128)
# the order they run in within a configuration: tensorforge's first, so a tight budget keeps the comparisons that
# matter most; the torch.compile builds (max-autotune above all) are the slow ones
METHODS = ("eager_fp16", "forge_fp16", "forge_int8", "forge_fp8", "compile_fp16", "torchao_int8", "torchao_fp8")
FP8_METHODS = ("forge_fp8", "torchao_fp8")
FP8_CAPABILITY = (8, 9)  # Ada and Hopper have FP8 tensor cores
SEQ_LEN, IMAGE_SIZE = 128, 224
DRY_SEQ_LEN, DRY_IMAGE_SIZE = 16, 64
# a layer ran a quantized kernel when it is one of the engine's quantized layers, or a conv/GEMM whose tactic is
# named for it (triton_qgemm_int8_..., triton_qconv_..., cublaslt_int8, ..._fp8); quantize/dequantize layers around an
# FP16 kernel are counted apart (Q/DQ)
QUANTIZED_LAYER_OPS = ("engine.qconv", "engine.qdense")
FLOAT_LAYER_OPS = ("engine.conv", "engine.dense", "matmul", "engine.matmul")
QDQ_OPS = ("quantize", "dequantize")
GENERIC_TACTICS = ("torch", "reference")  # the op's reference code (eager PyTorch on a GPU), any op
QUANTIZED_TACTIC = re.compile(r"int8|fp8|e4m3|(^|_)q(gemm|conv|dense|mm|matmul)", re.IGNORECASE)
# forge_int8 / forge_fp8 against these, per row
PAIRS = {
    "forge_int8": ("forge_fp16", "torchao_int8", "compile_fp16"),
    "forge_fp8": ("forge_fp16", "torchao_fp8", "compile_fp16"),
}
TARGETS = (
    "ResNet-50 INT8 batch 128: >= 1.6x forge_fp16",
    "ResNet-50 INT8 batch 128: >= 45,000 img/s",
    "BERT-base INT8 or FP8 batch 32: >= 1.4x forge_fp16",
    "BERT-base INT8 or FP8 batch 128: >= 1.4x forge_fp16",
    "faster than torchao at the same precision on every row",
    "batch 1: INT8 / FP8 no slower than forge_fp16",
)


# ---------------------------------------------------------------------------------------------------------------
# models and inputs
# ---------------------------------------------------------------------------------------------------------------


def make_inputs(name: str, batch: int, dry_run: bool, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of `name` at `batch` on the CPU (images in float32, BERT's ids and mask in int64)."""
    generator = torch.Generator().manual_seed(seed)
    if name == "bert_base":
        seq = DRY_SEQ_LEN if dry_run else SEQ_LEN
        import transformers

        vocab = transformers.BertConfig().vocab_size
        return (
            torch.randint(0, vocab, (batch, seq), generator=generator),
            torch.ones(batch, seq, dtype=torch.long),
        )
    size = DRY_IMAGE_SIZE if dry_run else IMAGE_SIZE
    return (torch.randn(batch, 3, size, size, generator=generator),)


def to(inputs: tuple[torch.Tensor, ...], device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The inputs on `device`, the floating ones in `dtype` (ids and masks stay int64)."""
    return tuple(t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in inputs)


def rel_err(out: Any, expected: torch.Tensor) -> float:
    """||out - expected|| / ||expected|| of the first output (BERT: last_hidden_state)."""
    actual = _first(out).float()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


# ---------------------------------------------------------------------------------------------------------------
# what the plans chose
# ---------------------------------------------------------------------------------------------------------------


def plan_layers(module) -> list:
    """Every layer (`engine.plan.LayerInfo`: name, op, tactic, precision, macs) of every plan `module` built."""
    return [layer for plans in module.plans().values() for plan in plans for layer in plan.layers]


def quantization_summary(layers: list) -> dict[str, Any]:
    """Which layers ran quantized kernels (op:tactic -> count), which quantized layers ran a generic tactic instead
    (`torch` / `reference`: the op's reference code, no int8/fp8 tensor-core kernel), how many Q/DQ layers stand alone
    (a quantized tensor dequantized for an FP16 kernel, or requantized), and how many conv/GEMM layers ran in floating
    point."""
    kernels: dict[str, int] = {}
    fallback: dict[str, int] = {}
    qdq = float_layers = 0
    for layer in layers:
        key = f"{layer.op}:{layer.tactic}"
        if layer.op in QUANTIZED_LAYER_OPS and layer.tactic in GENERIC_TACTICS:
            fallback[key] = fallback.get(key, 0) + 1
        elif layer.op in QUANTIZED_LAYER_OPS or (layer.op in FLOAT_LAYER_OPS and QUANTIZED_TACTIC.search(layer.tactic)):
            kernels[key] = kernels.get(key, 0) + 1
        elif layer.op in QDQ_OPS:
            qdq += 1
        elif layer.op in FLOAT_LAYER_OPS:
            float_layers += 1
    quantized = sum(kernels.values())
    return {
        "quantized_kernel_layers": quantized,
        "quantized_kernels": kernels,
        "quantized_generic_layers": sum(fallback.values()),
        "quantized_generic": fallback,
        "qdq_layers": qdq,
        "float_conv_gemm_layers": float_layers,
        "uses_quantized_kernels": quantized > 0,
    }


def torchao_scope(model: torch.nn.Module) -> dict[str, int]:
    """What torchao's quantize_ took: the Linear / Conv layers whose weight became a torchao tensor, and the rest."""
    scope = {"linear_quantized": 0, "linear_float": 0, "conv_quantized": 0, "conv_float": 0}
    for module in model.modules():
        kind = (
            "linear" if isinstance(module, torch.nn.Linear) else "conv" if isinstance(module, torch.nn.Conv2d) else ""
        )
        if kind:
            plain = type(module.weight) in (torch.nn.Parameter, torch.Tensor)
            scope[f"{kind}_{'float' if plain else 'quantized'}"] += 1
    return scope


def torchao_config(precision: str):
    """torchao's dynamic-activation config for `precision` ("int8" / "fp8"), by the installed version's names."""
    import torchao.quantization as tq

    if precision == "int8":
        if hasattr(tq, "Int8DynamicActivationInt8WeightConfig"):
            return tq.Int8DynamicActivationInt8WeightConfig()
        return tq.int8_dynamic_activation_int8_weight()  # torchao < 0.10
    if hasattr(tq, "Float8DynamicActivationFloat8WeightConfig"):
        return tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow())  # row-wise: torchao's advice
    return tq.float8_dynamic_activation_float8_weight(granularity=tq.PerRow())


def failure(exc: BaseException) -> dict[str, str]:
    """The exception's first line and the innermost frame of the project's or torchao's code."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if "tensorforge" in f.filename or "torchao" in f.filename
    ]
    where = f"{frames[-1].filename.split('site-packages/')[-1].split('src/')[-1]}:{frames[-1].lineno}" if frames else ""
    message = (str(exc).strip().splitlines() or [""])[0][:400]
    return {"error": f"{type(exc).__name__}: {message}", "where": where}


# ---------------------------------------------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------------------------------------------


class Config:
    """What the methods of one (model, batch) share: the model in float32 on the CPU, the inputs, the reference."""

    def __init__(self, name: str, batch: int, args, device: torch.device) -> None:
        self.name, self.batch, self.args, self.device = name, batch, args, device
        self.dry_run = args.dry_run
        self.dtype = torch.float32 if self.dry_run else torch.float16  # the CPU smoke run stays in float32
        self.model, _ = make_model(name)  # a fresh copy (eval, CPU, float32), batch norms with realistic statistics
        self.cpu_inputs = make_inputs(name, batch, self.dry_run, seed=1)
        self.inputs = to(self.cpu_inputs, device, self.dtype)
        calib_batch = min(batch, args.calib_batch) if args.calib_batch_follows else args.calib_batch
        self.calib = [
            to(make_inputs(name, calib_batch, self.dry_run, seed=100 + i), device, self.dtype)
            for i in range(args.calib_batches)
        ]
        with torch.no_grad():
            self.expected = _first(self.on_device()(*self.inputs)).float()

    def on_device(self, dtype: torch.dtype | None = None) -> torch.nn.Module:
        return copy.deepcopy(self.model).to(self.device, dtype or self.dtype)


def latencies(config: Config, fn: Callable[[], Any]) -> list[float]:
    args = config.args
    if config.device.type == "cuda":
        return cuda_latencies(fn, warmup=args.warmup, iters=args.iters)
    return measure_latencies(fn, config.device, args.warmup, args.iters)


def run_eager(config: Config) -> dict:
    model = config.on_device()
    result = summarize(latencies(config, lambda: model(*config.inputs)), config.batch)
    return result | {"rel_err": rel_err(model(*config.inputs), config.expected)}


def _torch_compile(config: Config, model: torch.nn.Module, mode: str):
    torch._dynamo.reset()
    if config.dry_run:  # a CPU smoke run traces through dynamo without compiling kernels
        return torch.compile(model, backend="eager", dynamic=False)
    return torch.compile(model, mode=mode, dynamic=False)


def run_compile(config: Config) -> dict:
    compiled = _torch_compile(config, config.on_device(), "reduce-overhead")
    out, build_s = timed(lambda: [compiled(*config.inputs) for _ in range(3)][-1])
    error = rel_err(out, config.expected)
    del out
    result = summarize(latencies(config, lambda: compiled(*config.inputs)), config.batch)
    return result | {"build_s": build_s, "rel_err": error, "mode": "reduce-overhead"}


def run_forge(config: Config, precision: str) -> dict:
    extra: dict[str, Any] = {}
    if precision in ("int8", "fp8"):
        extra = {"calib_data": config.calib, "calib_method": config.args.calib_method}

    def build():  # the PyTorch copy is dropped once built: the plans hold their own weights
        model = config.on_device()
        return forge.compile(
            model, config.inputs, precision=precision, device=config.device, cache_dir=config.args.cache_dir, **extra
        ).build_all(config.batch)

    module, build_s = timed(build)
    out, first_call_s = timed(lambda: module(*config.inputs))  # CUDA-graph capture on a GPU
    error = rel_err(out, config.expected)
    del out
    result = summarize(latencies(config, lambda: module(*config.inputs)), config.batch)
    layers = plan_layers(module)
    plans = module.plans()
    result |= {
        "build_s": build_s,
        "first_call_s": first_call_s,
        "rel_err": error,
        "regions": len(module.regions),
        "fallback_nodes": sum(1 for n in module.graph.nodes if n.op != "subgraph"),
        "layers": len(layers),
        "tactics": _tactic_counts(plans),
        "counters": _counters(plans),
        **quantization_summary(layers),
    }
    if config.args.kernels and config.device.type == "cuda":  # where the call's time goes, kernel by kernel
        rows, total_us, launches = kernel_table(lambda: module(*config.inputs), config.args.kernels)
        result["kernels"] = {"total_us": total_us, "launches": launches, "top": rows}
    if extra:
        result["calibration"] = {
            "method": config.args.calib_method,
            "batches": len(config.calib),
            "batch_size": int(config.calib[0][0].shape[0]),
        }
    return result


def run_torchao(config: Config, precision: str) -> dict:
    import torch._inductor.config
    import torchao
    from torchao.quantization import quantize_

    dtype = (
        torch.float32 if config.dry_run else {"bf16": torch.bfloat16, "fp16": torch.float16}[config.args.torchao_dtype]
    )
    model = config.on_device(dtype)
    inductor = torch._inductor.config
    saved = inductor.save_config()  # quantize_ sets torchao's inductor flags process-wide: compile_fp16 keeps its own
    try:
        quantize_(model, torchao_config(precision))  # nn.Linear only (its default filter)
        scope = torchao_scope(model)
        inputs = to(config.cpu_inputs, config.device, dtype)
        compiled = _torch_compile(config, model, config.args.torchao_mode)
        out, build_s = timed(lambda: [compiled(*inputs) for _ in range(3)][-1])
        error = rel_err(out, config.expected)
        del out
        result = summarize(latencies(config, lambda: compiled(*inputs)), config.batch)
    finally:
        inductor.load_config(saved)
    note = ""
    if scope["conv_float"]:
        note = (
            f"torchao quantizes nn.Linear only: {scope['linear_quantized']} Linear quantized, "
            f"{scope['conv_float']} Conv2d left in {str(dtype).removeprefix('torch.')}"
        )
    return result | {
        "build_s": build_s,
        "rel_err": error,
        "torchao": torchao.__version__,
        "config": type(torchao_config(precision)).__name__,
        "dtype": str(dtype).removeprefix("torch."),
        "mode": "eager backend (dry run)" if config.dry_run else config.args.torchao_mode,
        "scope": scope,
        "note": note,
    }


RUNNERS: dict[str, Callable[[Config], dict]] = {
    "eager_fp16": run_eager,
    "compile_fp16": run_compile,
    "forge_fp16": lambda c: run_forge(c, "fp16"),
    "forge_int8": lambda c: run_forge(c, "int8"),
    "forge_fp8": lambda c: run_forge(c, "fp8"),
    "torchao_int8": lambda c: run_torchao(c, "int8"),
    "torchao_fp8": lambda c: run_torchao(c, "fp8"),
}


def speedups(results: dict[str, dict]) -> dict[str, float]:
    """'<quantized>/<other>': other's median over the quantized method's (> 1: the quantized plan is faster)."""
    out = {}
    for quantized, others in PAIRS.items():
        for other in others:
            if "median_ms" in results.get(quantized, {}) and "median_ms" in results.get(other, {}):
                out[f"{quantized}/{other}"] = results[other]["median_ms"] / results[quantized]["median_ms"]
    return out


# ---------------------------------------------------------------------------------------------------------------
# the targets, the table, the chart
# ---------------------------------------------------------------------------------------------------------------


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else "pass" if ok else "FAIL"


def targets(rows: list[dict]) -> list[dict]:
    """Issue 16's targets against what was measured: target, measured, status (pass / FAIL / not measured)."""

    def row(model: str, batch: int) -> dict:
        return next((r for r in rows if r["model"] == model and r["batch"] == batch), {})

    out = []
    resnet = row("resnet50", 128)
    s = resnet.get("speedups", {}).get("forge_int8/forge_fp16")
    out.append(
        {
            "target": TARGETS[0],
            "measured": f"{s:.2f}x" if s else "-",
            "status": _status(None if s is None else s >= 1.6),
        }
    )
    tput = resnet.get("methods", {}).get("forge_int8", {}).get("throughput_per_s")
    out.append(
        {
            "target": TARGETS[1],
            "measured": f"{tput:,.0f} img/s" if tput else "-",
            "status": _status(None if tput is None else tput >= 45_000),
        }
    )
    for i, batch in ((2, 32), (3, 128)):
        sp = row("bert_base", batch).get("speedups", {})
        best = max((sp[k] for k in ("forge_int8/forge_fp16", "forge_fp8/forge_fp16") if k in sp), default=None)
        out.append(
            {
                "target": TARGETS[i],
                "measured": f"{best:.2f}x (best of INT8 / FP8)" if best else "-",
                "status": _status(None if best is None else best >= 1.4),
            }
        )
    versus = [
        (f"{r['model']} b{r['batch']} {q}", r["speedups"][f"{q}/torchao_{q[-4:]}"])
        for r in rows
        for q in ("forge_int8", "forge_fp8")
        if f"{q}/torchao_{q[-4:]}" in r.get("speedups", {})
    ]
    slower = [f"{label} {s:.2f}x" for label, s in versus if s < 1.0]
    out.append(
        {
            "target": TARGETS[4],
            "measured": (
                f"{len(versus) - len(slower)}/{len(versus)} rows faster"
                + (f"; slower: {', '.join(slower)}" if slower else "")
            )
            if versus
            else "-",
            "status": _status(None if not versus else not slower),
        }
    )
    batch1 = [
        (f"{r['model']} {q}", r["speedups"][f"{q}/forge_fp16"])
        for r in rows
        if r["batch"] == 1
        for q in ("forge_int8", "forge_fp8")
        if f"{q}/forge_fp16" in r.get("speedups", {})
    ]
    slower = [f"{label} {s:.2f}x" for label, s in batch1 if s < 1.0]
    out.append(
        {
            "target": TARGETS[5],
            "measured": ", ".join(f"{label} {s:.2f}x" for label, s in batch1) or "-",
            "status": _status(None if not batch1 else not slower),
        }
    )
    return out


def _quant_cell(result: dict) -> str:
    if "quantized_kernel_layers" in result:
        generic = result.get("quantized_generic_layers", 0)
        return (
            f"{result['quantized_kernel_layers']} q-kernels, "
            + (f"{generic} q-layers generic, " if generic else "")
            + f"{result['qdq_layers']} Q/DQ, {result['float_conv_gemm_layers']} float"
        )
    if "scope" in result:
        scope = result["scope"]
        return f"{scope['linear_quantized']} Linear q, {scope['conv_float'] + scope['linear_float']} float"
    return ""


def table(rows: list[dict]) -> str:
    lines = [
        "| model | batch | method | median ms | p90 ms | p99 ms | items/s | vs forge_fp16 | vs torchao | build s "
        "| rel err | quantized layers | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['batch']} "
        if "skipped" in r or ("error" in r and not r.get("methods")):
            reason = f"skipped: {r['skipped']}" if "skipped" in r else r["error"].replace("|", "/")
            lines.append(head + "| - |" + " |" * 9 + f" {reason} |")
            continue
        for method, res in r.get("methods", {}).items():
            cells = [method]
            if "median_ms" not in res:
                reason = res.get("error") or ("skipped: " + res.get("skipped", "?"))
                lines.append(head + "| " + method + " |" + " |" * 9 + f" {reason.replace('|', '/')} |")
                continue
            sp = r.get("speedups", {})
            vs_fp16 = sp.get(f"{method}/forge_fp16")
            vs_ao = sp.get(f"{method}/torchao_{method[-4:]}")
            cells += [
                f"{res['median_ms']:.3f}",
                f"{res['p90_ms']:.3f}",
                f"{res['p99_ms']:.3f}",
                f"{res['throughput_per_s']:,.0f}",
                f"{vs_fp16:.2f}x" if vs_fp16 else "",
                f"{vs_ao:.2f}x" if vs_ao else "",
                f"{res['build_s']:.1f}" if "build_s" in res else "",
                f"{res['rel_err']:.1e}" if "rel_err" in res else "",
                _quant_cell(res),
                res.get("note", ""),
            ]
            lines.append(head + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tactic_lines(rows: list[dict]) -> list[str]:
    """Per forge module: the quantized kernels chosen (op:tactic x count) and the most used tactics."""
    lines = []
    for r in rows:
        for method, res in r.get("methods", {}).items():
            if "tactics" not in res:
                continue
            kernels = ", ".join(f"{k} x{n}" for k, n in sorted(res["quantized_kernels"].items())) or "none"
            generic = res.get("quantized_generic", {})
            if generic:
                kernels += "; quantized layers on a generic tactic: " + ", ".join(
                    f"{k} x{n}" for k, n in sorted(generic.items())
                )
            top = sorted(res["tactics"].items(), key=lambda kv: -kv[1])[:8]
            lines.append(
                f"- {r['model']} b{r['batch']} {method}: quantized kernels: {kernels}; "
                f"top tactics: {', '.join(f'{k} x{n}' for k, n in top)}"
            )
    return lines


def markdown(rows: list[dict], env: dict, args) -> str:
    target_rows = "\n".join(f"| {t['target']} | {t['measured']} | {t['status']} |" for t in targets(rows))
    where = env.get("gpu", "the CPU (smoke run: tiny sizes, float32)")
    timer = "CUDA events" if "gpu" in env else "perf_counter"
    return (
        f"# Quantized plans' speed on {where}, {time.strftime('%Y-%m-%d')}\n\n"
        f"torch {env['torch']}, triton {env.get('triton')}, torchao {env.get('torchao')}; medians of {args.iters} "
        f"calls after {args.warmup} warm-up, {timer} per call; items/s = batch / median. vs forge_fp16 and vs "
        f"torchao (same precision): the other method's median over this row's (> 1: this row is faster). forge "
        f"INT8/FP8: calibration `{args.calib_method}` on {args.calib_batches} random batches; layers left unquantized "
        f'run in FP16. torchao: `quantize_` then `torch.compile(mode="{args.torchao_mode}")` on the '
        f"{args.torchao_dtype.upper()} model; it quantizes nn.Linear only, so on the CNNs its rows have only the "
        f"classifier quantized (the rest is {args.torchao_dtype.upper()} torch.compile). rel err: "
        f"||out - eager FP16|| / ||eager FP16||. quantized layers (forge): layers with an int8/fp8 kernel "
        f"(q-kernels), quantized layers on a generic tactic (torch/reference: the op's reference code, no int8/fp8 "
        f"kernel), quantize/dequantize layers standing alone, conv/GEMM layers in floating point.\n\n"
        f"## Targets (issue 16)\n\n| target | measured | status |\n|---|---|---|\n{target_rows}\n\n"
        f"## Results\n\n{table(rows)}\n\n## Tactics of the tensorforge plans\n\n" + "\n".join(tactic_lines(rows)) + "\n"
    )


def chart(rows: list[dict], path: Path) -> bool:
    """Throughput per model (one panel each), batch (groups) and method (bars), log scale; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    models = list(dict.fromkeys(r["model"] for r in rows if r.get("methods")))
    if not models:
        return False
    methods = [m for m in METHODS if any("median_ms" in r.get("methods", {}).get(m, {}) for r in rows)]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, model in zip(axes[0], models):
        mrows = [r for r in rows if r["model"] == model and r.get("methods")]
        for j, method in enumerate(methods):
            xs, ys = [], []
            for i, r in enumerate(mrows):
                res = r["methods"].get(method, {})
                if "throughput_per_s" in res:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(res["throughput_per_s"])
            bars = ax.bar(xs, ys, width=width, label=method)
            ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=6, rotation=90, padding=2)
        if model == "resnet50":
            ax.axhline(45_000, color="black", linestyle="--", linewidth=0.8, label="target 45,000 img/s (INT8 b128)")
        ax.set_xticks(range(len(mrows)), [f"batch {r['batch']}" for r in mrows])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.margins(y=0.15)
        ax.set_title(model + (" (torchao: Linear only)" if model != "bert_base" else ""))
        ax.set_ylabel("throughput (seq/s)" if model == "bert_base" else "throughput (img/s)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------


class Budget:
    """Time left of --budget-s, and what each method took last (per model, else anywhere) to predict the next."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = seconds, time.perf_counter()
        self.took: dict[tuple[str, str], float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def estimate(self, model: str, method: str) -> float:
        if (model, method) in self.took:
            return self.took[(model, method)]
        return max((s for (_, m), s in self.took.items() if m == method), default=0.0)

    def fits(self, seconds: float) -> bool:
        return self.elapsed() + seconds <= self.seconds


def methods_for(args, device: torch.device) -> dict[str, str | None]:
    """method -> None when it runs here, else why it is skipped."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    out: dict[str, str | None] = {}
    for method in args.methods:
        if method in FP8_METHODS and capability is not None and capability < FP8_CAPABILITY:
            out[method] = f"needs compute capability >= 8.9 (this GPU: {capability[0]}.{capability[1]})"
        else:
            out[method] = None
    return out


def run_config(name: str, batch: int, args, device, budget: Budget, save: Callable[[dict], None]) -> dict:
    row: dict[str, Any] = {"model": name, "batch": batch, "methods": {}}
    save(row)
    start = time.perf_counter()
    try:
        config = Config(name, batch, args, device)
    except Exception as exc:  # noqa: BLE001 - the next configuration may still run
        return row | failure(exc) | {"wall_s": time.perf_counter() - start}
    row["dtype"] = str(config.dtype).removeprefix("torch.")
    for method, why_not in methods_for(args, device).items():
        if why_not is None and not budget.fits(budget.estimate(name, method)):
            why_not = "time budget"
        if why_not is not None:
            row["methods"][method] = {"skipped": why_not}
            continue
        method_start = time.perf_counter()
        if device.type == "cuda":
            fresh_peak()
        try:
            with torch.no_grad():
                result = RUNNERS[method](config)
            if device.type == "cuda":
                result["peak_mem_bytes"] = peak()
        except Exception as exc:  # noqa: BLE001 - a failing method is a result; the others still run
            result = failure(exc)
        torch._dynamo.reset()  # the CUDA graphs and compiled code of torch.compile go with it
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["wall_s"] = time.perf_counter() - method_start
        budget.took[(name, method)] = result["wall_s"]
        row["methods"][method] = result
        row["speedups"] = speedups(row["methods"])
        save(row)  # a run stopped part-way keeps the methods measured so far
        shown = (
            f"{result['median_ms']:.3f} ms, {result['throughput_per_s']:,.0f}/s"
            if "median_ms" in result
            else result.get("error")
        )
        print(f"  {name} b{batch} {method}: {shown} ({result['wall_s']:.1f} s)", flush=True)
    del config
    gc.collect()
    row["wall_s"] = time.perf_counter() - start
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    parser.add_argument("--batches", default=None, help="comma-separated (default 1,32,128; 1,2 on the CPU)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, float32, 3 calls (implied by --device cpu)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per method (default 100; 3 dry)")
    parser.add_argument("--warmup", type=int, default=None, help="calls before timing (default 10; 1 dry)")
    parser.add_argument("--calib-batches", type=int, default=4, help="random calibration batches (default 4)")
    parser.add_argument("--calib-batch", type=int, default=8, help="their batch size (default 8; 2 dry)")
    parser.add_argument(
        "--calib-batch-follows",
        action="store_true",
        help="calibrate at min(batch, --calib-batch) instead of --calib-batch",
    )
    parser.add_argument("--calib-method", default="minmax", help="tensorforge's calibrator (default minmax)")
    parser.add_argument("--torchao-mode", default="max-autotune", help="torch.compile mode of the torchao rows")
    parser.add_argument("--torchao-dtype", choices=("bf16", "fp16"), default="bf16", help="torchao's model dtype")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="start no configuration (nor method) that would end past this many seconds from the start, by what "
        "the same method took last (default 540: one GPU call is limited to 600 s)",
    )
    parser.add_argument(
        "--kernels",
        type=int,
        default=0,
        help="record each tensorforge row's N most expensive CUDA kernels per call (torch.profiler; default 0: off)",
    )
    parser.add_argument("--cache-dir", default=None, help="tensorforge's plan cache (default: a fresh temp dir)")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--tag", default="quant_speed", help="the output files' name (default quant_speed)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: choose from {', '.join(MODELS)}")
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
    args.methods = [m for m in METHODS if m in args.methods]  # the fixed order: forge before the slow compiles
    args.dry_run = args.dry_run or args.device == "cpu"
    args.batches = (
        [int(b) for b in args.batches.split(",")] if args.batches else list((1, 2) if args.dry_run else BATCHES)
    )
    args.iters = args.iters or (3 if args.dry_run else 100)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.dry_run else 10)
    if args.dry_run and args.calib_batch == 8:
        args.calib_batch = 2
    args.cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="tforge-quant-speed-")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    refusal = device_refusal(device, args.dry_run)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    env = environment()
    try:
        import torchao

        env["torchao"] = torchao.__version__
    except Exception as exc:  # noqa: BLE001 - the torchao rows will say why
        env["torchao"] = f"not importable: {type(exc).__name__}: {exc}"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{args.tag}.json"
    budget = Budget(args.budget_s)
    rows: list[dict] = []
    settings = {
        k: getattr(args, k)
        for k in (
            "models",
            "batches",
            "methods",
            "device",
            "dry_run",
            "iters",
            "warmup",
            "calib_batches",
            "calib_batch",
        )
    } | {k: getattr(args, k) for k in ("calib_method", "torchao_mode", "torchao_dtype", "budget_s")}

    def save(current: dict | None = None) -> None:
        done = rows + ([current] if current is not None and current not in rows else [])
        doc = {
            "date": time.strftime("%Y-%m-%d"),
            "environment": env,
            "settings": settings,
            "results": done,
            "targets": targets(done),
        }
        json_path.write_text(json.dumps(doc, indent=2, default=str))

    configs = [(m, b) for m in args.models for b in args.batches]
    print(f"{len(configs)} configurations, methods {', '.join(args.methods)}; budget {args.budget_s:.0f} s", flush=True)
    for i, (name, batch) in enumerate(configs, 1):
        predicted = sum(budget.estimate(name, m) for m in args.methods)
        if not budget.fits(predicted):
            row = {"model": name, "batch": batch, "skipped": "time budget", "wall_s": 0.0}
        else:
            row = run_config(name, batch, args, device, budget, save)
        rows.append(row)
        save()
        print(
            f"[{i}/{len(configs)}] {name} batch {batch}: {row['wall_s']:.1f} s (total {budget.elapsed():.0f} s)"
            + (f" {row.get('skipped') or row.get('error')}" if "skipped" in row or "error" in row else ""),
            flush=True,
        )
    text = markdown(rows, env, args)
    (out_dir / f"{args.tag}.md").write_text(text)
    charted = chart(rows, out_dir / f"{args.tag}.png")
    print(text, flush=True)
    print(
        f"wrote {json_path}, {out_dir / (args.tag + '.md')}"
        + (f", {out_dir / (args.tag + '.png')}" if charted else " (no chart: matplotlib is not installed)"),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
