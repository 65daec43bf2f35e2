"""The main demo: convert a real torchvision model, show what the IR holds, and check the numbers.

    .venv/bin/python examples/demo.py [resnet50|mobilenet_v2|vit_b_16]
"""

from __future__ import annotations

import sys
import time

import torch
import torchvision

import tensorforge as forge


def main(name: str = "resnet50") -> int:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()  # random weights: no downloads here
    x = torch.randn(2, 3, 224, 224)

    start = time.perf_counter()
    graph = forge.frontends.from_torch(model, (x,))
    print(f"converted {name} in {time.perf_counter() - start:.1f} s\n")
    print(graph.summary())

    x = torch.randn(3, 3, 224, 224)  # another batch size: the batch dimension is symbolic
    with torch.no_grad():
        expected = model(x)
    actual = forge.ir.execute(graph, x)[0]
    rel = ((actual - expected).abs().max() / expected.abs().max()).item()
    ok = rel <= 1e-4
    print(f"\nnumerical check at batch 3 against PyTorch eager: max relative error {rel:.2e} "
          f"({'OK' if ok else 'FAILED'}, tolerance 1e-4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
