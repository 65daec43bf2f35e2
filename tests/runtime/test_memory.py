"""What a module keeps on its device: the fallback nodes' weights and the plans, never the regions' weights.

A region's weights (the model's weights as converted) are only read to build plans, and each plan runs
on its own copy, so the module keeps them in host memory. The machine running the tests has no GPU, so
the device is stood in for: a fake CUDA device (FakeTensorMode: tensors with a device and no data) for a
model converted while on the GPU, and the meta device for loading a saved module onto a device that is
not the host.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import tensorforge as forge

FAKE_GPU = torch.device("cuda", 0)


class TiedAcrossRegions(torch.nn.Module):
    """One linear layer used on both sides of an op the engine lacks: two regions read the same weights."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.lin(self.lin(x).logcumsumexp(dim=1)))


def partitioned(model, x):
    """`model`'s graph with every dense layer run by PyTorch, so the fallback nodes have weights of their own
    (the dense weights) beside the regions' (biases, batch norm, convolution)."""
    return forge.partition_for_tensorforge(forge.frontends.from_torch(model, (x,)), torch_executed_ops=("nn.dense",))


def devices(tensors) -> set[str]:
    return {str(t.device) for t in tensors}


def region_weights(module) -> list[torch.Tensor]:
    return [v.data for region in module.regions.values() for v in region.constants.values()]


def test_a_model_converted_on_the_gpu_leaves_its_region_weights_on_the_host(small_net):
    graph, config = partitioned(small_net, torch.randn(2, 3, 16, 16))
    assert graph.constants and all(r.constants for r in graph.subgraphs.values())
    with FakeTensorMode(allow_non_fake_inputs=True):
        # converted while the model was on the GPU: every constant is one of the model's device tensors
        for g in (graph, *graph.subgraphs.values()):
            for value in g.constants.values():
                value.data = value.data.to(FAKE_GPU)
        module = forge.build(graph, config, device=FAKE_GPU)
    assert devices(region_weights(module)) == {"cpu"}
    assert devices(module._constants.values()) == {str(FAKE_GPU)}, "PyTorch runs the fallback nodes on the device"
    assert set(module._constants) == {"fc.weight"}


def test_regions_that_share_a_weight_share_its_host_copy():
    torch.manual_seed(0)
    model = TiedAcrossRegions().eval()
    graph, config = partitioned(model, torch.randn(2, 16))
    biases = [r.constants["lin.bias"] for r in graph.subgraphs.values() if "lin.bias" in r.constants]
    assert len(biases) == 2 and biases[0] is not biases[1] and biases[0].data is biases[1].data
    with FakeTensorMode(allow_non_fake_inputs=True):
        shared = biases[0].data.to(FAKE_GPU)
        biases[0].data = biases[1].data = shared
        module = forge.build(graph, config, device=FAKE_GPU)
    assert devices(region_weights(module)) == {"cpu"}
    assert biases[0].data is biases[1].data, "one host copy of a tied weight, not one per region"


def test_a_loaded_module_keeps_its_region_weights_on_the_host(small_net, tmp_path):
    x = torch.randn(2, 3, 16, 16)
    graph, config = partitioned(small_net, x)
    built = forge.build(graph, config, device="cpu").build_all(2)
    built.save(tmp_path / "m.tforge", rebuildable=True)
    # the meta device is not the host, so it shows where each weight goes (the CPU plans cannot run there)
    with pytest.warns(RuntimeWarning, match="cannot run here"):
        module = forge.load(tmp_path / "m.tforge", device="meta")
    assert devices(region_weights(module)) == {"cpu"}
    assert devices(module._constants.values()) == {"meta"}
    assert set(module._constants) == {"fc.weight"}


def test_a_loaded_module_runs_on_its_saved_plans_and_saves_its_region_weights_again(small_net, tmp_path):
    x = torch.randn(2, 3, 16, 16)
    graph, config = partitioned(small_net, x)
    forge.build(graph, config, device="cpu").build_all(2).save(tmp_path / "m.tforge", rebuildable=True)
    module = forge.load(tmp_path / "m.tforge", device="cpu")
    assert all(len(plans) == 1 for plans in module.plans().values())
    assert devices(region_weights(module)) == {"cpu"}
    rebuildable = forge.EngineModule()
    rebuildable.load_state_dict(
        {"tforge": torch.frombuffer(bytearray(module.to_bytes(rebuildable=True)), dtype=torch.uint8)}
    )  # written from the host copies
    assert devices(region_weights(rebuildable)) == {"cpu"}
    again = forge.EngineModule()
    again.load_state_dict(module.state_dict())  # each weight once: the plans hold the regions' weights
    assert devices(region_weights(again)) == {"meta"}
    with torch.no_grad():
        expected = small_net(x)
    assert torch.allclose(module(x), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(again(x), expected, rtol=1e-4, atol=1e-5)


def test_a_replaced_plan_is_freed(small_net):
    """Multi-engine mode 0 replaces a region's plan by a larger one; the plan cache must not keep the old
    one (its weights and arena) alive."""
    graph, config = forge.partition_for_tensorforge(forge.frontends.from_torch(small_net, (torch.randn(2, 3, 16, 16),)))
    module = forge.build(graph, config, device="cpu").build_all(1)
    (small,) = module.plans()["tensorforge_0"]
    small = weakref.ref(small)
    module.build_all(4)
    gc.collect()
    assert small() is None
    assert [p.max_batch for p in module.plans()["tensorforge_0"]] == [4]
