"""The batch sizes a module takes: an empty batch as eager does, and convert's max_batch_size as a limit."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from tensorforge.engine import Builder


@pytest.fixture(scope="module")
def converted(request):
    from runtime.conftest import SmallNet

    torch.manual_seed(0)
    net = SmallNet().eval()
    return net, forge.convert(net, [torch.randn(2, 3, 16, 16)], max_batch_size=4, device="cpu")


def test_an_empty_batch_gives_empty_outputs_as_eager_does(converted):
    net, module = converted
    x = torch.randn(0, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
    out = module(x)
    assert out.shape == expected.shape == (0, 5) and out.dtype == expected.dtype
    assert module.plans()["tensorforge_0"][0].max_batch == 4, "no plan was built for the empty batch"


def test_a_batch_above_max_batch_size_is_an_error_that_says_so(converted):
    _, module = converted
    with pytest.raises(ValueError, match="batch size 5 is above this module's max_batch_size 4"):
        module(torch.randn(5, 3, 16, 16))
    assert [p.max_batch for p in module.plans()["tensorforge_0"]] == [4], "nothing was rebuilt"


def test_max_batch_size_survives_the_state_dict(converted):
    _, module = converted
    restored = forge.EngineModule()
    restored.load_state_dict(module.state_dict())
    with pytest.raises(ValueError, match="max_batch_size 4"):
        restored(torch.randn(6, 3, 16, 16))


def test_a_plan_refuses_an_empty_batch_with_the_right_hint(converted):
    _, module = converted
    region = module.regions["tensorforge_0"]
    plan = Builder().build(region, max_batch=2)
    with pytest.raises(ValueError, match="a plan runs batches of 1 or more"):
        plan.run(torch.randn(0, 3, 16, 16))
