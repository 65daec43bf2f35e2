"""`tensorforge compare`: a module's outputs against the source framework (PyTorch eager or onnxruntime)."""

from __future__ import annotations

import json
import math
import sys

from .common import EXIT_MISMATCH, PROG, TOLERANCES, CLIError
from .sources import (
    Source,
    _as_tuple,
    _build_module,
    _device,
    _example_env,
    _flatten,
    _requested_precision,
    _resolve,
    _run_batch,
    _shapes_summary,
    _source_inputs,
    _to_graph,
    shape_profile,
)

# a quantized module against the float model: the few percent that int8 / float8 rounding costs a calibrated model
QUANTIZED_TOLERANCES = {"int8": 0.1, "fp8": 0.1}


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
    return {
        "max_abs": max_abs,
        "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf),
        "mean_abs": diff.mean().item(),
        "cosine": cos,
    }


def _onnxruntime_session(path: str, input_names: list[str], inputs, device):
    import numpy as np

    try:
        import onnxruntime as ort
    except ImportError:
        raise CLIError(
            "the onnxruntime package is needed to run the source ONNX model (pip install 'tensorforge[onnx]')"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    from ..frontends.onnx_opaque import onnxruntime_session

    session = onnxruntime_session(path, providers, severity=3)  # nothing on stdout, where --json goes
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
    from ..engine.precision import tf32_mode

    model = source.zoo.model.to(device)
    with torch.no_grad(), tf32_mode(False):  # the reference in full float32
        return _flatten(model(*inputs))


def cmd_compare(args) -> int:
    device = _device(args.device)
    source = _resolve(args.model, plan=False, model=True, image_size=args.image_size, seq_len=args.seq_len)
    precision = _requested_precision(args, device)
    tolerance = args.rtol if args.rtol is not None else {**TOLERANCES, **QUANTIZED_TOLERANCES}[precision]
    if args.per_layer and (precision not in QUANTIZED_TOLERANCES or args.calib is None):
        raise CLIError("--per-layer goes with --int8 or --fp8 and --calib DIR_OR_NPZ (the calibration inputs)")
    module, _ = _build_module(source, args, device, args.batch, quiet=args.quiet)
    env = _example_env(module.graph, source, args)
    inputs = _source_inputs(source, module.graph, env, device)
    batch = _run_batch(env, args)
    actual = _as_tuple(module(*inputs))
    expected = _reference_outputs(source, module.graph, inputs, device)
    if len(actual) != len(expected):
        raise CLIError(f"tensorforge gives {len(actual)} outputs, the reference {len(expected)}")
    rows = {}
    for value, a, e in zip(module.graph.outputs, actual, expected):
        stats = _error_stats(a, e)
        rows[value.name] = {**stats, "shape": list(a.shape), "ok": stats["max_rel"] <= tolerance}
    reference = "onnxruntime" if source.kind == "onnx" else "pytorch eager (fp32)"
    doc = {
        "model": source.name,
        "device": str(device),
        "batch": batch,
        "shapes": _shapes_summary(args),
        "precision": precision,
        "reference": reference,
        "tolerance": tolerance,
        "outputs": rows,
        "ok": all(r["ok"] for r in rows.values()),
    }
    per_layer = _per_layer(source, args, precision, inputs) if args.per_layer else None
    if per_layer is not None:
        doc["per_layer"] = per_layer
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"compare {source.name} on {device}, batch {batch}, {precision}: tensorforge against {reference}, "
            f"tolerance max rel {tolerance:g}"
        )
        width = max([len(n) for n in rows] + [6])
        print(f"  {'output':<{width}}  {'shape':<18} {'max abs':>10} {'max rel':>10} {'mean abs':>10} {'cosine':>10}")
        for name, r in rows.items():
            print(
                f"  {name:<{width}}  {str(tuple(r['shape'])):<18} {r['max_abs']:>10.3g} {r['max_rel']:>10.3g} "
                f"{r['mean_abs']:>10.3g} {r['cosine']:>10.6f}  {'ok' if r['ok'] else 'MISMATCH'}"
            )
        if per_layer is not None:
            _print_per_layer(per_layer, precision)
    if not doc["ok"]:
        bad = [f"{n} ({r['max_rel']:.3g})" for n, r in rows.items() if not r["ok"]]
        print(
            f"{PROG}: error: max rel error beyond the tolerance {tolerance:g} ({precision}): {', '.join(bad)}",
            file=sys.stderr,
        )
        return EXIT_MISMATCH
    return 0


def _per_layer(source: Source, args, precision: str, inputs: tuple) -> list[dict]:
    """`quantization.sensitivity` of the float model: calibrated on --calib, evaluated on the compared inputs."""
    from ..quantization import CalibrationDataError, load_calibration_files, sensitivity

    graph = _to_graph(source, args.seq_len, shape_profile(args))
    eval_batch = tuple(x.detach().cpu() for x in inputs)
    try:
        calib = load_calibration_files(args.calib)
        # layers quantized one at a time: there is no whole quantized graph for "auto" to measure, so its default
        method = args.calib_method if args.calib_method not in (None, "auto") else "minmax"
        report = sensitivity(graph, calib, [eval_batch], precision=precision, method=method)
    except CalibrationDataError as exc:
        raise CLIError(str(exc)) from None
    return [{"layer": s.layer, "op": s.op, "relative_error": s.relative_error} for s in report]


def _print_per_layer(rows: list[dict], precision: str) -> None:
    print(f"per layer, {precision} alone (output error ||quantized - float|| / ||float||), worst first:")
    if not rows:
        print("  no quantizable layer")
        return
    width = max(len(r["layer"]) for r in rows)
    for r in rows:
        print(f"  {r['layer']:<{width}}  {r['op']:<14} {r['relative_error']:.4g}")
