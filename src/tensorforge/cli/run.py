"""`tensorforge run`: run a saved .tforge on arrays from .npy/.npz."""

from __future__ import annotations

import json
import time

from .common import CLIError
from .sources import _as_tuple, _device, _read_inputs, _resolve, _stats


def archive_names(names: list[str]) -> list[str]:
    """Output names as .npz member names: a name comes from the file, so it is made a plain file name (no
    directories, no '..') and unique (a value returned twice, or two names made equal, would overwrite one)."""
    from ..serving.signature import tensor_names

    return tensor_names(names, "output")


def cmd_run(args) -> int:
    import numpy as np
    import torch

    import tensorforge as forge

    device = _device(args.device)
    _resolve(args.plan, plan=True, model=False)
    if args.output and not args.output.endswith((".npz", ".npy")):
        raise CLIError(f"--output {args.output}: the file name must end in .npz (or .npy for one output)")
    module = forge.load(args.plan, device=device)
    assert module.graph is not None  # load fills the module it returns
    names = archive_names([v.name for v in module.graph.outputs])
    if args.output and args.output.endswith(".npy") and len(names) != 1:
        raise CLIError(
            f"--output {args.output}: this model has {len(names)} outputs ({', '.join(names)}): write an .npz"
        )
    inputs = _read_inputs(args.input, module.graph, device)
    start = time.perf_counter()
    outputs = _as_tuple(module(*inputs))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    # numpy has no bfloat16: such outputs are written as float32
    arrays = {
        name: (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy() for name, t in zip(names, outputs)
    }
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, arrays[names[0]])
    elif args.output:
        np.savez(args.output, **arrays)
    stats = {name: _stats(t) for name, t in zip(names, outputs)}
    if args.json:
        print(
            json.dumps(
                {
                    "plan": args.plan,
                    "device": str(device),
                    "time_ms": elapsed * 1e3,
                    "output_file": args.output,
                    "outputs": stats,
                },
                indent=2,
            )
        )
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
