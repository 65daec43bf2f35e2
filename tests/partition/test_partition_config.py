"""PartitionConfig (options, validation, JSON), PartitionReport (counts, shares, regions, every reason) and
region serialization (JSON plus weights, no GPU)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from partition_helpers import B, f32, partition_checked, random_inputs
from tensorforge import ir
from tensorforge.ir import Graph, TensorType
from tensorforge.ir.ops.opaque import encode_output_type
from tensorforge.partition import (
    ENGINE_VERSION,
    PartitionConfig,
    PartitionReport,
    deserialize_region,
    partition_for_tensorforge,
    serialize_region,
)

# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def _small_graph():
    g = Graph()
    x = g.add_input("x", f32(B, 3, 6, 6))
    y = g.call("nn.conv2d", x, g.add_constant(torch.randn(4, 3, 3, 3), "w"), name="conv")
    g.set_outputs([g.call("nn.relu", y, name="relu")])
    return g


def test_defaults_match_the_signature():
    _, config = partition_for_tensorforge(_small_graph())
    assert config.version == ENGINE_VERSION
    assert config.use_implicit_batch is True
    assert config.min_block_size == 1
    assert config.remove_no_mac_subgraphs is False
    assert config.max_workspace_size == 1 << 30
    assert config.torch_executed_ops == ()
    assert config.device_capability is None
    assert isinstance(config.report, PartitionReport)


def test_options_are_recorded_and_normalized():
    _, config = partition_for_tensorforge(
        _small_graph(),
        version=[0, 1, 0],
        use_implicit_batch=False,
        min_block_size=2,
        remove_no_mac_subgraphs=True,
        max_workspace_size=1 << 20,
        torch_executed_ops=["nn.relu"],
        device_capability=[8, 6],
    )
    assert (
        config.version,
        config.use_implicit_batch,
        config.min_block_size,
        config.remove_no_mac_subgraphs,
        config.max_workspace_size,
        config.torch_executed_ops,
        config.device_capability,
    ) == ((0, 1, 0), False, 2, True, 1 << 20, ("nn.relu",), (8, 6))
    assert PartitionConfig(torch_executed_ops="nn.relu").torch_executed_ops == ("nn.relu",)


def test_config_is_frozen():
    config = PartitionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_block_size = 3


def test_json_round_trip_includes_the_report():
    _, config = partition_checked(_small_graph(), torch_executed_ops=("nn.relu",), device_capability=(8, 0))
    text = config.to_json()
    doc = json.loads(text)
    assert doc["format"] == "tensorforge.partition_config" and doc["torch_executed_ops"] == ["nn.relu"]
    assert doc["report"]["fallback"] == {"nn.relu": {"forced out by torch_executed_ops": ["relu"]}}
    again = PartitionConfig.from_json(text)
    assert again == config
    assert again.report == config.report and str(again.report) == str(config.report)
    assert PartitionConfig.from_json(PartitionConfig().to_json()) == PartitionConfig()


@pytest.mark.parametrize(
    "options,message",
    [
        ({"version": (0, 4, 0)}, "newer than the engine this tensorforge builds"),
        ({"version": (0, 1)}, "version must be a tuple of 3"),
        ({"version": "0.1.0"}, "version must be a tuple of 3"),
        ({"min_block_size": 0}, "min_block_size must be an int >= 1"),
        ({"max_workspace_size": -1}, "max_workspace_size must be an int >= 1"),
        ({"use_implicit_batch": "yes"}, "use_implicit_batch must be a bool"),
        ({"torch_executed_ops": ("nn.conv",)}, "unknown IR op 'nn.conv'; did you mean"),
        ({"device_capability": (8,)}, "device_capability must be a tuple of 2"),
        ({"fold_constants": 1}, "fold_constants must be a bool"),
        ({"fold_limit_bytes": -1}, "fold_limit_bytes must be an int >= 0"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        partition_for_tensorforge(_small_graph(), **options)


def test_from_json_refuses_other_documents():
    with pytest.raises(ValueError, match="not a tensorforge partition config"):
        PartitionConfig.from_json('{"format": "something else"}')


def test_device_capability_auto(monkeypatch):
    graph = _small_graph()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert partition_for_tensorforge(graph, device_capability="auto")[1].device_capability is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    _, config = partition_for_tensorforge(graph, device_capability="auto")
    assert config.device_capability == (7, 5)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _mixed_graph():
    """Two conv regions, a forced-out relu, three opaque cumsums, a cast to float64 and two float64 adds."""
    g = Graph()
    x = g.add_input("x", f32(B, 3, 6, 6))
    y = g.call("nn.conv2d", x, g.add_constant(torch.randn(4, 3, 3, 3), "w"), padding=(1, 1), name="conv")
    y = g.call("nn.relu", y, name="relu")
    for i in range(3):
        y = g.add_node(
            "torch.aten.cumsum.default",
            [y],
            {"args": ({"input": 0}, 1), "kwargs": {}, "output_types": (encode_output_type(y.type),)},
            name=f"cumsum{i}",
        ).output
    z = g.call("cast", y, dtype="float64", name="to64")
    z = g.call("add", z, z, name="add64_a")
    z = g.call("add", z, z, name="add64_b")
    y = g.call("nn.conv2d", y, g.add_constant(torch.randn(2, 4, 1, 1), "w2"), name="conv_b")
    g.set_outputs([y, z])
    return g


def test_report_counts_shares_regions_and_every_reason():
    graph = _mixed_graph()
    new, config = partition_checked(graph, torch_executed_ops=("nn.relu",))
    report = config.report
    assert report.graph == "main"
    assert report.counts() == {
        "add": (2, 0),
        "cast": (1, 0),
        "nn.conv2d": (2, 2),
        "nn.relu": (1, 0),
        "torch.aten.cumsum.default": (3, 0),
    }
    assert (report.total_nodes, report.offloaded_nodes) == (9, 2)
    assert report.node_share == pytest.approx(2 / 9)
    conv_macs = 4 * 6 * 6 * 3 * 3 * 3
    assert report.total_macs == report.offloaded_macs == graph.macs() == conv_macs + 2 * 6 * 6 * 4
    assert report.mac_share == 1.0
    assert [(r.name, r.num_nodes) for r in report.regions] == [("tensorforge_0", 1), ("tensorforge_1", 1)]
    assert report.regions[0].inputs == (("x", "f32[batch,3,6,6]"),)
    assert report.regions[0].outputs == (("conv", "f32[batch,4,6,6]"),)
    assert report.regions[1].inputs == (("cumsum2", "f32[batch,4,6,6]"),)
    assert report.regions[1].macs == 2 * 6 * 6 * 4
    assert report.reasons() == {
        "add": {
            "dtype float64 is not supported (the engine's add takes bfloat16, float16, float32, int32, int64)": [
                "add64_a",
                "add64_b",
            ]
        },
        "cast": {
            "dtype float64 is not supported (the engine's cast takes bfloat16, bool, float16, float32, int32, int64)": [
                "to64"
            ]
        },
        "nn.relu": {"forced out by torch_executed_ops": ["relu"]},
        "torch.aten.cumsum.default": {
            "no IR op: torch.aten.cumsum.default runs through PyTorch": ["cumsum0", "cumsum1", "cumsum2"]
        },
    }
    assert report.reason_for("cumsum1") == "no IR op: torch.aten.cumsum.default runs through PyTorch"
    assert report.reason_for("conv") is None


def test_report_text_lists_everything():
    _, config = partition_checked(_mixed_graph(), torch_executed_ops=("nn.relu",))
    text = str(config.report)
    assert "2/9 nodes offloaded (22.2%)" in text
    assert "100.0% of MACs" in text
    for fragment in (
        "tensorforge_0: 1 node,",
        "tensorforge_1: 1 node,",
        "inputs:  %x: f32[batch,3,6,6]",
        "torch.aten.cumsum.default (3):",
        "no IR op: torch.aten.cumsum.default runs through PyTorch: cumsum0, cumsum1, cumsum2",
        "add (2):",
        "add64_a, add64_b",
        "forced out by torch_executed_ops: relu",
    ):
        assert fragment in text, fragment
    assert re.search(r"^  nn\.conv2d +2/2$", text, re.MULTILINE)
    assert re.search(r"^  torch\.aten\.cumsum\.default +0/3$", text, re.MULTILINE)


def test_report_dict_is_json_and_round_trips():
    _, config = partition_checked(_mixed_graph(), torch_executed_ops=("nn.relu",))
    doc = json.loads(json.dumps(config.report.to_dict()))
    assert doc["nodes"] == {"total": 9, "offloaded": 2}
    assert doc["fallback"]["torch.aten.cumsum.default"] == {
        "no IR op: torch.aten.cumsum.default runs through PyTorch": ["cumsum0", "cumsum1", "cumsum2"]
    }
    assert PartitionReport.from_dict(doc) == config.report


def test_report_when_everything_is_offloaded():
    _, config = partition_checked(_small_graph())
    assert config.report.fallbacks == () and config.report.node_share == 1.0
    assert "stayed in PyTorch: nothing" in str(config.report)


# ---------------------------------------------------------------------------------------------
# Region serialization
# ---------------------------------------------------------------------------------------------


def test_serialize_region_round_trip():
    graph = _mixed_graph()
    new, _ = partition_checked(graph, torch_executed_ops=("nn.relu",))
    for name, sub in new.subgraphs.items():
        text, tensors = serialize_region(sub)
        doc = json.loads(text)
        assert doc["name"] == name and doc["format"] == "tensorforge.ir"
        assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors.values())
        assert set(tensors) == set(sub.constants)
        again = deserialize_region(text, tensors)
        again.verify()
        assert serialize_region(again)[0] == text  # deterministic: the engine cache can hash it
        inputs = random_inputs(sub)
        for a, b in zip(ir.execute(sub, *inputs), ir.execute(again, *inputs)):
            assert torch.equal(a, b)
    text, tensors = serialize_region(new.subgraphs["tensorforge_0"])
    assert "nn.conv2d" in text and torch.equal(tensors["w"], graph.constants["w"].data)


def test_partitioned_graph_saves_and_loads(tmp_path):
    new, _ = partition_checked(_mixed_graph(), torch_executed_ops=("nn.relu",))
    ir.save(new, tmp_path / "g.tforge")
    loaded = ir.load(tmp_path / "g.tforge")
    loaded.verify()
    assert sorted(loaded.subgraphs) == sorted(new.subgraphs)
    x = torch.randn(2, 3, 6, 6)
    for a, b in zip(ir.execute(new, x), ir.execute(loaded, x)):
        assert torch.equal(a, b)


def test_bfloat16_graph_on_old_gpu_reports_the_capability():
    g = Graph()
    x = g.add_input("x", TensorType("bfloat16", (B, 4)))
    g.set_outputs([g.call("nn.relu", x, name="relu")])
    _, config = partition_checked(g, device_capability=(7, 0))
    assert config.report.reasons() == {
        "nn.relu": {"dtype bfloat16 needs compute capability 8.0; the device has 7.0": ["relu"]}
    }
