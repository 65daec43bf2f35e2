"""Folding before partitioning: what is computed from constants alone becomes a constant, so it never splits regions;
what is too large, random or fails stays a node, with its reason in the report."""

from __future__ import annotations

import pytest
import torch

from partition_helpers import B, f32, partition_checked, region_of
from tensorforge.ir import Graph, TensorType
from tensorforge.ir.ops.opaque import encode_output_type
from tensorforge.partition import PartitionConfig, fold, partition_for_tensorforge


def _opaque(graph: Graph, op: str, inputs, args, output_type: TensorType, name: str):
    """An opaque torch node (what the frontend makes of an ATen op without a converter)."""
    node = graph.add_node(
        op,
        list(inputs),
        {"args": tuple(args), "kwargs": {}, "output_types": (encode_output_type(output_type),)},
        name=name,
    )
    return node.outputs[0]


def _island_between_regions() -> Graph:
    """x + s1 and (x + s1) * s2, where s2 comes from s1 through an opaque op: an island of constants that a region
    holding s1 and s2 would leave and re-enter (Swin's masks and roll indices have this shape)."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    s1 = g.call("multiply", g.add_constant(torch.randn(4)), g.add_constant(torch.tensor(2.0)), name="s1")
    o = _opaque(g, "torch.aten.cumsum.default", [s1], ({"input": 0}, 0), f32(4), name="o")
    s2 = g.call("add", o, g.add_constant(torch.tensor(1.0)), name="s2")
    a = g.call("add", x, s1, name="a")
    g.set_outputs([g.call("multiply", a, s2, name="m")])
    return g


def test_a_constant_island_no_longer_splits_a_region():
    _, unfolded = partition_checked(_island_between_regions(), use_implicit_batch=False, fold_constants=False)
    assert len(unfolded.report.regions) == 2, str(unfolded.report)
    assert unfolded.report.reason_for("o") == "no IR op: torch.aten.cumsum.default runs through PyTorch"
    new, config = partition_checked(_island_between_regions(), use_implicit_batch=False)
    report = config.report
    assert [n.op for n in new.nodes] == ["subgraph"] and report.fallbacks == (), str(report)
    assert region_of(new, "a") == region_of(new, "m") == "tensorforge_0"
    assert report.folded_ops() == {"add": ["s2"], "multiply": ["s1"], "torch.aten.cumsum.default": ["o"]}
    assert report.folded_nodes == 3 and report.total_nodes == 2 and report.not_folded == ()
    assert "folded into constants first (3 nodes): add 1, multiply 1, torch.aten.cumsum.default 1" in str(report)
    region = new.subgraphs["tensorforge_0"]
    assert set(region.constants) == {"s1", "s2"}  # folded results keep their value names
    assert torch.equal(region.constants["s2"].data, torch.cumsum(region.constants["s1"].data, 0) + 1)


def test_the_report_keeps_what_folded_through_json():
    big = Graph()
    x = big.add_input("x", f32(B, 4))
    n = big.call("full", shape=(1 << 20,), fill_value=1.0, name="big")  # 4 MiB from nothing
    big.set_outputs([big.call("add", x, big.call("sum", n, name="total"), name="out")])
    for graph in (_island_between_regions(), big):
        _, config = partition_checked(graph, use_implicit_batch=False)
        again = PartitionConfig.from_json(config.to_json())
        assert again == config and str(again.report) == str(config.report)
    assert again.report.fold_reason("big").startswith("its result (4.0 MiB) is larger than the constants")
    assert PartitionConfig.from_json(PartitionConfig().to_json()).fold_constants is True


def _full_then_sum(shape, dtype="float32") -> Graph:
    g = Graph()
    x = g.add_input("x", f32(B, 1))
    n = g.call("full", shape=shape, fill_value=0.5, dtype=dtype, name="n")
    g.set_outputs([g.call("add", x, g.call("sum", n, name="s"), name="out")])
    return g


def test_a_huge_full_is_neither_folded_nor_computed(monkeypatch):
    """1 GiB of `full` from a scalar: refused from its type, before anything runs."""
    evaluated = []
    run = fold._evaluate
    monkeypatch.setattr(fold, "_evaluate", lambda node, tensors: evaluated.append(node.name) or run(node, tensors))
    new, config = partition_for_tensorforge(_full_then_sum((1 << 28,)), use_implicit_batch=False)
    assert evaluated == [] and config.report.folded == ()
    assert config.report.fold_reason("n") == "its result (1.0 GiB) exceeds the folding limit (64.0 MiB)"
    assert region_of(new, "n") == region_of(new, "out") == "tensorforge_0"  # computed in the engine at run time


@pytest.mark.parametrize(
    "shape,limit,reason",
    [
        (
            (1 << 19,),
            fold.DEFAULT_LIMIT_BYTES,  # 2 MiB from nothing
            (
                "its result (2.0 MiB) is larger than the constants it is computed from (0 B): "
                "cheaper to compute at run time than to store"
            ),
        ),
        ((8,), 16, "its result (32 B) exceeds the folding limit (16 B)"),
        ((0,), 0, None),  # an empty result is never too large
        ((1 << 18,), fold.DEFAULT_LIMIT_BYTES, None),  # 1 MiB folds whatever it comes from
    ],
)
def test_size_bound(shape, limit, reason):
    new, config = partition_checked(_full_then_sum(shape), use_implicit_batch=False, fold_limit_bytes=limit)
    report = config.report
    assert report.fold_reason("n") == reason
    if reason is None:
        assert report.folded_ops()["full"] == ["n"]
    else:
        assert report.folded == () and region_of(new, "n") is not None
        assert f"not folded, full (1): {reason}" in str(report)


def test_a_result_as_large_as_its_source_folds():
    """Transposing a 4 MiB weight: no larger than what it comes from. (Small integers as values: the product is
    exact whatever order the kernel sums in, for the folded contiguous weight as for the transposed view.)"""
    g = Graph()
    x = g.add_input("x", f32(B, 1024))
    w = g.call("transpose", g.add_constant(torch.randint(-3, 4, (1024, 1024)).float()), axes=(1, 0), name="wt")
    g.set_outputs([g.call("matmul", x, w, name="mm")])
    new, config = partition_checked(g, inputs=[torch.randint(-3, 4, (3, 1024)).float()], use_implicit_batch=False)
    assert config.report.folded_ops() == {"transpose": ["wt"]}
    assert torch.equal(new.subgraphs["tensorforge_0"].constants["wt"].data, g.constants["const"].data.T)


def _random_plus() -> Graph:
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    r = _opaque(g, "torch.aten.rand.default", [], ({"list": [4]},), f32(4), name="r")
    g.set_outputs([g.call("add", x, r, name="out")])
    return g


def test_random_ops_are_not_folded():
    new, config = partition_for_tensorforge(_random_plus(), use_implicit_batch=False)
    assert config.report.folded == ()
    assert config.report.fold_reason("r") == "torch.aten.rand.default draws random numbers: each run must draw its own"
    assert [n.name for n in new.nodes if n.op != "subgraph"] == ["r"]


def test_nodes_that_fail_or_disagree_with_their_type_stay():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    c = g.add_constant(torch.randn(4))
    bad_dim = _opaque(g, "torch.aten.cumsum.default", [c], ({"input": 0}, 3), f32(4), name="bad_dim")
    wrong_type = _opaque(g, "torch.aten.cumsum.default", [c], ({"input": 0}, 0), f32(2, 2), name="wrong_type")
    g.set_outputs([g.call("add", x, bad_dim, name="a"), wrong_type])
    _, config = partition_for_tensorforge(g, use_implicit_batch=False)
    assert config.report.folded == ()
    assert config.report.fold_reason("bad_dim").startswith("evaluating it failed (IndexError: Dimension out of range")
    assert config.report.fold_reason("wrong_type") == "it computed f32[4], but the graph declares f32[2,2]"


def test_batch_dependent_and_input_dependent_nodes_are_not_constants():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    n = g.call("arange", stop=B, name="n")  # no inputs, but its size is the batch
    g.set_outputs([g.call("multiply", x, g.call("cast", g.call("sum", n), dtype="float32"), name="m")])
    _, config = partition_checked(g, use_implicit_batch=False)
    assert config.report.folded == () and config.report.not_folded == ()


def test_multi_output_nodes_and_constant_outputs_fold():
    g = Graph()
    x = g.add_input("x", f32(B, 2))
    halves = g.call("split", g.add_constant(torch.randn(4)), indices_or_sections=2, name="halves")
    g.set_outputs([g.call("add", x, halves[0], name="a"), halves[1]])
    new, config = partition_checked(g, use_implicit_batch=False)
    assert config.report.folded_ops() == {"split": ["halves"]}
    assert new.outputs[1].data is not None  # the graph returns the constant itself


def test_folding_off_keeps_every_node():
    _, config = partition_checked(_island_between_regions(), use_implicit_batch=False, fold_constants=False)
    assert config.report.folded == () and config.report.total_nodes == 5
