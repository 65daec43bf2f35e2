"""Every engine.dense tactic timed on the transformer GEMMs of the benchmark suite, as the builder times them.

For each layer shape (BERT-base at sequence 128 and ViT-B/16, batch 1 and 32: the fused QKV projection, the
attention output projection with its residual, the MLP's GELU expansion and its residual contraction) the
script builds the one-layer graph, asks the registry for the supported tactics and times each one with the
builder's own measurement (`timing.measure`: CUDA-graph replays, the epilogue included, so a library GEMM pays
for its separate activation kernel). It prints milliseconds, TFLOP/s, and the fastest tactic per shape, and
writes the table as JSON. Use it to see whether a Triton tile beats cuBLAS where the epilogue is large.

    python bench/gemm_tactics.py [--out bench/results/gemm_tactics.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import tensorforge  # noqa: F401 - registers the tactics
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext
from tensorforge.engine.tactics.registry import candidates
from tensorforge.engine.timing import measure
from tensorforge.ir import Graph, Sym, TensorType

GELU = ("nn.gelu", (("approximate", "none"),))
# name -> (tokens per sample, K, N, activation, residual)
LAYERS = {
    "bert.qkv": (128, 768, 2304, None, False),
    "bert.attn_out": (128, 768, 768, None, True),
    "bert.fc1_gelu": (128, 768, 3072, GELU, False),
    "bert.fc2": (128, 3072, 768, None, True),
    "vit.qkv": (197, 768, 2304, None, False),
    "vit.fc1_gelu": (197, 768, 3072, GELU, False),
    "vit.fc2": (197, 3072, 768, None, True),
}


def dense_layer(tokens: int, k: int, n: int, activation, residual: bool) -> Graph:
    batch = Sym("batch")
    g = Graph("dense")
    x = g.add_input("x", TensorType("float16", (batch, tokens, k)))
    inputs = [x, g.add_constant((torch.randn(n, k) / k**0.5).half(), "w"), g.add_constant(torch.randn(n).half(), "b")]
    if residual:
        inputs.append(g.add_input("r", TensorType("float16", (batch, tokens, n))))
    act, attrs = activation or (None, ())
    g.set_outputs(
        [
            g.call(
                "engine.dense",
                *inputs,
                has_bias=True,
                activation=act,
                activation_attrs=attrs,
                has_residual=residual,
                residual_position="pre_activation",
            )
        ]
    )
    return g.verify()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gemm_tactics: needs a CUDA GPU", file=sys.stderr)
        return 2
    config = BuilderConfig(fp16=True, optimization_level=5)  # every tile, the level-4 ones included
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for name, (tokens, k, n, act, residual) in LAYERS.items():
            (node,) = dense_layer(tokens, k, n, act, residual).nodes
            ctx = BindContext(torch.device("cuda"), config, batch)
            supported, _ = candidates(node, "cuda", config)
            flop = 2 * batch * tokens * k * n
            timings = {}
            for t in supported:
                try:
                    timings[t.name] = measure(t.bind(node, ctx), node, ctx, args.runs)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"  {name} b{batch} {t.name}: {type(exc).__name__}: {exc}")
            best = min(timings, key=timings.get)
            rows.append(
                {
                    "layer": name,
                    "batch": batch,
                    "m": batch * tokens,
                    "n": n,
                    "k": k,
                    "timings_ms": timings,
                    "best": best,
                }
            )
            cells = "  ".join(
                f"{t}={ms * 1e3:.1f}us({flop / ms / 1e9:.0f}TF)"
                for t, ms in sorted(timings.items(), key=lambda kv: kv[1])
            )
            print(f"{name:>14} b{batch:<3} M={batch * tokens:<5} N={n:<5} K={k:<5} best {best}: {cells}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
