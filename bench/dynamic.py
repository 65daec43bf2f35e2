"""Issue 14's targets on the GPU: one plan per optimization profile, measured against plans built for exact shapes,
PyTorch eager, `torch.compile(dynamic=True)` and onnxruntime, in one run.

1. `bert`: BERT-base (Hugging Face BertModel, BertConfig() defaults, random weights, FP16), input_ids [batch, seq]:
   one module with the profile seq 16..512 (opt 128), declared as `Dim("seq")` and `profiles=[{"seq": ...}]`;
   latency at seq 64, 128, 256 beside a plan built for exactly that seq, eager, and torch.compile(dynamic=True)
   (modes default and reduce-overhead); the plan builds of the whole run; errors against eager FP16 and FP32;
   then 200 calls at random lengths (seeded): GPU memory before/after, the CUDA graphs live/captured/evicted
   (the module's LRU, RuntimeOptions.cuda_graph_cache_size), builds, outputs against eager on a sample.
   Batch 1, then batch 8 last, if the budget allows.
2. `resnet`: ResNet-50 (torchvision, random weights, FP16), image size h, w in 224..512: one profile (opt 384) at
   224 and 384 against static plans for exactly those sizes, eager and torch.compile(dynamic=True); where one
   profile misses 10% at either size, two profiles (224..320 opt 224, 321..512 opt 384) as well.
3. `onnx`: the PaddleOCR detection/recognition/classifier models of `rapidocr_onnxruntime` and silero-vad, FP32,
   imported with their dynamic dimensions kept (`from_onnx(dynamic_shapes=True)`, no sizes given), one profile
   over three sizes, against onnxruntime's CPU provider (max relative error, target 1e-4) and onnxruntime's latency
   (CUDA provider where installed). Where the import with every dimension kept fails, the failure is recorded
   (node, op, message) and the model's documented fixed size is pinned (`input_shapes`, e.g. the recognizer's
   height 48), the other dimensions staying symbolic; both are reported.

    python bench/dynamic.py [--parts bert,resnet,onnx] [--budget-s 480] [--onnx-dir .gpu_onnx]
    python bench/dynamic.py --device cpu --dry-run      # tiny sizes, FP32, torch.compile(backend="eager")
    bash bench/pack_onnx_models.sh                      # the .onnx files into .gpu_onnx/ (carried to the GPU)
    bash bench/gpu_check.sh dynamic [ARGS...]           # on the GPU machine, results under $OUT

Writes $OUT/dynamic.json after every configuration (a run cut short keeps what it measured) and $OUT/dynamic.md at
the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib.util
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "src"))
import tensorforge as forge  # noqa: E402
import zoo_catalog  # noqa: E402
from common import device_refusal, environment, summarize  # noqa: E402
from tensorforge.cli import measure_latencies  # noqa: E402
from tensorforge.ir import SymExpr  # noqa: E402
from zoo_gpu import _first, _rel_err, _sync  # noqa: E402

PARTS = ("bert", "resnet", "onnx")
TARGET_RATIO = 1.10  # the "within 10%"
ONNX_REL_TOL = 1e-4


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run: real ones on the GPU, tiny ones for --dry-run on a CPU."""

    seq_profile: tuple[int, int, int]  # min, opt, max
    seqs: tuple[int, ...]
    bert_batches: tuple[int, ...]
    bert_config: dict[str, int]
    random_calls: int
    image_profile: tuple[int, int, int]
    image_two_profiles: tuple[tuple[int, int, int], tuple[int, int, int]]
    images: tuple[int, ...]
    resnet: str
    iters: int
    warmup: int


GPU_SIZES = Sizes(
    seq_profile=(16, 128, 512),
    seqs=(64, 128, 256),
    bert_batches=(1, 8),
    bert_config={},  # BertConfig() defaults: BERT-base
    random_calls=200,
    image_profile=(224, 384, 512),
    image_two_profiles=((224, 224, 320), (321, 384, 512)),
    images=(224, 384),
    resnet="resnet50",
    iters=100,
    warmup=10,
)
DRY_SIZES = Sizes(
    seq_profile=(16, 128, 512),
    seqs=(64, 128, 256),
    bert_batches=(1, 2),
    bert_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    random_calls=200,
    image_profile=(40, 64, 96),  # above 32: there the last feature map is 1x1, which torch.export guards apart
    image_two_profiles=((40, 40, 56), (57, 64, 96)),
    images=(40, 64),
    resnet="resnet18",  # the CPU proves the code path; ResNet-50's build there costs minutes
    iters=3,
    warmup=1,
)
# seconds a configuration takes on an H100 (measured or guessed high): --budget-s starts none that would not end
ESTIMATE_S = {"bert": 200.0, "resnet": 170.0, "onnx": 20.0}
CHECK_EVERY = 20  # of the random calls, every CHECK_EVERY-th is compared with eager


# -- shared measuring --------------------------------------------------------------------------------------------


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _times(target: Callable, inputs: Sequence[Any], device: torch.device, sizes: Sizes, batch: int) -> dict:
    """`target(*inputs)`'s latency summary (medians of CUDA-event timings after warm-up)."""
    call = functools.partial(target, *inputs)
    return summarize(measure_latencies(call, device, sizes.warmup, sizes.iters), batch)


def _engine_share(module: forge.Module) -> dict:
    """What ran in the engine: regions, the partition's node and MAC shares, nodes left to PyTorch/onnxruntime."""
    report = module.report
    return {
        "regions": len(module.regions),
        "node_share": report.node_share,
        "mac_share": report.mac_share,
        "fallback_nodes": sum(1 for n in module.graph.nodes if n.op != "subgraph"),
    }


def _plans(module: forge.Module) -> dict:
    """The plan builds this module made and the profile of each plan it holds."""
    return {
        "builds": module._cache.builds,
        "profiles": sorted(p.profile.describe() for plans in module.plans().values() for p in plans),
    }


def _compile_modes(dry_run: bool) -> dict[str, dict]:
    """torch.compile's variants: on the CPU the eager backend (dynamo traces, no kernels), once."""
    if dry_run:
        return {"default": {"backend": "eager"}}
    return {"default": {}, "reduce-overhead": {"mode": "reduce-overhead"}}


def _exact_plans(model, inputs: dict, expected: dict, precision: str, device, sizes, batch: int) -> dict[str, Any]:
    """For each size, a module compiled for exactly that shape (no dynamic dimension): its build time, latency,
    error against eager and plans; the baseline a dynamic plan is held to."""
    exact: dict[str, Any] = {}
    for s, x in inputs.items():
        start = time.perf_counter()
        static = forge.compile(model, x, precision=precision, device=device).build_all(batch)
        build_s = time.perf_counter() - start
        out = _first(static(*x)).float()
        exact[str(s)] = {
            **_times(static, x, device, sizes, batch),
            "build_s": build_s,
            "rel_err_vs_eager": _rel_err(out, expected[s]),
            **_plans(static),
        }
        del static
        _free(device)
    return exact


def _torch_compile_dynamic(
    model: torch.nn.Module, inputs_by_size: dict[Any, tuple], device: torch.device, sizes: Sizes, batch: int, dry: bool
) -> dict:
    """torch.compile(dynamic=True) per mode: the latency at each size, its compile time (first calls) and how many
    graphs dynamo compiled over all sizes (1 when dynamic shapes held)."""
    from torch._dynamo.utils import counters

    out: dict[str, Any] = {}
    for mode, keywords in _compile_modes(dry).items():
        torch._dynamo.reset()
        counters.clear()
        start = time.perf_counter()
        compiled = torch.compile(model, dynamic=True, **keywords)
        for inputs in inputs_by_size.values():
            for _ in range(3):  # compiled, then reduce-overhead's warm-up and recording
                compiled(*inputs)
        _sync(device)
        row: dict[str, Any] = {"first_calls_s": time.perf_counter() - start}
        row["by_size"] = {str(k): _times(compiled, v, device, sizes, batch) for k, v in inputs_by_size.items()}
        row["graphs_compiled"] = counters["stats"].get("unique_graphs", 0)
        out[mode] = row
        del compiled
        torch._dynamo.reset()
        _free(device)
    best = {}
    for key in inputs_by_size:
        mode = min(out, key=lambda m: out[m]["by_size"][str(key)]["median_ms"])
        best[str(key)] = {"mode": mode, "median_ms": out[mode]["by_size"][str(key)]["median_ms"]}
    return {"modes": out, "best": best}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


# -- 1. BERT -------------------------------------------------------------------------------------------------------


def bench_bert(batch: int, *, device: torch.device, sizes: Sizes, dry_run: bool, random_calls: bool) -> dict:
    import transformers
    from torch.export import Dim

    precision = "fp32" if dry_run else "fp16"
    dtype = torch.float32 if dry_run else torch.float16
    torch.manual_seed(0)
    config = transformers.BertConfig(**sizes.bert_config)
    model = transformers.BertModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    inputs = {s: (torch.randint(0, config.vocab_size, (batch, s), generator=gen).to(device),) for s in sizes.seqs}
    lo, opt, hi = sizes.seq_profile
    row: dict[str, Any] = {
        "part": "bert",
        "model": "bert-base" if not sizes.bert_config else "bert-tiny (dry run)",
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "profile": {"seq": [lo, opt, hi]},
        "seqs": list(sizes.seqs),
    }
    with torch.no_grad():
        model = model.to(device)
        reference32 = {s: _first(model(*x)).float() for s, x in inputs.items()}
        model = model.to(dtype)
        expected = {s: _first(model(*x)).float() for s, x in inputs.items()}
        row["eager"] = {str(s): _times(model, x, device, sizes, batch) for s, x in inputs.items()}

        # one module for the whole range: Dim("seq") names the symbol, the declared profile is what it is built for
        start = time.perf_counter()
        example = (torch.randint(0, config.vocab_size, (batch, opt), generator=gen).to(device),)
        module = forge.compile(
            model,
            example,
            precision=precision,
            device=device,
            dynamic_shapes={"input_ids": {1: Dim("seq", min=lo, max=hi)}},
            profiles=[{"seq": (lo, opt, hi)}],
        ).build_all(batch)
        dynamic: dict[str, Any] = {"build_s": time.perf_counter() - start, **_engine_share(module)}
        for s, x in inputs.items():
            out = _first(module(*x)).float()
            dynamic[str(s)] = {
                **_times(module, x, device, sizes, batch),
                "rel_err_vs_eager": _rel_err(out, expected[s]),
                "rel_err_vs_fp32": _rel_err(out, reference32[s]),
            }
        dynamic["plans_after_sizes"] = _plans(module)
        row["forge_dynamic"] = dynamic
        if random_calls:
            row["random_calls"] = _random_calls(module, model, config.vocab_size, batch, device, sizes, dry_run)
        row["forge_dynamic"]["plans_at_end"] = _plans(module)
        del module
        _free(device)

        row["forge_exact"] = _exact_plans(model, inputs, expected, precision, device, sizes, batch)
        row["compile_dynamic"] = _torch_compile_dynamic(model, inputs, device, sizes, batch, dry_run)

    ratios = {}
    for s in sizes.seqs:
        mine = row["forge_dynamic"][str(s)]["median_ms"]
        ratios[str(s)] = {
            "dynamic_vs_exact": _ratio(mine, row["forge_exact"][str(s)]["median_ms"]),
            "dynamic_vs_best_compile": _ratio(mine, row["compile_dynamic"]["best"][str(s)]["median_ms"]),
            "dynamic_vs_eager": _ratio(mine, row["eager"][str(s)]["median_ms"]),
        }
    row["ratios"] = ratios
    builds = row["forge_dynamic"]["plans_at_end"]["builds"]
    row["targets"] = {
        "dynamic_within_10pct_of_exact": all(r["dynamic_vs_exact"] <= TARGET_RATIO for r in ratios.values()),
        "dynamic_within_10pct_of_best_compile": all(
            r["dynamic_vs_best_compile"] <= TARGET_RATIO for r in ratios.values()
        ),
        "one_build": builds == row["forge_dynamic"]["regions"],
    }
    del model
    _free(device)
    return row


def _random_calls(
    module: forge.Module,
    model: torch.nn.Module,
    vocab: int,
    batch: int,
    device: torch.device,
    sizes: Sizes,
    dry_run: bool,
) -> dict:
    """`sizes.random_calls` calls at seeded random lengths inside the profile: memory, the CUDA-graph LRU, builds,
    and every CHECK_EVERY-th output against eager."""
    lo, _, hi = sizes.seq_profile
    rng = random.Random(14)
    lengths = [rng.randint(lo, hi) for _ in range(sizes.random_calls)]
    gen = torch.Generator().manual_seed(2)
    cuda = device.type == "cuda"

    def memory() -> dict | None:
        if not cuda:
            return None
        torch.cuda.synchronize(device)
        return {
            "allocated_bytes": torch.cuda.memory_allocated(device),
            "reserved_bytes": torch.cuda.memory_reserved(device),
            "max_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "max_allocated_bytes": torch.cuda.max_memory_allocated(device),
        }

    builds_before = module._cache.builds
    _free(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    before = memory()
    trajectory, errors = [], []
    start = time.perf_counter()
    for i, length in enumerate(lengths, 1):
        ids = torch.randint(0, vocab, (batch, length), generator=gen).to(device)
        out = _first(module(ids)).float()
        if i % CHECK_EVERY == 0 or i == 1:
            errors.append({"call": i, "seq": length, "rel_err_vs_eager": _rel_err(out, _first(model(ids)).float())})
        if cuda and i % 25 == 0:
            trajectory.append({"call": i, "allocated_bytes": torch.cuda.memory_allocated(device)})
    wall_s = time.perf_counter() - start
    after = memory()
    runner = module._graph_runner
    tolerance = 1e-4 if dry_run else 2e-2
    return {
        "calls": len(lengths),
        "distinct_lengths": len(set(lengths)),
        "wall_s": wall_s,
        "memory_before": before,
        "memory_after": after,
        "allocated_trajectory": trajectory,
        "cuda_graphs": None
        if runner is None
        else {"live": runner.captured, "max_graphs": runner.max_graphs, **dataclasses.asdict(runner.stats)},
        "builds_during": module._cache.builds - builds_before,
        "checked": errors,
        "max_rel_err_vs_eager": max(e["rel_err_vs_eager"] for e in errors),
        "all_match": all(e["rel_err_vs_eager"] <= tolerance for e in errors),
        "tolerance": tolerance,
    }


# -- 2. ResNet-50 --------------------------------------------------------------------------------------------------


def bench_resnet(*, device: torch.device, sizes: Sizes, dry_run: bool) -> dict:
    import torchvision
    from torch.export import Dim

    precision = "fp32" if dry_run else "fp16"
    dtype = torch.float32 if dry_run else torch.float16
    torch.manual_seed(0)
    model = torchvision.models.get_model(sizes.resnet, weights=None)
    zoo_catalog._calibrate_batch_norm(model, torch.randn(8, 3, sizes.images[0], sizes.images[0]))
    model = model.eval().to(device, dtype)
    gen = torch.Generator().manual_seed(1)
    inputs = {s: (torch.randn(1, 3, s, s, generator=gen).to(device, dtype),) for s in sizes.images}
    lo, opt, hi = sizes.image_profile
    row: dict[str, Any] = {
        "part": "resnet",
        "model": sizes.resnet,
        "batch": 1,
        "precision": precision,
        "device": str(device),
        "profile": {"h": [lo, opt, hi], "w": [lo, opt, hi]},
        "images": list(sizes.images),
    }
    spec = {"x": {2: Dim("h", min=lo, max=hi), 3: Dim("w", min=lo, max=hi)}}
    example = (torch.randn(1, 3, opt, opt, generator=gen).to(device, dtype),)

    def dynamic_module(profiles: list[dict]) -> dict:
        start = time.perf_counter()
        module = forge.compile(
            model, example, precision=precision, device=device, dynamic_shapes=spec, profiles=profiles
        ).build_all(1)
        result: dict[str, Any] = {"build_s": time.perf_counter() - start, **_engine_share(module)}
        for s, x in inputs.items():
            out = _first(module(*x)).float()
            result[str(s)] = {**_times(module, x, device, sizes, 1), "rel_err_vs_eager": _rel_err(out, expected[s])}
        result["plans"] = _plans(module)
        del module
        _free(device)
        return result

    with torch.no_grad():
        expected = {s: _first(model(*x)).float() for s, x in inputs.items()}
        row["eager"] = {str(s): _times(model, x, device, sizes, 1) for s, x in inputs.items()}
        row["forge_dynamic"] = dynamic_module([{"h": (lo, opt, hi), "w": (lo, opt, hi)}])
        exact = row["forge_exact"] = _exact_plans(model, inputs, expected, precision, device, sizes, 1)

        def ratios(variant: str) -> dict:
            return {str(s): _ratio(row[variant][str(s)]["median_ms"], exact[str(s)]["median_ms"]) for s in sizes.images}

        row["ratios_dynamic_vs_exact"] = ratios("forge_dynamic")
        met = all(r <= TARGET_RATIO for r in row["ratios_dynamic_vs_exact"].values())
        if not met or dry_run:  # the dry run proves this path too
            short, long = sizes.image_two_profiles
            row["forge_two_profiles"] = dynamic_module(
                [{"h": short, "w": short}, {"h": long, "w": long}],
            )
            row["ratios_two_profiles_vs_exact"] = ratios("forge_two_profiles")
        row["compile_dynamic"] = _torch_compile_dynamic(model, inputs, device, sizes, 1, dry_run)
    row["ratios_dynamic_vs_best_compile"] = {
        str(s): _ratio(row["forge_dynamic"][str(s)]["median_ms"], row["compile_dynamic"]["best"][str(s)]["median_ms"])
        for s in sizes.images
    }
    row["targets"] = {
        "one_profile_within_10pct_of_static": met,
        "two_profiles_within_10pct_of_static": None
        if "ratios_two_profiles_vs_exact" not in row
        else all(r <= TARGET_RATIO for r in row["ratios_two_profiles_vs_exact"].values()),
    }
    return row


# -- 3. ONNX models ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxCase:
    """One real ONNX model: its file, the package it ships in, and the sizes it runs at."""

    file: str
    package: str  # where the file ships (site-packages/<package>/...)
    package_dir: str
    shapes: tuple[dict[str, tuple[int, ...]], ...]  # per size, each float input's shape
    fixed: dict[str, Any] = field(default_factory=dict)  # inputs of one value at every size (silero's sr)
    # sizes pinned where the import with every dimension kept fails: the model's documented fixed size, -1 keeps
    # a dimension symbolic
    pinned: dict[str, tuple[int | SymExpr, ...]] | None = None
    note: str = ""


def _image(n: int, h: int, w: int) -> dict[str, tuple[int, ...]]:
    return {"x": (n, 3, h, w)}


def _vad(batch: int) -> dict[str, tuple[int, ...]]:
    return {"input": (batch, 576), "state": (2, batch, 128)}


OCR = ("rapidocr_onnxruntime", "models")
VAD = ("silero_vad", "data")
SILERO_WINDOW = "silero-vad's 16 kHz window: 512 samples and 64 of context"
ONNX_CASES = {
    "ppocr-det": OnnxCase(
        "ch_PP-OCRv4_det_infer.onnx",
        *OCR,
        shapes=(_image(1, 320, 320), _image(1, 480, 640), _image(1, 736, 736)),
        # the sides stated as multiples of 32, which the FPN's sums of upsampled and finer maps need
        pinned={"x": (-1, 3, 32 * SymExpr.symbol("h"), 32 * SymExpr.symbol("w"))},
        note="sizes multiples of 32 (the FPN adds upsampled maps to finer ones)",
    ),
    "ppocr-rec": OnnxCase(
        "ch_PP-OCRv4_rec_infer.onnx",
        *OCR,
        shapes=(_image(1, 48, 100), _image(1, 48, 320), _image(1, 48, 480)),
        pinned={"x": (-1, 3, 48, -1)},
        note="text lines of height 48",
    ),
    "ppocr-cls": OnnxCase(
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        *OCR,
        shapes=(_image(1, 48, 100), _image(1, 48, 192), _image(1, 48, 320)),
        pinned={"x": (-1, 3, 48, -1)},
        note="text lines of height 48",
    ),
    "silero-vad-16k-op15": OnnxCase(
        "silero_vad_16k_op15.onnx",
        *VAD,
        shapes=(_vad(1), _vad(2), _vad(4)),
        fixed={"sr": 16000},
        pinned={"input": (-1, 576)},
        note=SILERO_WINDOW + "; the batch varies",
    ),
    "silero-vad-sequence": OnnxCase(
        "silero_vad_16k_sequence.onnx",
        *VAD,
        shapes=tuple({"input": (n, 576), "h": (1, 1, 128), "c": (1, 1, 128)} for n in (1, 4, 16)),
        note="a sequence of 576-sample windows",
    ),
    "silero-vad": OnnxCase(
        "silero_vad.onnx",
        *VAD,
        shapes=(_vad(1), _vad(2), _vad(4)),
        fixed={"sr": 16000},
        pinned={"input": (-1, 576), "state": (2, -1, 128)},
        note=SILERO_WINDOW + "; the batch varies",
    ),
    "silero-vad-ifless": OnnxCase(
        "silero_vad_op18_ifless.onnx",
        *VAD,
        shapes=(_vad(1), _vad(2), _vad(4)),
        fixed={"sr": 16000},
        note="the model is one If on sr (onnxruntime runs it as one node)",
    ),
}


def onnx_path(case: OnnxCase, onnx_dir: Path | None) -> Path | None:
    """The model file: in --onnx-dir (bench/pack_onnx_models.sh's copy), else in its installed package."""
    if onnx_dir is not None and (onnx_dir / case.file).is_file():
        return onnx_dir / case.file
    spec = importlib.util.find_spec(case.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / case.package_dir / case.file
    return path if path.is_file() else None


def onnx_feeds(case: OnnxCase, size: int, model_inputs: Sequence[Any]) -> list[torch.Tensor]:
    """The inputs of size `size` (seeded), in the graph's input order."""
    gen = torch.Generator().manual_seed(size)
    shapes = case.shapes[size]
    feeds = []
    for value in model_inputs:
        if value.name in case.fixed:
            feeds.append(torch.tensor(case.fixed[value.name]))
        elif value.name in ("state", "h", "c"):  # recurrent state: small, as after a few windows
            feeds.append(torch.randn(shapes[value.name], generator=gen) * 0.1)
        else:
            feeds.append(torch.randn(shapes[value.name], generator=gen))
    return feeds


def import_error(exc: BaseException) -> dict:
    """An import failure as (node, op, message): the frontend's message names the node and op first."""
    message = str(exc)
    head = message.split(":", 1)[0]
    node = head.split("'")[1] if head.startswith("node '") and head.count("'") >= 2 else None
    op = head.rsplit("(", 1)[1].rstrip(")") if node and "(" in head else None
    return {"type": type(exc).__name__, "node": node, "op": op, "message": message[:2000]}


def symbol_profile(graph: Any, feeds_per_size: Sequence[Sequence[torch.Tensor]]) -> dict[str, tuple[int, int, int]]:
    """One profile over the sizes: each symbol from its smallest to its largest size, opt at the middle size."""
    from tensorforge.ir.execute import bind_symbols

    envs = [bind_symbols(graph, feeds) for feeds in feeds_per_size]
    middle = envs[len(envs) // 2]
    return {s: (min(e[s] for e in envs), middle[s], max(e[s] for e in envs)) for s in middle}


def bench_onnx(name: str, *, device: torch.device, sizes: Sizes, onnx_dir: Path | None, dry_run: bool) -> dict:
    from tensorforge.frontends import from_onnx

    case = ONNX_CASES[name]
    row: dict[str, Any] = {"part": "onnx", "model": name, "file": case.file, "precision": "fp32", "note": case.note}
    path = onnx_path(case, onnx_dir)
    if path is None:
        row["skipped"] = f"{case.file} is neither in --onnx-dir nor in an installed {case.package}"
        return row
    # import failures are results: recorded as (node, op, message), then the model's pinned size tried
    try:
        graph = from_onnx(path, dynamic_shapes=True)
        row["import"] = "every dynamic dimension kept"
    except Exception as exc:  # noqa: BLE001
        row["import_kept_error"] = import_error(exc)
        if case.pinned is None:
            row["skipped"] = "the import with every dimension kept failed, and no size can be pinned"
            return row
        try:
            graph = from_onnx(path, dynamic_shapes=True, input_shapes=case.pinned)
        except Exception as exc:  # noqa: BLE001
            row["import_pinned_error"] = import_error(exc)
            row["skipped"] = f"the import failed with every dimension kept and with {case.pinned} pinned"
            return row
        row["import"] = f"pinned {case.pinned}, the other dynamic dimensions kept"
    row["inputs"] = {v.name: str(v.type) for v in graph.inputs}
    row["outputs"] = [str(v.type) for v in graph.outputs]
    feeds = [onnx_feeds(case, i, graph.inputs) for i in range(len(case.shapes))]
    profile = symbol_profile(graph, feeds)
    row["profile"] = {s: list(r) for s, r in profile.items()}
    partitioned, config = forge.partition_for_tensorforge(graph, use_implicit_batch=False)
    # FP32 without TF32: the comparison is against onnxruntime's FP32 within 1e-4
    module = forge.build(partitioned, config, device=device, tf32=False, profiles=[profile])
    start = time.perf_counter()
    module.build_all()
    row["build_s"] = time.perf_counter() - start
    row.update(_engine_share(module))
    row["opaque_nodes"] = sorted({n.op for n in graph.opaque_nodes()})
    builds_after_build_all = module._cache.builds
    reference, timed_ort, note = _onnxruntime(path, device)
    if note:
        row["onnxruntime_note"] = note
    per_size = {}
    for i, inputs in enumerate(feeds):
        key = "x".join(str(d) for d in case.shapes[i][graph.inputs[0].name])
        on_device = [t.to(device) for t in inputs]
        outs = module(*on_device)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        result: dict[str, Any] = {"forge": _times(module, on_device, device, sizes, 1)}
        if reference is not None:
            expected = reference(graph.inputs, inputs)
            result["max_rel_err_vs_onnxruntime"] = max(
                _rel_err(a.float().cpu(), e.float()) for a, e in zip(outs, expected)
            )
            result["max_abs_err_vs_onnxruntime"] = max(
                (a.float().cpu() - e.float()).abs().max().item() for a, e in zip(outs, expected)
            )
            # relative to the largest output: a detector's probability map of a noise image is ~1e-4 everywhere, so
            # there the absolute error (of probabilities) is the measure
            result["within_tolerance"] = (
                result["max_rel_err_vs_onnxruntime"] <= ONNX_REL_TOL
                or result["max_abs_err_vs_onnxruntime"] <= ONNX_REL_TOL * 1e-2
            )
        if timed_ort is not None:
            result["onnxruntime"] = timed_ort(graph.inputs, inputs, sizes)
            result["speedup_vs_onnxruntime"] = _ratio(result["onnxruntime"]["median_ms"], result["forge"]["median_ms"])
        per_size[key] = result
    row["sizes"] = per_size
    row["plans"] = _plans(module)
    row["rebuilds_inside_profile"] = module._cache.builds - builds_after_build_all
    row["targets"] = {
        "matches_onnxruntime_1e-4": None
        if reference is None
        else all(r.get("within_tolerance", False) for r in per_size.values()),
        "no_rebuild": row["rebuilds_inside_profile"] == 0,
        "dims_kept": "import_kept_error" not in row,
    }
    del module
    _free(device)
    return row


def _onnxruntime(path: Path, device: torch.device) -> tuple[Callable | None, Callable | None, str | None]:
    """(reference outputs on the CPU provider, latency on the CUDA provider where there is one, else the CPU's;
    a note when onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, None, "onnxruntime is not installed here: no reference and no latency comparison"
    reference_session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    timed_session = (
        ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        if cuda
        else reference_session
    )

    def feeds_of(values: Sequence[Any], inputs: Sequence[torch.Tensor]) -> dict:
        return {v.name: t.numpy() for v, t in zip(values, inputs)}

    def reference(values: Sequence[Any], inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.from_numpy(r) for r in reference_session.run(None, feeds_of(values, inputs))]

    def timed(values: Sequence[Any], inputs: Sequence[torch.Tensor], sizes: Sizes) -> dict:
        feeds = feeds_of(values, inputs)
        call = functools.partial(timed_session.run, None, feeds)
        # numpy in and out: on the CUDA provider the host<->device copies are in each call
        return {
            **summarize(measure_latencies(call, torch.device("cpu"), sizes.warmup, sizes.iters), 1),
            "provider": timed_session.get_providers()[0],
        }

    note = None if cuda or device.type == "cpu" else "onnxruntime has no CUDA provider here: its latency is the CPU's"
    return reference, timed, note


# -- the run -------------------------------------------------------------------------------------------------------


def configurations(parts: Sequence[str], sizes: Sizes) -> list[tuple[str, Any]]:
    """In order of importance: BERT at batch 1, ResNet, the ONNX models, then BERT at the larger batch."""
    configs: list[tuple[str, Any]] = []
    if "bert" in parts:
        configs.append(("bert", sizes.bert_batches[0]))
    if "resnet" in parts:
        configs.append(("resnet", 1))
    if "onnx" in parts:
        configs += [("onnx", name) for name in ONNX_CASES]
    if "bert" in parts:
        configs += [("bert", b) for b in sizes.bert_batches[1:]]
    return configs


def run_one(kind: str, what: Any, *, device: torch.device, sizes: Sizes, args: argparse.Namespace) -> dict:
    if kind == "bert":
        first = what == sizes.bert_batches[0]
        return bench_bert(what, device=device, sizes=sizes, dry_run=args.dry_run, random_calls=first)
    if kind == "resnet":
        return bench_resnet(device=device, sizes=sizes, dry_run=args.dry_run)
    onnx_dir = Path(args.onnx_dir) if args.onnx_dir else None
    return bench_onnx(what, device=device, sizes=sizes, onnx_dir=onnx_dir, dry_run=args.dry_run)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def report(rows: list[dict], env: dict, sizes: Sizes) -> str:
    lines = [
        f"# Dynamic shapes (issue 14) on {env.get('gpu', 'the CPU (dry run)')}, {time.strftime('%Y-%m-%d')}",
        "",
        f"torch {env['torch']}, triton {env.get('triton')}; medians of {sizes.iters} calls after {sizes.warmup} "
        f"warm-up; every number of a table from the same run. Target ratios <= {TARGET_RATIO}.",
        "",
    ]
    failed = [r for r in rows if "error" in r or "skipped" in r]
    onnx = [r for r in rows if r.get("part") == "onnx"]  # failures shown in their table
    bert = [r for r in rows if r.get("part") == "bert" and r not in failed]
    if bert:
        lines += [
            "## BERT, one profile seq 16..512 (opt 128)",
            "",
            "| batch | seq | eager ms | compile best ms (mode) | exact plan ms | dynamic ms | dyn/exact | "
            "dyn/compile | rel err (fp16 eager / fp32) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in bert:
            for s in r["seqs"]:
                d, best = r["forge_dynamic"][str(s)], r["compile_dynamic"]["best"][str(s)]
                ratio = r["ratios"][str(s)]
                lines.append(
                    f"| {r['batch']} | {s} | {r['eager'][str(s)]['median_ms']:.3f} | {best['median_ms']:.3f} "
                    f"({best['mode']}) | {r['forge_exact'][str(s)]['median_ms']:.3f} | {d['median_ms']:.3f} | "
                    f"{ratio['dynamic_vs_exact']:.2f} | {ratio['dynamic_vs_best_compile']:.2f} | "
                    f"{d['rel_err_vs_eager']:.1e} / {d['rel_err_vs_fp32']:.1e} |"
                )
        lines.append("")
        for r in bert:
            plans = r["forge_dynamic"]["plans_at_end"]
            lines.append(
                f"- batch {r['batch']}: {plans['builds']} plan build(s) over the run for "
                f"{r['forge_dynamic']['regions']} region(s), profiles {plans['profiles']}; build "
                f"{r['forge_dynamic']['build_s']:.1f} s; targets {r['targets']}"
            )
            calls = r.get("random_calls")
            if calls:
                mb = lambda m, k: "" if m is None else f"{m[k] / 2**20:.0f} MiB"  # noqa: E731
                lines.append(
                    f"- {calls['calls']} random calls ({calls['distinct_lengths']} lengths): builds during "
                    f"{calls['builds_during']}, CUDA graphs {calls['cuda_graphs']}, allocated "
                    f"{mb(calls['memory_before'], 'allocated_bytes')} -> {mb(calls['memory_after'], 'allocated_bytes')}"
                    f", max reserved {mb(calls['memory_before'], 'max_reserved_bytes')} -> "
                    f"{mb(calls['memory_after'], 'max_reserved_bytes')}; outputs match eager on "
                    f"{len(calls['checked'])} sampled calls: {calls['all_match']} (max rel err "
                    f"{calls['max_rel_err_vs_eager']:.1e})"
                )
        lines.append("")
    for r in rows:
        if r.get("part") != "resnet" or r in failed:
            continue
        lines += [
            f"## {r['model']}, image size h, w {r['profile']['h'][0]}..{r['profile']['h'][2]}",
            "",
            "| size | eager ms | compile best ms | static plan ms | one profile ms (ratio) | two profiles ms (ratio) |",
            "|---|---|---|---|---|---|",
        ]
        for s in r["images"]:
            two = r.get("forge_two_profiles")
            two_cell = (
                ""
                if two is None
                else f"{two[str(s)]['median_ms']:.3f} ({r['ratios_two_profiles_vs_exact'][str(s)]:.2f})"
            )
            ms = lambda d, key=str(s): f"{d[key]['median_ms']:.3f}"  # noqa: E731
            lines.append(
                f"| {s} | {ms(r['eager'])} | {ms(r['compile_dynamic']['best'])} | {ms(r['forge_exact'])} | "
                f"{ms(r['forge_dynamic'])} ({r['ratios_dynamic_vs_exact'][str(s)]:.2f}) | {two_cell} |"
            )
        lines += ["", f"- targets {r['targets']}", ""]
    if onnx:
        lines += [
            "## ONNX models, FP32, against onnxruntime",
            "",
            "| model | import | size | forge ms | onnxruntime ms (provider) | max rel err | builds (rebuilds) | "
            "regions, node share |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in onnx:
            if "sizes" not in r:
                lines.append(f"| {r['model']} | {r.get('error') or 'not run: ' + r.get('skipped', '')} | | | | | | |")
                continue
            for key, s in r["sizes"].items():
                ort_cell = (
                    ""
                    if "onnxruntime" not in s
                    else f"{s['onnxruntime']['median_ms']:.3f} ({s['onnxruntime']['provider']})"
                )
                lines.append(
                    f"| {r['model']} | {r['import']} | {key} | {s['forge']['median_ms']:.3f} | {ort_cell} | "
                    f"{_fmt(s.get('max_rel_err_vs_onnxruntime'), '.1e')} | {r['plans']['builds']} "
                    f"({r['rebuilds_inside_profile']}) | {r['regions']}, {100 * r['node_share']:.0f}% |"
                )
        lines.append("")
        for r in onnx:
            for key, how in (("import_kept_error", "every dimension kept"), ("import_pinned_error", "sizes pinned")):
                if key in r:
                    lines.append(f"- {r['model']}, import with {how}: {r[key]['message'][:700]}")
            if r.get("onnxruntime_note"):
                lines.append(f"- {r['model']}: {r['onnxruntime_note']}")
        lines.append("")
    others = [r for r in failed if r.get("part") != "onnx"]
    if others:
        lines += ["## Not measured", ""]
        lines += [
            f"- {r['part']} {r.get('model', r.get('batch', ''))}: {r.get('error') or 'skipped: ' + r['skipped']}"
            for r in others
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated among {', '.join(PARTS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, FP32, few iterations: runs on a CPU")
    parser.add_argument(
        "--onnx-dir",
        default=None,
        help="the .onnx files (bench/pack_onnx_models.sh); default: "
        "the installed rapidocr_onnxruntime and silero_vad packages",
    )
    parser.add_argument("--onnx-models", default=None, help=f"comma-separated among {', '.join(ONNX_CASES)}")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per method (default 100; 3 dry)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no configuration that would end past this many seconds (its expected duration on an H100: "
        "reported as skipped), so a time-limited call ends with its results",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    refusal = device_refusal(device, args.dry_run)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}: the parts are {', '.join(PARTS)}")
    sizes = DRY_SIZES if args.dry_run else GPU_SIZES
    if args.iters:
        sizes = dataclasses.replace(sizes, iters=args.iters)
    configs = configurations(parts, sizes)
    if args.onnx_models:
        chosen = args.onnx_models.split(",")
        bad = [m for m in chosen if m not in ONNX_CASES]
        if bad:
            parser.error(f"unknown ONNX model(s) {bad}: the models are {', '.join(ONNX_CASES)}")
        configs = [(k, w) for k, w in configs if k != "onnx" or w in chosen]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    rows: list[dict] = []
    started = time.perf_counter()
    for i, (kind, what) in enumerate(configs, 1):
        label = {"part": kind, ("batch" if kind == "bert" else "model"): what}
        estimate = 0.0 if args.dry_run else ESTIMATE_S[kind]
        if args.budget_s is not None and time.perf_counter() - started + estimate > args.budget_s:
            row = {**label, "skipped": f"time budget (expects ~{estimate:.0f} s)", "wall_s": 0.0}
        else:
            start = time.perf_counter()
            try:
                row = run_one(kind, what, device=device, sizes=sizes, args=args)
            except Exception as exc:  # noqa: BLE001 - one failure must not lose the rest of the run
                row = {**label, "error": f"{type(exc).__name__}: {str(exc)[:1500]}"}
                _free(device)
            row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(json.dumps(row), flush=True)
        print(
            f"[{i}/{len(configs)}] {kind} {what}: {row['wall_s']:.1f} s (total {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        doc = {"date": time.strftime("%Y-%m-%d"), "environment": env, "dry_run": args.dry_run, "results": rows}
        (out_dir / "dynamic.json").write_text(json.dumps(doc, indent=2))
    md = report(rows, env, sizes)
    (out_dir / "dynamic.md").write_text(md)
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
