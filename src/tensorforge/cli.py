"""The `tensorforge` command line (also `python -m tensorforge`), in the manner of trtexec.

    tensorforge build MODEL -o out.tforge [--fp16|--bf16] [--batch N] ...   convert, partition, build, save
    tensorforge run PLAN --input x.npy|inputs.npz [--output y.npz]        run a saved module on arrays
    tensorforge bench PLAN|MODEL [--batch N] [--compare eager,compile]   latency, throughput, peak memory
    tensorforge inspect PLAN|MODEL [--json]                               regions, fallbacks, layers, tactics
    tensorforge compare MODEL [--fp16]                                    outputs against the source framework

MODEL is an `.onnx` file or a name of the zoo (`tensorforge.models`); PLAN a `.tforge` file written by
`build` (or `Module.save`). Every error is one line on stderr (`tensorforge: error: ...`) with a non-zero
exit code; `--verbose` adds the traceback. Results go to stdout, progress and warnings to stderr.
docs/cli.md documents every command.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

PROG = "tensorforge"
# Error allowed between a tensorforge module and its source framework, relative to the largest reference
# magnitude (max |actual - expected| / max |expected|), by the precision the module was built for. "tf32":
# float32 on a CUDA device with TF32 matrix products allowed (10-bit mantissa, float32 accumulation).
TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 2e-2, "bf16": 5e-2}
COMPARE_METHODS = ("eager", "compile", "onnxruntime")
EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH = 1, 2, 3
DEFAULT_SEQ_LEN = 128  # other symbolic dimensions than the batch (ONNX inputs, synthetic inputs)


class CLIError(Exception):
    """A mistake the user can fix: printed as one line, no traceback."""


# -- where a model comes from ----------------------------------------------------------------------

@dataclass
class Source:
    """What the MODEL / PLAN argument named: a zoo model, an ONNX file or a saved module."""

    kind: str  # "zoo", "onnx" or "plan"
    name: str  # the zoo name or the path
    zoo: Any = None  # models.ZooModel for kind "zoo"


def _resolve(arg: str, *, plan: bool, model: bool, image_size=None, seq_len=None) -> Source:
    """Classify a MODEL / PLAN argument. Paths are recognized by suffix or existence; others are zoo names."""
    from . import models
    suffix = os.path.splitext(arg)[1].lower()
    looks_like_path = suffix in (".onnx", ".tforge") or os.sep in arg or os.path.exists(arg)
    if looks_like_path:
        if not os.path.exists(arg):
            raise CLIError(f"{arg}: no such file")
        if os.path.isdir(arg):
            raise CLIError(f"{arg}: is a directory, not a model file")
        kind = {".onnx": "onnx", ".tforge": "plan"}.get(suffix) or _sniff(arg)
        if kind == "plan" and not plan:
            raise CLIError(f"{arg}: this command needs the source model (a zoo name or an .onnx file), "
                           f"not a saved .tforge module")
        if kind == "onnx" and not model:
            raise CLIError(f"{arg}: this command needs a saved .tforge module (build one with `tensorforge build`)")
        return Source(kind, arg)
    if not model:
        raise CLIError(f"{arg}: no such file (this command takes a .tforge module)")
    return Source("zoo", arg, models.get(arg, image_size=image_size, seq_len=seq_len))


def _sniff(path: str) -> str:
    """"plan" for a safetensors file (8-byte header length, then JSON), else "onnx" (a protobuf)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return "plan" if len(head) == 9 and head[8:9] == b"{" else "onnx"


def _to_graph(source: Source, seq_len: int | None):
    from .frontends import from_torch
    if source.kind == "zoo":
        zoo = source.zoo
        return from_torch(zoo.model, zoo.inputs(2), input_names=list(zoo.input_names),
                          output_names=list(zoo.output_names))
    try:
        from .frontends import from_onnx
    except ImportError as exc:
        raise CLIError(f"{source.name}: ONNX models need tensorforge's ONNX frontend and the onnx package "
                       f"(pip install 'tensorforge[onnx]'): {exc}") from exc
    return from_onnx(source.name, input_shapes=_onnx_input_shapes(source.name, seq_len))


def _onnx_input_shapes(path: str, seq_len: int | None) -> dict[str, tuple[int, ...]]:
    """Sizes for the symbolic dimensions of ONNX inputs other than the leading (batch) one: `seq_len`."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise CLIError(f"{path}: not a readable ONNX model ({exc})") from None
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for v in model.graph.input:
        if v.name in initializers or not v.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            other = seq_len or DEFAULT_SEQ_LEN
            shapes[v.name] = tuple(d if d is not None else -1 if i == 0 else other for i, d in enumerate(dims))
    return shapes


def _device(name: str | None):
    import torch
    from .runtime.module import default_device
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CLIError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device {name}: tensorforge runs on cpu or cuda")
    return device


def _precision(fp16: bool, bf16: bool, tf32: bool, device) -> str:
    """The precision a module runs in, by name: TF32 only counts on a CUDA device."""
    return "fp16" if fp16 else "bf16" if bf16 else ("tf32" if tf32 and device.type == "cuda" else "fp32")


def _requested_precision(args, device) -> str:
    return _precision(args.fp16, args.bf16, not args.no_tf32, device)


def _build_module(source: Source, args, device, batch: int, *, quiet: bool):
    """Convert, partition (explicit batch unless --implicit-batch), build every plan for `batch`.
    Returns (module, seconds per stage). A progress bar on stderr follows the stages and regions."""
    import tensorforge as forge
    from tqdm import tqdm

    stages: dict[str, float] = {}
    bar = tqdm(total=3, desc=f"{PROG}: converting {os.path.basename(source.name)}", unit="step", file=sys.stderr,
               disable=quiet, leave=False, bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}]")
    try:
        start = time.perf_counter()
        graph = _to_graph(source, args.seq_len)
        stages["convert_s"] = time.perf_counter() - start
        bar.update()
        bar.set_description_str(f"{PROG}: partitioning")
        start = time.perf_counter()
        graph, config = forge.partition_for_tensorforge(
            graph, min_block_size=args.min_block_size, use_implicit_batch=args.implicit_batch,
            max_workspace_size=args.workspace)
        module = forge.build(graph, config, device=device, fp16=args.fp16, bf16=args.bf16, tf32=not args.no_tf32,
                             cache_dir=args.cache_dir, max_workspace_size=args.workspace)
        stages["partition_s"] = time.perf_counter() - start
        bar.update()
        regions = list(module.regions)
        bar.total = 2 + len(regions)
        start = time.perf_counter()
        for i, name in enumerate(regions, 1):
            bar.set_description_str(f"{PROG}: building plan {i}/{len(regions)} ({name})")
            # one region at a time (build_all does the same) so the bar can follow the build
            module._plan_for(name, batch)
            bar.update()
        stages["build_s"] = time.perf_counter() - start
    finally:
        bar.close()
    return module, stages


# -- inputs and outputs ------------------------------------------------------------------------------

def _sizes(value, batch: int, seq_len: int) -> tuple[int, ...]:
    from .ir import Sym
    return tuple(d.scale * (batch if d.symbol == "batch" else seq_len) if isinstance(d, Sym) else d
                 for d in value.type.shape)


def _synthetic_inputs(graph, batch: int, seq_len: int, device, seed: int = 0) -> tuple:
    """Inputs for a graph from its input types: floats from a normal distribution, integers and booleans 1
    (a valid token id and an all-ones attention mask). The batch symbol is `batch`; any other symbol `seq_len`."""
    import torch
    from .ir.types import torch_dtype
    gen = torch.Generator().manual_seed(seed)
    out = []
    for v in graph.inputs:
        dtype = torch_dtype(v.type.dtype)
        shape = _sizes(v, batch, seq_len)
        t = torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype)
        out.append(t.to(device))
    return tuple(out)


def _source_inputs(source: Source, graph, batch: int, seq_len: int, device) -> tuple:
    if source.kind == "zoo":
        return tuple(t.to(device) for t in source.zoo.inputs(batch))
    return _synthetic_inputs(graph, batch, seq_len, device)


def _describe_inputs(graph) -> str:
    return ", ".join(f"{v.name} ({v.type})" for v in graph.inputs)


def _read_inputs(path: str, graph, device) -> tuple:
    """Arrays from a .npy (one-input models) or .npz (keys = input names) file, as the graph's dtypes."""
    import numpy as np
    import torch
    from .ir.types import torch_dtype
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    names = [v.name for v in graph.inputs]
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CLIError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise CLIError(f"{path}: a single .npy array feeds a one-input model; this one takes {len(names)} "
                           f"inputs ({_describe_inputs(graph)}): pass an .npz with those keys")
        arrays = {names[0]: loaded}
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        problems = [f"{what} {', '.join(map(repr, keys))}" for what, keys in (
            ("unknown input" + "s" * (len(arrays.keys() - set(names)) > 1), [k for k in arrays if k not in names]),
            ("missing", [n for n in names if n not in arrays])) if keys]
        if problems:
            raise CLIError(f"{path}: {'; '.join(problems)}; this model takes: {_describe_inputs(graph)}")
    tensors = []
    for v in graph.inputs:
        array = arrays[v.name]
        want = torch_dtype(v.type.dtype)
        try:
            t = torch.from_numpy(np.ascontiguousarray(array))
        except TypeError:
            raise CLIError(f"input {v.name!r}: numpy dtype {array.dtype} is not supported") from None
        same_kind = (t.dtype.is_floating_point == want.is_floating_point
                     and (t.dtype == torch.bool) == (want == torch.bool))
        if t.dtype != want and not same_kind:
            raise CLIError(f"input {v.name!r}: expected {v.type.dtype} ({v.type}), got {array.dtype}")
        tensors.append(t.to(device=device, dtype=want))  # within a kind (float64 -> float32, int32 -> int64)
    return tuple(tensors)


def _as_tuple(outputs) -> tuple:
    import torch
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def _flatten(result) -> list:
    """A model's output tensors in order: tensors, tuples/lists and dicts (a Hugging Face ModelOutput too)."""
    import torch
    if isinstance(result, torch.Tensor):
        return [result]
    if hasattr(result, "values") and callable(result.values):
        return [t for v in result.values() if v is not None for t in _flatten(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in _flatten(v)]
    return []


def _stats(t) -> dict:
    x = t.detach().double()
    if x.numel() == 0:
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "min": x.min().item(),
            "max": x.max().item(), "mean": x.mean().item(), "std": x.std().item() if x.numel() > 1 else 0.0}


# -- measuring ---------------------------------------------------------------------------------------

def measure_latencies(fn: Callable, device, warmup: int, iters: int) -> list[float]:
    """Milliseconds per call after `warmup` calls: CUDA events on a GPU, perf_counter on the CPU."""
    import torch
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _summarize(latencies: list[float], batch: int) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731  (nearest rank)
    p50 = statistics.median(ordered)
    return {"p50_ms": p50, "p90_ms": pick(0.9), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered),
            "min_ms": ordered[0], "throughput_per_s": batch * 1e3 / p50 if p50 > 0 else math.inf}


def _fresh_peak(device) -> None:
    import gc
    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    import torch
    if device.type != "cuda":
        return None  # no allocator statistics for the CPU: reported as n/a
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n < 1 << 10:
        return f"{n} B"
    return f"{n / 2**10:.1f} KiB" if n < 1 << 20 else f"{n / 2**20:.2f} MiB"


# -- build -------------------------------------------------------------------------------------------

def cmd_build(args) -> int:
    device = _device(args.device)
    source = _resolve(args.model, plan=False, model=True, image_size=args.image_size, seq_len=args.seq_len)
    if not args.output.endswith(".tforge"):
        raise CLIError(f"-o {args.output}: the output file name must end in .tforge")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise CLIError(f"-o {args.output}: directory {out_dir} does not exist")
    start = time.perf_counter()
    module, stages = _build_module(source, args, device, args.batch, quiet=args.quiet)
    module.save(args.output)
    total = time.perf_counter() - start
    report = module.report
    plans = [(name, p) for name, ps in module.plans().items() for p in ps]
    fallback = sum(1 for n in module.graph.nodes if n.op != "subgraph")
    summary = {
        "model": source.name, "output": args.output, "file_bytes": os.path.getsize(args.output),
        "device": str(device), "precision": _requested_precision(args, device), "batch": args.batch,
        "implicit_batch": args.implicit_batch, "regions": len(module.regions), "fallback_nodes": fallback,
        "offloaded_nodes": report.offloaded_nodes, "total_nodes": report.total_nodes, "mac_share": report.mac_share,
        "plans": [{"region": name, "max_batch": p.max_batch, "layers": len(p.layers),
                   "arena_bytes": p.peak_activation_bytes} for name, p in plans],
        "time_s": total, **stages,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"built {source.name} -> {args.output} ({_bytes(summary['file_bytes'])}) in {total:.1f} s "
          f"(convert {stages['convert_s']:.1f} s, partition {stages['partition_s']:.1f} s, "
          f"plans {stages['build_s']:.1f} s)")
    print(f"  device {device}, precision {summary['precision']}, batch {args.batch}, "
          f"{'implicit' if args.implicit_batch else 'explicit'} batch")
    print(f"  regions: {len(module.regions)} ({report.offloaded_nodes}/{report.total_nodes} nodes, "
          f"{100 * report.mac_share:.1f}% of MACs offloaded); fallback nodes: {fallback}")
    for name, p in plans:
        print(f"  plan {name}: {len(p.layers)} layers, arena {_bytes(p.peak_activation_bytes)}, "
              f"max batch {p.max_batch}")
    if fallback:
        print(f"  see why {fallback} node{'s' * (fallback != 1)} stayed in PyTorch: {PROG} inspect {args.output}")
    return 0


# -- run ---------------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    import numpy as np
    import torch
    import tensorforge as forge
    device = _device(args.device)
    _resolve(args.plan, plan=True, model=False)
    if args.output and not args.output.endswith((".npz", ".npy")):
        raise CLIError(f"--output {args.output}: the file name must end in .npz (or .npy for one output)")
    module = forge.load(args.plan, device=device)
    names = [v.name for v in module.graph.outputs]
    if args.output and args.output.endswith(".npy") and len(names) != 1:
        raise CLIError(f"--output {args.output}: this model has {len(names)} outputs ({', '.join(names)}): "
                       f"write an .npz")
    inputs = _read_inputs(args.input, module.graph, device)
    start = time.perf_counter()
    outputs = _as_tuple(module(*inputs))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    # numpy has no bfloat16: such outputs are written as float32
    arrays = {name: (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()
              for name, t in zip(names, outputs)}
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, arrays[names[0]])
    elif args.output:
        np.savez(args.output, **arrays)
    stats = {name: _stats(t) for name, t in zip(names, outputs)}
    if args.json:
        print(json.dumps({"plan": args.plan, "device": str(device), "time_ms": elapsed * 1e3,
                          "output_file": args.output, "outputs": stats}, indent=2))
        return 0
    print(f"ran {args.plan} on {device} in {elapsed * 1e3:.1f} ms (first call)")
    for name, s in stats.items():
        line = f"  {name}: {s['dtype']} {tuple(s['shape'])}"
        if "min" in s:
            line += f"  min {s['min']:.4g}  max {s['max']:.4g}  mean {s['mean']:.4g}  std {s['std']:.4g}"
        print(line)
    if args.output:
        print(f"wrote {', '.join(names)} to {args.output}")
    return 0


# -- bench -------------------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    device = _device(args.device)
    source = _resolve(args.target, plan=True, model=True, image_size=args.image_size, seq_len=args.seq_len)
    methods = [m.strip() for m in args.compare.split(",") if m.strip()] if args.compare else []
    for m in methods:
        if m not in COMPARE_METHODS:
            raise CLIError(f"--compare {m!r}: choose from {', '.join(COMPARE_METHODS)}")
        if source.kind == "plan":
            raise CLIError("--compare needs the source model (a zoo name or an .onnx file): a .tforge file holds "
                           "only the compiled module")
        if m in ("eager", "compile") and source.kind != "zoo":
            raise CLIError(f"--compare {m}: an .onnx file has no PyTorch model; compare it with onnxruntime")
        if m == "onnxruntime" and source.kind != "onnx":
            raise CLIError("--compare onnxruntime: only for .onnx models")
    if args.iters < 1 or args.warmup < 0:
        raise CLIError("--iters must be >= 1 and --warmup >= 0")
    result: dict[str, Any] = {"target": args.target, "device": str(device), "batch": args.batch,
                              "precision": None, "iters": args.iters, "warmup": args.warmup,
                              "timer": "cuda events" if device.type == "cuda" else "perf_counter",
                              "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "n/a",
                              "methods": {}}
    input_names, inputs, result["methods"]["tensorforge"], options = _bench_tensorforge(source, device, args)
    precision = result["precision"] = _precision(options.fp16, options.bf16, options.tf32, device)
    failures = []
    for method in methods:
        try:
            result["methods"][method] = _bench_reference(method, source, input_names, inputs, device, precision, args)
        except Exception as exc:  # one failing reference must not lose the others
            if args.verbose:
                traceback.print_exc()
            result["methods"][method] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            failures.append(method)
    base = result["methods"]["tensorforge"]["p50_ms"]
    result["speedup"] = {m: r["p50_ms"] / base for m, r in result["methods"].items()
                         if m != "tensorforge" and "p50_ms" in r}
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


def _bench_tensorforge(source: Source, device, args) -> tuple[list[str], tuple, dict, Any]:
    """(input names, inputs, timings, runtime options) of the tensorforge module. Nothing of the module
    outlives the call, so the next method's peak memory does not hold its plans or weights."""
    import tensorforge as forge
    start = time.perf_counter()
    if source.kind == "plan":
        module = forge.load(source.name, device=device).build_all(args.batch)
    else:
        module, _ = _build_module(source, args, device, args.batch, quiet=args.quiet)
    setup_s = time.perf_counter() - start
    inputs = _source_inputs(source, module.graph, args.batch, args.seq_len or DEFAULT_SEQ_LEN, device)
    _fresh_peak(device)
    row = _summarize(measure_latencies(lambda: module(*inputs), device, args.warmup, args.iters), args.batch)
    row.update({"peak_memory_bytes": _peak(device), ("load_s" if source.kind == "plan" else "build_s"): setup_s})
    return [v.name for v in module.graph.inputs], inputs, row, module.options


def _bench_reference(method: str, source: Source, input_names, inputs, device, precision: str, args) -> dict:
    import torch
    if method == "onnxruntime":
        session, feed, _ = _onnxruntime_session(source.name, input_names, inputs, device)
        _fresh_peak(device)
        row = _summarize(measure_latencies(lambda: session.run(None, feed), device, args.warmup, args.iters), args.batch)
        return {**row, "peak_memory_bytes": None, "provider": session.get_providers()[0]}
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    model = source.zoo.model.to(device=device, dtype=dtype)
    typed = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    from .engine.precision import tf32_mode
    with torch.no_grad(), tf32_mode(precision == "tf32"):
        if method == "eager":
            _fresh_peak(device)
            row = _summarize(measure_latencies(lambda: model(*typed), device, args.warmup, args.iters), args.batch)
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
        row = _summarize(measure_latencies(lambda: compiled(*typed), device, args.warmup, args.iters), args.batch)
        row.update(peak_memory_bytes=_peak(device), compile_s=compile_s, mode=mode)
        torch._dynamo.reset()
        return row


def _print_bench(result: dict) -> None:
    print(f"bench {result['target']} on {result['device']}: batch {result['batch']}, {result['precision']}, "
          f"{result['iters']} iterations after {result['warmup']} warm-up ({result['timer']})")
    header = f"  {'method':<12} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'items/s':>10} {'peak memory':>12}"
    print(header)
    for name, r in result["methods"].items():
        if "error" in r:
            print(f"  {name:<12} failed: {r['error']}")
            continue
        print(f"  {name:<12} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} "
              f"{r['throughput_per_s']:>10.1f} {_bytes(r['peak_memory_bytes']):>12}")
    for name, ratio in result["speedup"].items():
        print(f"  tensorforge vs {name}: {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'} (p50)")
    if result["device"] == "cpu":
        print(f"  peak memory: n/a on the CPU (process max RSS {_bytes(result.get('process_max_rss_bytes'))}, "
              f"whole process)")


# -- inspect -----------------------------------------------------------------------------------------

def _graph_macs(module, batch: int) -> int:
    """Multiply-accumulates of one run at `batch`: engine regions plus the nodes left to PyTorch."""
    env = {"batch": batch}
    total = 0
    for node in module.graph.nodes:
        if node.op == "subgraph":
            total += module.regions[node.attrs["callee"]].macs(env)
        else:
            total += node.opdef.count_macs([v.type for v in node.inputs], [v.type for v in node.outputs],
                                           node.attrs, env)
    return total


def _plan_doc(plan) -> dict:
    macs = sum(layer.macs for layer in plan.layers)
    tactics = collections.Counter(layer.tactic for layer in plan.layers)
    c = plan.config
    return {"max_batch": plan.max_batch, "device": str(plan.device), "built_on": plan.fingerprint.get("device_name"),
            "precision": _precision(c.fp16, c.bf16, c.tf32, plan.device), "layers_count": len(plan.layers),
            "arena_bytes": plan.peak_activation_bytes, "macs": macs, "flops": 2 * macs, "passes": plan.counters,
            "tactics": dict(tactics),
            "layers": [{"name": layer.name, "op": layer.op, "tactic": layer.tactic, "precision": layer.precision,
                        "macs": layer.macs} for layer in plan.layers]}


def cmd_inspect(args) -> int:
    import tensorforge as forge
    source = _resolve(args.target, plan=True, model=True, image_size=args.image_size, seq_len=args.seq_len)
    if source.kind == "plan":
        device = _device(args.device)
        module = forge.load(source.name, device=device)
        if args.batch is not None:
            module.build_all(args.batch)
    else:
        device = _device(args.device or "cpu")
        module, _ = _build_module(source, args, device, args.batch or 1, quiet=args.quiet)
    report = module.report
    plans = module.plans()
    built = [p.max_batch for ps in plans.values() for p in ps]
    batch = args.batch or max(built, default=1)
    macs = _graph_macs(module, batch)
    doc = {
        "target": args.target, "device": str(device), "batch": batch,
        "inputs": [{"name": v.name, "type": str(v.type)} for v in module.graph.inputs],
        "outputs": [{"name": v.name, "type": str(v.type)} for v in module.graph.outputs],
        "macs": macs, "flops": 2 * macs,
        "nodes": {"total": report.total_nodes, "offloaded": report.offloaded_nodes} if report else None,
        "mac_share": report.mac_share if report else None,
        "regions": [], "fallback": report.reasons() if report else {},
        "fallback_nodes": sum(1 for n in module.graph.nodes if n.op != "subgraph"),
    }
    summaries = {r.name: r for r in report.regions} if report else {}
    for name, region in module.regions.items():
        r = summaries.get(name)
        doc["regions"].append({
            "name": name, "nodes": r.num_nodes if r else len(region.nodes), "macs": region.macs({"batch": batch}),
            "inputs": [f"{v.name}: {v.type}" for v in region.inputs],
            "outputs": [f"{v.name}: {v.type}" for v in region.outputs],
            "plans": [_plan_doc(p) for p in plans.get(name, [])]})
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_inspect(doc, args.layers)
    return 0


def _gmacs(macs: int) -> str:
    if macs >= 10**8:
        return f"{macs / 1e9:.3f} GMACs ({2 * macs / 1e9:.3f} GFLOPs)"
    if macs >= 10**5:
        return f"{macs / 1e6:.3f} MMACs ({2 * macs / 1e6:.3f} MFLOPs)"
    return f"{macs} MACs ({2 * macs} FLOPs)"


def _print_inspect(doc: dict, show_layers: int | None) -> None:
    print(f"{doc['target']} on {doc['device']}: {_gmacs(doc['macs'])} at batch {doc['batch']}")
    print("  inputs:  " + ", ".join(f"{i['name']}: {i['type']}" for i in doc["inputs"]))
    print("  outputs: " + ", ".join(f"{o['name']}: {o['type']}" for o in doc["outputs"]))
    if doc["nodes"]:
        print(f"  offloaded: {doc['nodes']['offloaded']}/{doc['nodes']['total']} nodes, "
              f"{100 * doc['mac_share']:.1f}% of MACs; {doc['fallback_nodes']} node(s) run in PyTorch")
    print(f"regions ({len(doc['regions'])}):")
    for r in doc["regions"]:
        print(f"  {r['name']}: {r['nodes']} nodes, {_gmacs(r['macs'])}")
        print(f"    inputs:  {', '.join(r['inputs']) or '-'}")
        print(f"    outputs: {', '.join(r['outputs'])}")
        if not r["plans"]:
            print("    no plan (built at first run)")
        for p in r["plans"]:
            print(f"    plan: max batch {p['max_batch']}, {p['precision']}, {p['layers_count']} layers, "
                  f"{_gmacs(p['macs'])}, arena {_bytes(p['arena_bytes'])} ({p['arena_bytes']} B), "
                  f"built on {p['built_on']}")
            print("      tactics: " + ", ".join(f"{t} {n}" for t, n in sorted(p["tactics"].items())))
            print("      passes:  " + ", ".join(f"{k} {v}" for k, v in p["passes"].items()))
            layers = p["layers"] if show_layers is None else p["layers"][:show_layers]
            w_name = max([len(x["name"]) for x in layers] + [5])
            w_op = max([len(x["op"]) for x in layers] + [2])
            w_tac = max([len(x["tactic"]) for x in layers] + [6])
            print(f"      {'layer':<{w_name}}  {'op':<{w_op}}  {'tactic':<{w_tac}}  {'precision':<9}  MACs")
            for x in layers:
                print(f"      {x['name']:<{w_name}}  {x['op']:<{w_op}}  {x['tactic']:<{w_tac}}  "
                      f"{x['precision']:<9}  {x['macs']}")
            if len(layers) < len(p["layers"]):
                print(f"      ... {len(p['layers']) - len(layers)} more layers (--layers N shows N, --layers -1 all)")
    if not doc["fallback"]:
        print("stayed in PyTorch: nothing")
        return
    print("stayed in PyTorch, by op and reason:")
    for op, by_reason in doc["fallback"].items():
        print(f"  {op} ({sum(len(n) for n in by_reason.values())}):")
        for reason, nodes in by_reason.items():
            shown = ", ".join(nodes[:8]) + (f", ... (+{len(nodes) - 8} more)" if len(nodes) > 8 else "")
            print(f"    {reason}: {shown}")


# -- compare -----------------------------------------------------------------------------------------

def _error_stats(actual, expected) -> dict:
    import torch
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise CLIError(f"output shapes differ: tensorforge {tuple(a.shape)}, reference {tuple(e.shape)}")
    diff = (a - e).abs()
    if diff.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "mean_abs": 0.0, "cosine": 1.0}
    scale = e.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(a.flatten(), e.flatten(), dim=0, eps=1e-30).item()
    max_abs = diff.max().item()
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf),
            "mean_abs": diff.mean().item(), "cosine": cos}


def _onnxruntime_session(path: str, input_names: list[str], inputs, device):
    import numpy as np
    try:
        import onnxruntime as ort
    except ImportError:
        raise CLIError("the onnxruntime package is needed to run the source ONNX model "
                       "(pip install 'tensorforge[onnx]')") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=providers)
    names = [i.name for i in session.get_inputs()]
    order = input_names if sorted(names) == sorted(input_names) else names  # by name when they match, else by position
    feed = {name: t.detach().cpu().numpy() for name, t in zip(order, inputs)}
    feed = {k: np.ascontiguousarray(v) for k, v in feed.items()}
    return session, feed, [o.name for o in session.get_outputs()]


def _reference_outputs(source: Source, graph, inputs, device) -> list:
    import torch
    if source.kind == "onnx":
        session, feed, names = _onnxruntime_session(source.name, [v.name for v in graph.inputs], inputs, device)
        outs = dict(zip(names, session.run(None, feed)))
        ours = [v.name for v in graph.outputs]
        order = ours if sorted(names) == sorted(ours) else names
        return [torch.from_numpy(outs[n]) for n in order]
    from .engine.precision import tf32_mode
    model = source.zoo.model.to(device)
    with torch.no_grad(), tf32_mode(False):  # the reference in full float32
        return _flatten(model(*inputs))


def cmd_compare(args) -> int:
    device = _device(args.device)
    source = _resolve(args.model, plan=False, model=True, image_size=args.image_size, seq_len=args.seq_len)
    precision = _requested_precision(args, device)
    tolerance = args.rtol if args.rtol is not None else TOLERANCES[precision]
    module, _ = _build_module(source, args, device, args.batch, quiet=args.quiet)
    inputs = _source_inputs(source, module.graph, args.batch, args.seq_len or DEFAULT_SEQ_LEN, device)
    actual = _as_tuple(module(*inputs))
    expected = _reference_outputs(source, module.graph, inputs, device)
    if len(actual) != len(expected):
        raise CLIError(f"tensorforge gives {len(actual)} outputs, the reference {len(expected)}")
    rows = {}
    for value, a, e in zip(module.graph.outputs, actual, expected):
        stats = _error_stats(a, e)
        rows[value.name] = {**stats, "shape": list(a.shape), "ok": stats["max_rel"] <= tolerance}
    reference = "onnxruntime" if source.kind == "onnx" else "pytorch eager (fp32)"
    doc = {"model": source.name, "device": str(device), "batch": args.batch, "precision": precision,
           "reference": reference, "tolerance": tolerance, "outputs": rows, "ok": all(r["ok"] for r in rows.values())}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"compare {source.name} on {device}, batch {args.batch}, {precision}: tensorforge against {reference}, "
              f"tolerance max rel {tolerance:g}")
        width = max([len(n) for n in rows] + [6])
        print(f"  {'output':<{width}}  {'shape':<18} {'max abs':>10} {'max rel':>10} {'mean abs':>10} "
              f"{'cosine':>10}")
        for name, r in rows.items():
            print(f"  {name:<{width}}  {str(tuple(r['shape'])):<18} {r['max_abs']:>10.3g} {r['max_rel']:>10.3g} "
                  f"{r['mean_abs']:>10.3g} {r['cosine']:>10.6f}  {'ok' if r['ok'] else 'MISMATCH'}")
    if not doc["ok"]:
        bad = [f"{n} ({r['max_rel']:.3g})" for n, r in rows.items() if not r["ok"]]
        print(f"{PROG}: error: max rel error beyond the tolerance {tolerance:g} ({precision}): {', '.join(bad)}",
              file=sys.stderr)
        return EXIT_MISMATCH
    return 0


# -- the parser --------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too (argparse prints the whole usage by default)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _bytes_arg(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        value = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bytes (e.g. 1073741824, 512M, 1G), got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors, warnings of every library and tensorforge's log")
    common.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    def model_options(batch_default: int | None = 1, device_help: str = "cuda if available, else cpu"):
        p = argparse.ArgumentParser(add_help=False)
        precision = p.add_mutually_exclusive_group()
        precision.add_argument("--fp16", action="store_true", help="let layers run in float16")
        precision.add_argument("--bf16", action="store_true", help="let layers run in bfloat16")
        p.add_argument("--no-tf32", action="store_true", help="full float32 matrix products on the GPU (no TF32)")
        p.add_argument("--batch", type=_positive, default=batch_default,
                       help=f"batch size the plans are built for (default {batch_default})")
        p.add_argument("--seq-len", type=_positive, default=None,
                       help="sequence length of text models (zoo default 128); sizes other symbols of ONNX inputs")
        p.add_argument("--image-size", type=_positive, default=None,
                       help="image size of vision zoo models (default 224)")
        p.add_argument("--cache-dir", default=None, help="cache built plans on disk here")
        p.add_argument("--min-block-size", type=_positive, default=1, help="smallest region offloaded (nodes)")
        p.add_argument("--workspace", type=_bytes_arg, default=1 << 30,
                       help="most activation memory a plan may use, in bytes (512M, 1G accepted; default 1G)")
        p.add_argument("--implicit-batch", action="store_true",
                       help="partition in implicit-batch mode (ops that touch the batch axis stay in PyTorch)")
        p.add_argument("--device", default=None, help=f"cpu or cuda[:N] (default {device_help})")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        return p

    parser = _Parser(prog=PROG, description="Make trained models fast for inference: build, run, bench, "
                     "inspect and compare tensorforge modules.", epilog="zoo models: run `tensorforge models`")
    parser.add_argument("--verbose", "-v", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("build", parents=[common, model_options()], help="convert, partition and build a model; "
                       "save one .tforge", description="Convert MODEL, partition it, build every plan for --batch "
                       "and save one .tforge file.")
    p.add_argument("model", metavar="MODEL", help="an .onnx file or a zoo name (tensorforge models)")
    p.add_argument("-o", "--output", required=True, help="the .tforge file to write")
    p.set_defaults(run=cmd_build)

    p = sub.add_parser("run", parents=[common], help="run a .tforge on arrays from .npy/.npz",
                       description="Load PLAN, feed it inputs, write or summarize its outputs.")
    p.add_argument("plan", metavar="PLAN", help="a .tforge file")
    p.add_argument("--input", "-i", required=True, help=".npy (one-input models) or .npz (keys = input names)")
    p.add_argument("--output", "-o", default=None, help=".npz (keys = output names) or .npy (one output)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default cuda if available, else cpu)")
    p.set_defaults(run=cmd_run)

    p = sub.add_parser("bench", parents=[common, model_options()], help="latency percentiles, throughput, peak "
                       "memory", description="Time PLAN or MODEL: p50/p90/p99 latency, throughput and peak "
                       "memory; with --compare, PyTorch eager / torch.compile / onnxruntime in the same run.")
    p.add_argument("target", metavar="PLAN|MODEL", help="a .tforge file, an .onnx file or a zoo name")
    p.add_argument("--iters", type=_positive, default=100, help="timed iterations (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default 10)")
    p.add_argument("--compare", default=None, metavar="METHODS",
                   help="comma-separated: eager, compile (zoo models), onnxruntime (.onnx files)")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("inspect", parents=[common, model_options(batch_default=None, device_help="cpu for MODEL")],
                       help="regions, fallback reasons, layers, tactics, MACs, arena sizes",
                       description="Show the regions, every reason a node stayed in PyTorch, the layers of each "
                       "plan with their tactic and precision, MACs/FLOPs and arena sizes. For a MODEL the plans are "
                       "built first (at --batch, default 1, on --device, default cpu).")
    p.add_argument("target", metavar="PLAN|MODEL", help="a .tforge file, an .onnx file or a zoo name")
    p.add_argument("--layers", type=int, default=None, metavar="N",
                   help="show the first N layers of each plan (default all; -1 all)")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("compare", parents=[common, model_options()], help="outputs against the source framework",
                       description="Build MODEL and compare its outputs with PyTorch eager (zoo models, float32) or "
                       "onnxruntime (.onnx files). Exit code 3 when an output's max relative error exceeds the "
                       f"tolerance ({', '.join(f'{k} {v:g}' for k, v in TOLERANCES.items())}).")
    p.add_argument("model", metavar="MODEL", help="an .onnx file or a zoo name")
    p.add_argument("--rtol", type=float, default=None, help="tolerance on max |a - e| / max |e| (default by precision)")
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("models", parents=[common], help="list the zoo models", description="List the zoo models.")
    p.set_defaults(run=cmd_models)
    return parser


def cmd_models(args) -> int:
    from . import models
    if args.json:
        print(json.dumps([{"name": e.name, "family": e.family, "description": e.description,
                           "inputs": list(e.input_names), "outputs": list(e.output_names)}
                          for e in models.ZOO.values()], indent=2))
    else:
        print(models.describe())
    return 0


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("tensorforge")
    except Exception:
        return "unknown"


# -- main --------------------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())  # one line, nothing lost
    if not isinstance(exc, (CLIError, OSError, ValueError, TypeError, NotImplementedError)):
        line = f"{type(exc).__name__}: {line}"  # an unexpected error: say what kind
    return line


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    if getattr(args, "layers", None) == -1:
        args.layers = None

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if args.verbose or f"{os.sep}tensorforge{os.sep}" in filename:
            print(f"{PROG}: warning: {message}", file=sys.stderr)

    logger = logging.getLogger("tensorforge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    previous = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`tensorforge inspect m.tforge --json | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        warnings.showwarning = previous
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
