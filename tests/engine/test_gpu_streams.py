"""Independent branches on separate CUDA streams, on a real GPU: GoogLeNet's Inception blocks (FP16, batch 1 and
4) run on several streams, match PyTorch eager, give the same output run after run, and replay inside the
module's CUDA graph and the plan's own; layer by layer (no graph) and after a reload they agree bit for bit with
the same plan built for one stream. Skipped without CUDA (see tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from tensorforge.engine import Builder, BuilderConfig, Plan
from tensorforge.frontends import from_torch

pytestmark = pytest.mark.gpu
torchvision = pytest.importorskip("torchvision")
FP16_REL_TOL = 2e-2  # what the FP16 model tests in test_gpu_engine.py allow


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def googlenet():
    """torchvision's GoogLeNet, random weights. Its own init (std 0.01) shrinks the activations to ~1e-11 by the
    last block, so the logits would be the fc bias whatever the input (and 0 in FP16): He init on the
    convolutions keeps every branch's output in the result, so a wrong branch shows."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(aux_logits=False, init_weights=True).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.cuda()


@pytest.mark.parametrize("batch", [1, 4])
def test_googlenet_fp16_runs_its_branches_on_streams_inside_the_module_graph(googlenet, batch):
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    other = torch.randn(batch, 3, 224, 224, device="cuda")
    module = forge.compile(googlenet, (x,), precision="fp16", device="cuda")
    with torch.no_grad():
        expected, expected_other = googlenet(x), googlenet(other)
        first = module(x)
        second = module(x)
        actual_other = module(other)
    torch.cuda.synchronize()
    assert relative_error(first, expected) < FP16_REL_TOL
    assert relative_error(actual_other, expected_other) < FP16_REL_TOL
    # global pooling makes outputs of different inputs close: the error must stay well below that difference
    assert relative_error(first, expected) < relative_error(expected_other, expected) / 4
    assert torch.equal(first, second), "two runs on the same input differ"
    (plan,) = [p for plans in module.plans().values() for p in plans]
    assert plan.num_streams > 1 and len(plan.schedule.sections) == 9, plan.describe()  # one per Inception block
    assert "stream  MACs" in plan.describe()
    runner = module._graph_runner
    assert runner is not None and runner.captured == 1 and not runner.failures(), runner.failures()


def test_googlenet_plan_on_streams_matches_one_stream_bit_for_bit(googlenet):
    region = from_torch(googlenet, (torch.randn(4, 3, 224, 224, device="cuda"),))
    # optimization level 0 takes the same first-choice tactic for every layer in both builds, so the two plans run
    # the same kernels on the same data: any difference between them is a race between streams
    streamed = Builder(BuilderConfig(fp16=True, optimization_level=0)).build(region, max_batch=4, device="cuda")
    single = Builder(BuilderConfig(fp16=True, optimization_level=0, max_streams=1)).build(
        region, max_batch=4, device="cuda"
    )
    assert streamed.num_streams == 4 and single.num_streams == 1 and streamed.tactics == single.tactics
    loaded = Plan.from_bytes(streamed.to_bytes(), device="cuda")
    assert loaded.schedule == streamed.schedule, "a loaded plan recomputes the same schedule"
    context = streamed.create_execution_context()
    for batch in (1, 4, 1):
        x = torch.randn(batch, 3, 224, 224, device="cuda")
        (reference,) = single.run(x, cuda_graph=False)
        results = {
            "plan graph": streamed.run(x)[0],  # the plan's own CUDA graph, one per batch size
            "plan graph again": streamed.run(x)[0],
            "layer by layer": streamed.run(x, cuda_graph=False)[0],
            "own context": streamed.run(x, context=context)[0],
            "reloaded": loaded.run(x)[0],
        }
        torch.cuda.synchronize()
        for how, result in results.items():
            assert torch.equal(result, reference), f"batch {batch}, {how}: {relative_error(result, reference)}"
    assert streamed._graph_runner.captured == 2 and not streamed._graph_runner.failures()


def test_back_to_back_runs_on_streams_do_not_race(googlenet):
    """Many runs queued layer by layer without waiting for the GPU: the CPU runs far ahead, so the branches
    overlap as much as the events allow and the arena and the allocator's blocks are reused while earlier work is
    still queued. Each result must still be the one its input gives alone."""
    region = from_torch(googlenet, (torch.randn(2, 3, 224, 224, device="cuda"),))
    config = BuilderConfig(fp16=True, optimization_level=0)
    streamed = Builder(config).build(region, max_batch=2, device="cuda")
    single = Builder(config.replace(max_streams=1)).build(region, max_batch=2, device="cuda")
    inputs = [torch.randn(2, 3, 224, 224, device="cuda") for _ in range(8)]
    results = [streamed.run(x, cuda_graph=False)[0] for x in inputs]
    torch.cuda.synchronize()
    for x, result in zip(inputs, results):
        assert torch.equal(result, single.run(x, cuda_graph=False)[0])
