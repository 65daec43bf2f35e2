"""Whole torchvision models through the engine: batch norm folded away, epilogues fused, every pass verifying,
and plans matching PyTorch eager (FP32, max relative error <= 1e-4) at every batch up to max_batch."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import relative_error
from tensorforge.engine import Builder, BuilderConfig, Plan
from tensorforge.engine.memory import conflicts, lifetimes
from tensorforge.engine.passes import PassContext, run_passes
from tensorforge.frontends import from_torch

torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.slow
REL_TOL = 1e-4

# model -> (batch norms, conv/dense layers fused with their epilogue, ops that must all be gone)
MODELS = {
    "resnet18": (torchvision.models.resnet18, 20, 21, {"nn.batch_norm", "nn.relu", "add", "nn.bias_add"}),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 52, 53, {"nn.batch_norm", "clip", "add", "nn.bias_add"}),
}


@pytest.fixture(scope="module", params=list(MODELS))
def converted(request):
    torch.manual_seed(0)
    make, *expected = MODELS[request.param]
    model = make().eval()
    graph = from_torch(model, (torch.randn(2, 3, 64, 64),))
    return request.param, model, graph, expected


def test_passes_fold_and_fuse(converted):
    name, _, graph, (batch_norms, fused, gone) = converted
    assert graph.op_counts()["nn.batch_norm"] == batch_norms
    ctx = PassContext(max_batch=2)
    optimized = run_passes(graph, ctx, verify_each=True)
    assert ctx.counters == {
        "constant_folding": 0,
        "fold_batch_norm": batch_norms,
        "dense_from_matmul": 0,
        "fuse_bias_activation": fused,
        "sink_dequantize": 0,
        "fuse_quantized_layers": 0,
        "fuse_horizontal_dense": 0,
        "assign_precision": 0,
        "sink_transposes": 0,
        "reorder_dense_rows": 0,
        "fuse_layer_norm": 0,
        "hoist_attention_masks": 0,
        "fuse_pointwise": 0,
        "fold_view_chains": 0,
        "dead_code": 0,
    }
    counts = optimized.op_counts()
    assert not gone & set(counts), f"{name}: left {dict(counts)}"
    assert counts["engine.conv"] + counts["engine.dense"] == fused


def test_plan_matches_eager_at_every_batch(converted):
    name, model, graph, _ = converted
    plan = Builder(BuilderConfig()).build(graph, max_batch=2, device="cpu")
    assert all(layer.tactic == "reference" for layer in plan.layers)
    assert conflicts(plan.memory, lifetimes(plan.graph)) == []
    loaded = Plan.from_bytes(plan.to_bytes(), device="cpu")
    for batch in (1, 2):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
        (actual,) = plan.run(x)
        assert actual.shape == expected.shape
        assert relative_error(actual, expected) <= REL_TOL, f"{name} batch {batch}: {relative_error(actual, expected)}"
        assert torch.equal(loaded.run(x)[0], actual)
