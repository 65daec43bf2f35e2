"""`tensorforge inspect`: regions, fallback reasons, layers, tactics, MACs and arena sizes."""

from __future__ import annotations

import collections
import json
from typing import Any

from ..engine.epilogue import QUANTIZED_LAYERS
from ..ir import Node
from ..ir.types import BATCH
from .measure import _bytes
from .sources import (
    _build_batch,
    _build_module,
    _device,
    _example_env,
    _load_module,
    _precision,
    _resolve,
    shape_profile,
)


def _graph_macs(module, env: dict[str, int]) -> int:
    """Multiply-accumulates of one run at the symbol sizes `env`: engine regions plus the nodes left to PyTorch."""
    total = 0
    for node in module.graph.nodes:
        if node.op == "subgraph":
            total += module.regions[node.attrs["callee"]].macs(env)
        else:
            total += node.opdef.count_macs(
                [v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs, env
            )
    return total


_QDQ_OPS = ("quantize", "dequantize")


def _quantization_scale(node: Node) -> dict[str, Any]:
    """A quantize / dequantize layer's scale: per tensor its value, per channel the axis, count and min..max (the
    scales a calibrator or an imported model stored as constants); one computed at run time says so."""
    scale = node.inputs[1]
    if scale.data is None:
        return {"computed_at_run_time": True}
    values = scale.data.detach().float().cpu().reshape(-1)
    if node.attrs["axis"] is None:
        return {"value": values[0].item()}
    return {"axis": node.attrs["axis"], "count": values.numel(), "min": values.min().item(), "max": values.max().item()}


def _layer_scale(node: Node) -> dict[str, Any]:
    """An 8-bit layer's dequantization scales (input scale x weight scale, one per output channel: count and
    min..max) and, where it writes 8 bits, the scale of its output."""
    values = node.inputs[2].data.detach().float().cpu().reshape(-1) if node.inputs[2].data is not None else None
    if values is None:
        return {"computed_at_run_time": True}
    axis = 1 if node.op == "engine.qconv" else -1
    doc = {"axis": axis, "count": values.numel(), "min": values.min().item(), "max": values.max().item()}
    if node.attrs["out_scale"] is not None:
        doc["out_scale"] = node.attrs["out_scale"]
    return doc


def _layer_doc(plan, layer) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": layer.name,
        "op": layer.op,
        "tactic": layer.tactic,
        "precision": layer.precision,
        "macs": layer.macs,
    }
    if layer.op in _QDQ_OPS:
        doc["scale"] = _quantization_scale(plan.graph.node_named(layer.name))
    elif layer.op in QUANTIZED_LAYERS:
        doc["scale"] = _layer_scale(plan.graph.node_named(layer.name))
    return doc


def _scale_text(scale: dict[str, Any] | None) -> str:
    if scale is None:
        return ""
    if scale.get("computed_at_run_time"):
        return "  scale computed at run time"
    if "value" in scale:
        return f"  scale {scale['value']:.6g}"
    text = f"  scales {scale['count']} along axis {scale['axis']}, {scale['min']:.6g}..{scale['max']:.6g}"
    return text + (f", out {scale['out_scale']:.6g}" if "out_scale" in scale else "")


def _plan_doc(plan) -> dict:
    macs = sum(layer.macs for layer in plan.layers)
    tactics = collections.Counter(layer.tactic for layer in plan.layers)
    c = plan.config
    return {
        "max_batch": plan.max_batch,
        # the sizes it runs (min / opt / max per symbol) and, for the text, how to say them
        "profile": plan.profile.to_json(),
        "sizes": f"max batch {plan.max_batch}" if plan.profile.is_batch_only else f"profile {plan.profile.describe()}",
        "device": str(plan.device),
        "built_on": plan.fingerprint.get("device_name"),
        "precision": _precision(c.fp16, c.bf16, c.tf32, plan.device),
        "layers_count": len(plan.layers),
        "arena_bytes": plan.peak_activation_bytes,
        "macs": macs,
        "flops": 2 * macs,
        "passes": plan.counters,
        "tactics": dict(tactics),
        "layers": [_layer_doc(plan, layer) for layer in plan.layers],
    }


def cmd_inspect(args) -> int:
    source = _resolve(args.target, plan=True, model=True, image_size=args.image_size, seq_len=args.seq_len)
    if source.kind == "plan":
        device = _device(args.device)
        module = _load_module(source.name, args, device)
        if args.batch is not None or shape_profile(args) is not None:
            module.build_all(_build_batch(module.graph, source, args))
    else:
        device = _device(args.device or "cpu")
        module, _ = _build_module(source, args, device, args.batch or 1, quiet=args.quiet)
    report = module.report
    plans = module.plans()
    built = [p.max_batch for ps in plans.values() for p in ps]
    batch = args.batch or max(built, default=1)
    env = _example_env(module.graph, source, args, batch) if shape_profile(args) else {BATCH: batch}
    batch = env.get(BATCH, batch)
    macs = _graph_macs(module, env)
    doc = {
        "target": args.target,
        "device": str(device),
        "batch": batch,
        "inputs": [{"name": v.name, "type": str(v.type)} for v in module.graph.inputs],
        "outputs": [{"name": v.name, "type": str(v.type)} for v in module.graph.outputs],
        "macs": macs,
        "flops": 2 * macs,
        "nodes": {"total": report.total_nodes, "offloaded": report.offloaded_nodes} if report else None,
        "mac_share": report.mac_share if report else None,
        "regions": [],
        "fallback": report.reasons() if report else {},
        "fallback_nodes": sum(1 for n in module.graph.nodes if n.op != "subgraph"),
    }
    summaries = {r.name: r for r in report.regions} if report else {}
    for name, region in module.regions.items():
        r = summaries.get(name)
        doc["regions"].append(
            {
                "name": name,
                "nodes": r.num_nodes if r else len(region.nodes),
                "macs": region.macs(env),
                "inputs": [f"{v.name}: {v.type}" for v in region.inputs],
                "outputs": [f"{v.name}: {v.type}" for v in region.outputs],
                "plans": [_plan_doc(p) for p in plans.get(name, [])],
            }
        )
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
        print(
            f"  offloaded: {doc['nodes']['offloaded']}/{doc['nodes']['total']} nodes, "
            f"{100 * doc['mac_share']:.1f}% of MACs; {doc['fallback_nodes']} node(s) run in PyTorch"
        )
    print(f"regions ({len(doc['regions'])}):")
    for r in doc["regions"]:
        print(f"  {r['name']}: {r['nodes']} nodes, {_gmacs(r['macs'])}")
        print(f"    inputs:  {', '.join(r['inputs']) or '-'}")
        print(f"    outputs: {', '.join(r['outputs'])}")
        if not r["plans"]:
            print("    no plan (built at first run)")
        for p in r["plans"]:
            print(
                f"    plan: {p['sizes']}, {p['precision']}, {p['layers_count']} layers, "
                f"{_gmacs(p['macs'])}, arena {_bytes(p['arena_bytes'])} ({p['arena_bytes']} B), "
                f"built on {p['built_on']}"
            )
            print("      tactics: " + ", ".join(f"{t} {n}" for t, n in sorted(p["tactics"].items())))
            print("      passes:  " + ", ".join(f"{k} {v}" for k, v in p["passes"].items()))
            layers = p["layers"] if show_layers is None else p["layers"][:show_layers]
            w_name = max([len(x["name"]) for x in layers] + [5])
            w_op = max([len(x["op"]) for x in layers] + [2])
            w_tac = max([len(x["tactic"]) for x in layers] + [6])
            print(f"      {'layer':<{w_name}}  {'op':<{w_op}}  {'tactic':<{w_tac}}  {'precision':<9}  MACs")
            for x in layers:
                print(
                    f"      {x['name']:<{w_name}}  {x['op']:<{w_op}}  {x['tactic']:<{w_tac}}  "
                    f"{x['precision']:<9}  {x['macs']}{_scale_text(x.get('scale'))}"
                )
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
