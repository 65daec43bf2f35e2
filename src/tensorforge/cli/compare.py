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
)


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
    tolerance = args.rtol if args.rtol is not None else TOLERANCES[precision]
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
    if not doc["ok"]:
        bad = [f"{n} ({r['max_rel']:.3g})" for n, r in rows.items() if not r["ok"]]
        print(
            f"{PROG}: error: max rel error beyond the tolerance {tolerance:g} ({precision}): {', '.join(bad)}",
            file=sys.stderr,
        )
        return EXIT_MISMATCH
    return 0
