"""`tensorforge build`: convert, partition and build a model; save one .tforge."""

from __future__ import annotations

import json
import os
import time

from .common import PROG, CLIError
from .measure import _bytes
from .sources import (
    _build_module,
    _describe_profile,
    _device,
    _requested_precision,
    _resolve,
    _shapes_summary,
    shape_profile,
)


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
    module.save(args.output, rebuildable=args.rebuildable)
    total = time.perf_counter() - start
    report = module.report
    plans = [(name, p) for name, ps in module.plans().items() for p in ps]
    fallback = sum(1 for n in module.graph.nodes if n.op != "subgraph")
    summary = {
        "model": source.name,
        "output": args.output,
        "file_bytes": os.path.getsize(args.output),
        "device": str(device),
        "precision": _requested_precision(args, device),
        "batch": None if shape_profile(args) else args.batch,
        "shapes": _shapes_summary(args),
        "implicit_batch": args.implicit_batch,
        "rebuildable": args.rebuildable,
        "regions": len(module.regions),
        "fallback_nodes": fallback,
        "offloaded_nodes": report.offloaded_nodes,
        "total_nodes": report.total_nodes,
        "mac_share": report.mac_share,
        "plans": [
            {"region": name, "max_batch": p.max_batch, "layers": len(p.layers), "arena_bytes": p.peak_activation_bytes}
            for name, p in plans
        ],
        "time_s": total,
        **stages,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"built {source.name} -> {args.output} ({_bytes(summary['file_bytes'])}) in {total:.1f} s "
        f"(convert {stages['convert_s']:.1f} s, partition {stages['partition_s']:.1f} s, "
        f"plans {stages['build_s']:.1f} s)"
    )
    spec = shape_profile(args)
    sizes = f"batch {args.batch}" if spec is None else f"shapes {_describe_profile(spec)}"
    print(
        f"  device {device}, precision {summary['precision']}, {sizes}, "
        f"{'implicit' if args.implicit_batch else 'explicit'} batch"
    )
    print(
        f"  regions: {len(module.regions)} ({report.offloaded_nodes}/{report.total_nodes} nodes, "
        f"{100 * report.mac_share:.1f}% of MACs offloaded); fallback nodes: {fallback}"
    )
    for name, p in plans:
        print(
            f"  plan {name}: {len(p.layers)} layers, arena {_bytes(p.peak_activation_bytes)}, "
            + (f"max batch {p.max_batch}" if p.profile.is_batch_only else f"profile {p.profile.describe()}")
        )
    if args.rebuildable:
        print("  with the regions' weights: the plans can be rebuilt on another GPU or library version")
    else:
        print(
            "  each weight once, in the plans: they run on this device and library versions, up to their max "
            "batch (--rebuildable keeps the regions' weights for a rebuild)"
        )
    if fallback:
        print(f"  see why {fallback} node{'s' * (fallback != 1)} stayed in PyTorch: {PROG} inspect {args.output}")
    return 0
