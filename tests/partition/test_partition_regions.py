"""Regions: maximal, never cyclic, pruned by min_block_size / remove_no_mac_subgraphs, and cut out correctly."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import tensorforge as forge
from helpers import assert_close
from partition_helpers import B, f32, partition_checked, region_of
from tensorforge import ir
from tensorforge.ir import Graph
from tensorforge.ir.ops.opaque import decode_output_type, encode_output_type
from tensorforge.partition import partition_for_tensorforge

FORCED = {"torch_executed_ops": ("tanh",)}  # tanh marks the nodes that must run in PyTorch


def _regions(graph: Graph) -> dict[str, set[str]]:
    return {name: {n.name for n in sub.nodes} for name, sub in graph.subgraphs.items()}


def _conv_chain():
    g = Graph()
    x = g.add_input("x", f32(B, 3, 8, 8))
    y = g.call("nn.conv2d", x, g.add_constant(torch.randn(4, 3, 3, 3), "w1"), padding=(1, 1), name="conv1")
    y = g.call("nn.relu", y, name="relu1")
    y = g.call("nn.conv2d", y, g.add_constant(torch.randn(4, 4, 1, 1), "w2"), name="conv2")
    y = g.call("add", y, g.add_constant(torch.randn(4, 1, 1), "bias"), name="bias")
    g.set_outputs([g.call("nn.global_avg_pool2d", y, name="pool")])
    return g


def test_chain_becomes_one_region():
    graph = _conv_chain()
    new, config = partition_checked(graph)
    assert [n.op for n in new.nodes] == ["subgraph"]
    call = new.nodes[0]
    assert call.name == call.attrs["callee"] == "tensorforge_0"
    assert call.attrs["target"] == "tensorforge"
    sub = new.subgraphs["tensorforge_0"]
    assert [decode_output_type(t) for t in call.attrs["output_types"]] == [v.type for v in sub.outputs]
    assert call.attrs["output_types"] == (encode_output_type(graph.outputs[0].type),)
    assert [v.name for v in sub.inputs] == ["x"]
    assert sorted(sub.constants) == ["bias", "w1", "w2"]
    assert sub.constants["w1"].data is graph.constants["w1"].data  # shared, not copied
    assert new.constants == {}  # nothing at top level uses them any more
    assert [v.name for v in new.outputs] == [v.name for v in graph.outputs]
    assert config.report.regions[0].num_nodes == 5


def test_diamond_that_naive_merging_would_make_cyclic():
    """a -> t (PyTorch) -> c and a -> b -> c: {a, b, c} as one region would feed t and wait for it."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    a = g.call("nn.relu", x, name="a")
    t = g.call("tanh", a, name="t")
    b = g.call("sigmoid", a, name="b")
    g.set_outputs([g.call("add", t, b, name="c")])
    new, _ = partition_checked(g, **FORCED)
    regions = _regions(new)
    assert sorted(map(sorted, regions.values())) == [["a", "b"], ["c"]]
    assert region_of(new, "t") is None


def test_detour_through_another_region():
    """a -> t1 -> b -> t2 -> c and a -> c: a and c may not merge (the path runs through region {b})."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    a = g.call("nn.relu", x, name="a")
    b = g.call("sigmoid", g.call("tanh", a, name="t1"), name="b")
    t2 = g.call("tanh", b, name="t2")
    g.set_outputs([g.call("add", a, t2, name="c")])
    new, _ = partition_checked(g, **FORCED)
    assert sorted(map(sorted, _regions(new).values())) == [["a"], ["b"], ["c"]]


def test_merge_across_levels_when_no_cycle():
    """x -> t -> b -> d and x -> a -> d: a sits before t, yet {a, b, d} is one region (no path leaves it)."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    a = g.call("sigmoid", x, name="a")
    b = g.call("nn.relu", g.call("tanh", x, name="t"), name="b")
    g.set_outputs([g.call("add", a, b, name="d")])
    new, _ = partition_checked(g, **FORCED)
    assert list(_regions(new).values()) == [{"a", "b", "d"}]


def test_region_outputs_inputs_and_multi_output_nodes():
    """A split whose pieces go to PyTorch, to the region and to the graph outputs; a region input used twice."""
    g = Graph()
    x = g.add_input("x", f32(B, 6))
    p0, p1, p2 = g.call("split", x, indices_or_sections=3, axis=1, name="split")
    t = g.call("tanh", p0, name="t")
    y = g.call("multiply", p1, t, name="mul")
    z = g.call("add", y, t, name="add")
    g.set_outputs([z, p2, y])
    new, config = partition_checked(g, **FORCED)
    regions = _regions(new)
    assert sorted(map(sorted, regions.values())) == [["add", "mul"], ["split"]]
    split_region = next(n for n, nodes in regions.items() if "split" in nodes)
    assert [v.name for v in new.subgraphs[split_region].outputs] == ["split.0", "split.1", "split.2"]
    other = next(n for n in regions if n != split_region)
    assert [v.name for v in new.subgraphs[other].inputs] == ["split.1", "t"]
    assert [v.name for v in new.subgraphs[other].outputs] == [y.name, z.name]
    assert {r.name: r.num_nodes for r in config.report.regions} == {split_region: 1, other: 2}


def test_graph_input_passed_through_and_no_region():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    g.set_outputs([g.call("tanh", x, name="t"), x])
    new, config = partition_checked(g, **FORCED)
    assert new.subgraphs == {} and config.report.regions == ()
    assert config.report.offloaded_nodes == 0 and config.report.node_share == 0.0


def test_constant_shared_by_region_and_pytorch_node():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    c = g.add_constant(torch.randn(4), "c")
    t = g.call("tanh", g.call("add", x, c, name="in_region"), name="t")
    g.set_outputs([g.call("subtract", t, c, name="late")])
    new, _ = partition_checked(g, torch_executed_ops=("tanh", "subtract"))
    assert "c" in new.constants and "c" in new.subgraphs["tensorforge_0"].constants


def test_dead_region_keeps_its_values():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    g.call("nn.relu", x, name="dead")
    g.set_outputs([g.call("tanh", x, name="t")])
    new, _ = partition_checked(g, **FORCED)
    assert [v.name for v in new.subgraphs["tensorforge_0"].outputs] == ["dead"]


def _three_blocks():
    """Regions of 1, 2 and 3 nodes, separated by PyTorch nodes; only the last one does arithmetic (MACs)."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    y = g.call("tanh", g.call("nn.relu", x, name="r1"), name="t1")
    y = g.call("tanh", g.call("sigmoid", g.call("nn.relu", y, name="r2"), name="s2"), name="t2")
    y = g.call("nn.dense", y, g.add_constant(torch.randn(5, 4)), name="d3")
    y = g.call("nn.relu", g.call("add", y, g.add_constant(torch.randn(5)), name="a3"), name="r3")
    g.set_outputs([y])
    return g


@pytest.mark.parametrize("min_block_size,sizes", [(1, [1, 2, 3]), (2, [2, 3]), (3, [3]), (4, [])])
def test_min_block_size(min_block_size, sizes):
    new, config = partition_checked(_three_blocks(), min_block_size=min_block_size, **FORCED)
    assert [r.num_nodes for r in config.report.regions] == sizes
    assert [n for n in new.subgraphs] == [f"tensorforge_{i}" for i in range(len(sizes))]
    for name, size in (("r1", 1), ("s2", 2), ("d3", 3)):
        if size < min_block_size:
            s = "s" if size != 1 else ""
            assert config.report.reason_for(name) == (
                f"its region has {size} node{s}, fewer than min_block_size={min_block_size}"
            )


def test_remove_no_mac_subgraphs():
    new, config = partition_checked(_three_blocks(), remove_no_mac_subgraphs=True, **FORCED)
    assert list(_regions(new).values()) == [{"d3", "a3", "r3"}]
    assert config.report.regions[0].macs == 5 * 4  # batch counted as 1
    for name in ("r1", "r2", "s2"):
        assert config.report.reason_for(name) == "its region has no multiply-accumulate (remove_no_mac_subgraphs)"
    new, config = partition_checked(_three_blocks(), remove_no_mac_subgraphs=False, **FORCED)
    assert len(config.report.regions) == 3


def test_torch_executed_ops_forces_conv_out():
    new, config = partition_checked(_conv_chain(), torch_executed_ops=("nn.conv2d",))
    assert region_of(new, "conv1") is None and region_of(new, "conv2") is None
    assert config.report.reasons()["nn.conv2d"] == {"forced out by torch_executed_ops": ["conv1", "conv2"]}
    assert sorted(map(sorted, _regions(new).values())) == [["bias", "pool"], ["relu1"]]


def test_region_of_constants_only_goes_back_to_pytorch():
    """Without folding (or where a result is too large to fold, see test_partition_fold.py)."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    k = g.call("multiply", g.add_constant(torch.randn(4)), g.add_constant(torch.tensor(2.0)), name="k")
    g.set_outputs([g.call("tanh", g.call("add", x, k, name="a"), name="t")])
    new, config = partition_checked(g, fold_constants=False, **FORCED)
    assert region_of(new, "k") == region_of(new, "a") == "tensorforge_0"  # merged with its consumer
    g2 = Graph()
    x = g2.add_input("x", f32(B, 4))
    k = g2.call("multiply", g2.add_constant(torch.randn(4)), g2.add_constant(torch.tensor(2.0)), name="k")
    g2.set_outputs([g2.call("tanh", x, name="t"), g2.call("subtract", x, k, name="s")])
    new, config = partition_checked(g2, torch_executed_ops=("tanh", "subtract"), fold_constants=False)
    assert new.subgraphs == {}
    assert config.report.reason_for("k") == "its region has no inputs (it computes from constants only)"


def test_region_must_get_the_batch_size_from_its_inputs():
    """arange(stop=batch) feeding a reshape of a static-shaped input: the region could not know the batch."""
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    n = g.call("arange", stop=B, name="n")
    y = g.call("cast", n, dtype="float32", name="as_float")
    t = g.call("tanh", x, name="t")
    g.set_outputs([t, y])
    new, config = partition_checked(g, **FORCED)
    assert new.subgraphs == {}
    assert config.report.reason_for("n") == "its region uses the size batch, which none of its inputs carries"
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    c = g.add_input("c", f32(4))
    n = g.call("full", shape=(B, 4), fill_value=1.0, name="n")
    t = g.call("tanh", x, name="t")
    g.set_outputs([t, g.call("add", n, c, name="add")])
    new, config = partition_checked(g, use_implicit_batch=False, **FORCED)
    assert new.subgraphs == {}
    assert config.report.reason_for("add") == "its region uses the size batch, which none of its inputs carries"
    g.set_outputs([g.call("add", g.call("add", n, c), t, name="add2")])  # now x's batch reaches the region
    new, config = partition_checked(g, use_implicit_batch=False, **FORCED)
    assert region_of(new, "n") == region_of(new, "add2") is not None


def test_order_stays_topological_and_close_to_the_original():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    a = g.call("tanh", x, name="t0")
    b = g.call("nn.relu", a, name="r0")
    c = g.call("tanh", x, name="t1")
    d = g.call("add", b, c, name="add")
    g.set_outputs([g.call("tanh", d, name="t2")])
    new, _ = partition_checked(g, **FORCED)
    assert [n.name for n in new.nodes] == ["t0", "t1", "tensorforge_0", "t2"]


def test_already_partitioned_graph_is_refused():
    new, _ = partition_for_tensorforge(_conv_chain())
    with pytest.raises(ValueError, match="already partitioned"):
        partition_for_tensorforge(new)


def test_region_names_never_clash_with_node_names():
    g = Graph()
    x = g.add_input("x", f32(B, 4))
    y = g.call("tanh", x, name="tensorforge_0")
    g.set_outputs([g.call("nn.relu", y, name="r")])
    new, _ = partition_checked(g, **FORCED)
    call = next(n for n in new.nodes if n.op == "subgraph")
    assert call.attrs["callee"] == "tensorforge_0" and call.name != "tensorforge_0"


# ---------------------------------------------------------------------------------------------
# Random graphs: regions are convex (the result verifies) and maximal (no two touching regions could merge)
# ---------------------------------------------------------------------------------------------


def _random_graph(rng: random.Random, size: int) -> Graph:
    g = Graph()
    values = [g.add_input("x", f32(B, 4)), g.add_input("y", f32(B, 4))]
    for i in range(size):
        if rng.random() < 0.5:
            op = rng.choice(["nn.relu", "sigmoid", "tanh", "negative"])
            values.append(g.call(op, rng.choice(values[-6:]), name=f"n{i}"))
        else:
            op = rng.choice(["add", "multiply", "subtract", "maximum"])
            values.append(g.call(op, rng.choice(values), rng.choice(values[-4:]), name=f"n{i}"))
    used = {id(v) for n in g.nodes for v in n.inputs}
    g.set_outputs([v for v in values[2:] if id(v) not in used] or values[-1:])
    return g


def _condensed_edges(graph: Graph) -> dict[str, set[str]]:
    producer = {id(v): n.name for n in graph.nodes for v in n.outputs}
    succ = {n.name: set() for n in graph.nodes}
    for n in graph.nodes:
        for v in n.inputs:
            if id(v) in producer:
                succ[producer[id(v)]].add(n.name)
    return succ


def _reachable(succ: dict[str, set[str]], start: set[str]) -> set[str]:
    seen, stack = set(), list(start)
    while stack:
        c = stack.pop()
        if c not in seen:
            seen.add(c)
            stack.extend(succ[c])
    return seen


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_convex_and_maximal(seed):
    rng = random.Random(seed)
    graph = _random_graph(rng, rng.randint(5, 40))
    forced = tuple(
        rng.sample(
            ["nn.relu", "sigmoid", "tanh", "negative", "add", "multiply", "subtract", "maximum"], rng.randint(1, 4)
        )
    )
    new, config = partition_checked(graph, torch_executed_ops=forced)
    # maximal: for every edge P -> Q between two regions, another path P -> ... -> Q exists (merging is cyclic)
    succ = _condensed_edges(new)
    regions = {n.name for n in new.nodes if n.op == "subgraph"}
    for p in regions:
        for q in succ[p] & regions:
            assert q in _reachable(succ, succ[p] - {q}), f"regions {p} and {q} could have merged (seed {seed})"
    offloaded = sum(len(sub.nodes) for sub in new.subgraphs.values())
    assert offloaded == config.report.offloaded_nodes
    assert config.report.offloaded_nodes + sum(len(f.nodes) for f in config.report.fallbacks) == len(graph.nodes)
    # every node of a supported op is offloaded: with min_block_size=1 nothing else can keep it out
    for node in graph.nodes:
        assert (region_of(new, node.name) is None) == (node.op in forced), node.name


def test_large_graph_partitions_quickly():
    import time

    rng = random.Random(1)
    graph = _random_graph(rng, 3000)
    start = time.perf_counter()
    new, _ = partition_for_tensorforge(graph, torch_executed_ops=("tanh",))
    assert time.perf_counter() - start < 10
    new.verify()
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    for a, b in zip(ir.execute(graph, x, y), ir.execute(new, x, y)):
        assert torch.equal(a, b)


# -- patterns from PyTorch models that used to leave PyTorch nodes between regions (found by the timm sweep) -------


class _OutlookFold(torch.nn.Module):
    """VOLO's outlook attention: unfold into windows, mix within each window, fold back (overlaps add), crop."""

    def forward(self, x):
        windows = F.unfold(x, 3, padding=1, stride=2)
        mixed = windows.softmax(dim=1) * windows
        return F.pad(F.fold(mixed, x.shape[-2:], 3, padding=1, stride=2), (-1, -1, -1, -1)) * 2


class _StandardisedConv(torch.nn.Module):
    """timm's ScaledStdConv2d (NFNets): the weight standardised per output channel by a training-mode batch norm at
    every call, then a batch-statistics norm on the activations."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, 4, 3, 3))
        self.gain = torch.nn.Parameter(torch.rand(6) + 0.5)

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, 6, -1), None, None, self.gain, training=True, momentum=0.0)
        y = F.conv2d(x, weight.reshape_as(self.weight), padding=1)
        return F.batch_norm(y, None, None, training=True).relu()


class _HaloBlocks(torch.nn.Module):
    """HaloNet's keys and values: overlapping blocks (a block plus a halo around it) cut out with Tensor.unfold,
    attended to by each block's queries."""

    def forward(self, x):
        queries = x.unfold(2, 4, 4).unfold(3, 4, 4).flatten(-2)  # (b, c, 2, 2, 16)
        halo = F.pad(x, (2, 2, 2, 2)).unfold(2, 8, 4).unfold(3, 8, 4).flatten(-2)  # (b, c, 2, 2, 64)
        attention = (queries.permute(0, 2, 3, 4, 1) @ halo.permute(0, 2, 3, 1, 4)).softmax(dim=-1)
        return attention @ halo.permute(0, 2, 3, 4, 1)


@pytest.mark.parametrize(
    "module, shape, folded",
    [
        pytest.param(_OutlookFold, (4, 8, 8), set(), id="fold-and-crop"),
        pytest.param(_StandardisedConv, (4, 6, 6), {"mean", "rsqrt"}, id="weight-standardisation"),
        pytest.param(_HaloBlocks, (4, 8, 8), set(), id="halo-blocks"),
    ],
)
def test_model_patterns_are_one_region(module, shape, folded):
    """F.fold became a scatter-add and a negative pad that ran in PyTorch, cutting VOLO into 5 regions; a
    training-mode batch norm without statistics ran in PyTorch beside NFNets' every convolution; Tensor.unfold ran
    in PyTorch between HaloNet's 4 regions. Now each is one region that matches eager (weight standardisation
    folded into the convolution's constant), at two batches."""
    torch.manual_seed(0)
    model = module().eval()
    x = torch.randn(2, *shape)
    compiled = forge.compile(model, (x,), precision="fp32", device="cpu")
    report = compiled.report
    assert [n.op for n in compiled.graph.nodes] == ["subgraph"], str(report)
    assert report.fallbacks == () and folded <= set(report.folded_ops()), str(report)
    for batch in (2, 3):
        inputs = torch.randn(batch, *shape)
        with torch.no_grad():
            assert_close(compiled(inputs), model(inputs))
