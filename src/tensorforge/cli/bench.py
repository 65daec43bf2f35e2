"""`tensorforge bench`: latency percentiles, throughput and peak memory, against eager, torch.compile or
onnxruntime with --compare."""

from __future__ import annotations

import json
import time
import traceback
from typing import Any

from .common import COMPARE_METHODS, CLIError
from .compare import _onnxruntime_session
from .measure import _bytes, _fresh_peak, _peak, _summarize, measure_latencies
from .sources import (
    Source,
    _build_batch,
    _build_module,
    _device,
    _example_env,
    _load_module,
    _precision,
    _resolve,
    _run_batch,
    _shapes_summary,
    _source_inputs,
)


def cmd_bench(args) -> int:
    device = _device(args.device)
    source = _resolve(args.target, plan=True, model=True, image_size=args.image_size, seq_len=args.seq_len)
    methods = [m.strip() for m in args.compare.split(",") if m.strip()] if args.compare else []
    for m in methods:
        if m not in COMPARE_METHODS:
            raise CLIError(f"--compare {m!r}: choose from {', '.join(COMPARE_METHODS)}")
        if source.kind == "plan":
            raise CLIError(
                "--compare needs the source model (a zoo name or an .onnx file): a .tforge file holds "
                "only the compiled module"
            )
        if m in ("eager", "compile") and source.kind != "zoo":
            raise CLIError(f"--compare {m}: an .onnx file has no PyTorch model; compare it with onnxruntime")
        if m == "onnxruntime" and source.kind != "onnx":
            raise CLIError("--compare onnxruntime: only for .onnx models")
    if args.iters < 1 or args.warmup < 0:
        raise CLIError("--iters must be >= 1 and --warmup >= 0")
    result: dict[str, Any] = {
        "target": args.target,
        "device": str(device),
        "batch": args.batch,
        "shapes": _shapes_summary(args),
        "precision": None,
        "iters": args.iters,
        "warmup": args.warmup,
        "timer": "cuda events" if device.type == "cuda" else "perf_counter",
        "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "n/a",
        "methods": {},
    }
    input_names, inputs, result["methods"]["tensorforge"], config, batch = _bench_tensorforge(source, device, args)
    result["batch"] = batch
    precision = result["precision"] = _precision(config.fp16, config.bf16, config.tf32, device)
    failures = []
    for method in methods:
        try:
            result["methods"][method] = _bench_reference(
                method, source, input_names, inputs, device, precision, batch, args
            )
        except Exception as exc:  # noqa: BLE001  (one failing reference must not lose the others)
            if args.verbose:
                traceback.print_exc()
            result["methods"][method] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            failures.append(method)
    base = result["methods"]["tensorforge"]["p50_ms"]
    result["speedup"] = {
        m: r["p50_ms"] / base for m, r in result["methods"].items() if m != "tensorforge" and "p50_ms" in r
    }
    if device.type != "cuda":
        import resource

        result["process_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_bench(result)
    if failures:
        first = result["methods"][failures[0]]["error"]
        raise CLIError(f"--compare {','.join(failures)} failed: {first}")
    return 0


def _bench_tensorforge(source: Source, device, args) -> tuple[list[str], tuple, dict, Any, int]:
    """(input names, inputs, timings, builder config, batch per call) of the tensorforge module. Nothing of the
    module outlives the call, so the next method's peak memory does not hold its plans or weights."""
    start = time.perf_counter()
    if source.kind == "plan":
        module = _load_module(source.name, args, device)
        module.build_all(_build_batch(module.graph, source, args))
    else:
        module, _ = _build_module(source, args, device, args.batch, quiet=args.quiet)
    setup_s = time.perf_counter() - start
    env = _example_env(module.graph, source, args)
    inputs = _source_inputs(source, module.graph, env, device)
    batch = _run_batch(env, args)
    _fresh_peak(device)
    row = _summarize(measure_latencies(lambda: module(*inputs), device, args.warmup, args.iters), batch)
    row.update({"peak_memory_bytes": _peak(device), ("load_s" if source.kind == "plan" else "build_s"): setup_s})
    return [v.name for v in module.graph.inputs], inputs, row, module.builder_config, batch


def _bench_reference(
    method: str, source: Source, input_names, inputs, device, precision: str, batch: int, args
) -> dict:
    import torch

    if method == "onnxruntime":
        session, feed, _ = _onnxruntime_session(source.name, input_names, inputs, device)
        _fresh_peak(device)
        row = _summarize(measure_latencies(lambda: session.run(None, feed), device, args.warmup, args.iters), batch)
        return {**row, "peak_memory_bytes": None, "provider": session.get_providers()[0]}
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    model = source.zoo.model.to(device=device, dtype=dtype)
    typed = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    from ..engine.precision import tf32_mode

    with torch.no_grad(), tf32_mode(precision == "tf32"):
        if method == "eager":
            _fresh_peak(device)
            row = _summarize(measure_latencies(lambda: model(*typed), device, args.warmup, args.iters), batch)
            return {**row, "peak_memory_bytes": _peak(device)}
        torch._dynamo.reset()
        _fresh_peak(device)
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        compiled = torch.compile(model, mode=mode)
        start = time.perf_counter()
        for _ in range(3):  # compiles, then records the CUDA graphs of reduce-overhead
            compiled(*typed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - start
        row = _summarize(measure_latencies(lambda: compiled(*typed), device, args.warmup, args.iters), batch)
        row.update(peak_memory_bytes=_peak(device), compile_s=compile_s, mode=mode)
        torch._dynamo.reset()
        return row


def _print_bench(result: dict) -> None:
    print(
        f"bench {result['target']} on {result['device']}: batch {result['batch']}, {result['precision']}, "
        f"{result['iters']} iterations after {result['warmup']} warm-up ({result['timer']})"
    )
    header = f"  {'method':<12} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'items/s':>10} {'peak memory':>12}"
    print(header)
    for name, r in result["methods"].items():
        if "error" in r:
            print(f"  {name:<12} failed: {r['error']}")
            continue
        print(
            f"  {name:<12} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} "
            f"{r['throughput_per_s']:>10.1f} {_bytes(r['peak_memory_bytes']):>12}"
        )
    for name, ratio in result["speedup"].items():
        print(f"  tensorforge vs {name}: {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'} (p50)")
    if result["device"] == "cpu":
        print(
            f"  peak memory: n/a on the CPU (process max RSS {_bytes(result.get('process_max_rss_bytes'))}, "
            f"whole process)"
        )
