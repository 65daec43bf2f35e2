"""Plans over a profile on a real GPU (issue 14): one plan runs every size inside its ranges with the GPU tactics
(cuDNN, cuBLAS, Triton: depthwise convolutions and pools read the run's sizes, not the opt ones), in FP32 and FP16,
against PyTorch eager; and the module's CUDA graphs stay within their LRU as shapes vary. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.export import Dim

import tensorforge as forge
from small_models import TinyEncoder
from tensorforge.ir import Profile

pytestmark = pytest.mark.gpu
TOL = {"fp32": 1e-2, "fp16": 2e-2}  # max relative error against eager FP32 (TF32 may run FP32 products)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_an_encoder_plan_over_seq_runs_every_length_on_the_gpu(precision):
    model = TinyEncoder(vocab=100, hidden=64, mlp=128).eval().cuda()
    ids = torch.randint(0, 100, (2, 16), device="cuda")
    module = forge.compile(
        model,
        (ids,),
        precision,
        dynamic_shapes={"input_ids": {0: Dim("batch", min=1, max=4), 1: Dim("seq", min=4, max=256)}},
        profiles=[{"batch": (1, 2, 4), "seq": (4, 64, 256)}],
    )
    assert all(n.op == "subgraph" for n in module.graph.nodes), "the whole encoder should run in the engine"
    for batch, length in [(2, 64), (1, 4), (4, 77), (3, 256), (2, 64)]:
        x = torch.randint(0, 100, (batch, length), device="cuda")
        with torch.no_grad():
            expected = model(x)
        assert rel_err(module(x), expected) <= TOL[precision], (batch, length)
    (plans,) = module.plans().values()
    assert [p.profile for p in plans] == [Profile({"batch": (1, 2, 4), "seq": (4, 64, 256)})]
    assert module._cache.builds == 1
    stats = module._graph_runner.stats  # one CUDA graph per shape; the repeated (2, 64) replays
    assert stats.captures == 4 and stats.replays >= 1


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_mobilenet_over_image_sizes_runs_every_size_on_the_gpu(precision):
    """Depthwise convolutions, strided convolutions and the adaptive pool over h x w, odd sizes included."""
    model = torchvision.models.mobilenet_v2(num_classes=10).cuda()
    with torch.no_grad():  # calibrate the batch norms: freshly initialised, the logits are ~1e-9, below FP16's range
        model(torch.randn(8, 3, 96, 96, device="cuda"))
    model.eval()
    x = torch.randn(1, 3, 96, 96, device="cuda")
    h, w = Dim("h", min=64, max=160), Dim("w", min=64, max=160)
    module = forge.compile(
        model, (x,), precision, dynamic_shapes={"x": {2: h, 3: w}}, profiles=[{"h": (64, 96, 160), "w": (64, 96, 160)}]
    )
    assert all(n.op == "subgraph" for n in module.graph.nodes)
    for height, width in [(96, 96), (64, 160), (131, 77), (160, 160)]:
        image = torch.randn(1, 3, height, width, device="cuda")
        with torch.no_grad():
            expected = model(image)
        assert rel_err(module(image), expected) <= TOL[precision], (height, width)
    assert module._cache.builds == 1


def test_the_module_keeps_at_most_cuda_graph_cache_size_graphs():
    model = TinyEncoder(vocab=100, hidden=64, mlp=128).eval().cuda()
    ids = torch.randint(0, 100, (1, 8), device="cuda")
    module = forge.compile(
        model,
        (ids,),
        "fp16",
        dynamic_shapes={"input_ids": {1: Dim("seq", min=4, max=64)}},
        profiles=[{"seq": (4, 32, 64)}],
        cuda_graph_cache_size=2,
    )
    for length in [8, 9, 10, 8, 11, 12, 13, 14]:
        module(torch.randint(0, 100, (1, length), device="cuda"))
    runner = module._graph_runner
    assert len(runner.signatures()) <= 2
    assert runner.stats.evictions >= 5 and module._cache.builds == 1
