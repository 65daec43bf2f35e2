"""Whole models from the PyTorch frontend: resnet50 becomes exactly one region with nothing left out."""

from __future__ import annotations

import pytest
import torch

from partition_helpers import partition_checked
from tensorforge.frontends import from_torch

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow


def _convert(model, inputs):
    try:
        return from_torch(model.eval(), inputs)
    except NotImplementedError:
        pytest.skip("from_torch not ready")


def test_resnet50_is_one_region():
    torch.manual_seed(0)
    graph = _convert(torchvision.models.resnet50(), (torch.randn(2, 3, 224, 224),))
    new, config = partition_checked(graph, inputs=[torch.randn(2, 3, 224, 224)])
    report = config.report
    assert [n.op for n in new.nodes] == ["subgraph"], str(report)
    assert list(new.subgraphs) == ["tensorforge_0"]
    assert report.fallbacks == () and report.offloaded_nodes == report.total_nodes == len(graph.nodes)
    assert report.mac_share == 1.0 and report.offloaded_macs > 4e9  # ~4.1 GMACs per image
    used = {v.name for n in graph.nodes for v in n.inputs if v.data is not None}  # not num_batches_tracked
    assert set(new.subgraphs["tensorforge_0"].constants) == used
    assert new.constants == {}


def test_resnet50_for_an_old_engine_and_explicit_batch_is_still_one_region():
    torch.manual_seed(0)
    graph = _convert(torchvision.models.resnet50(), (torch.randn(2, 3, 224, 224),))
    new, config = partition_checked(graph, inputs=[torch.randn(1, 3, 224, 224)], version=(0, 1, 0),
                                    use_implicit_batch=False, min_block_size=5, remove_no_mac_subgraphs=True)
    assert [n.op for n in new.nodes] == ["subgraph"] and config.report.fallbacks == ()
