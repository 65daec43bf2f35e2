"""Stream schedules (engine/streams.py) and the arena rule that goes with them, on the CPU.

Which layer runs on which stream and what it waits for (a diamond, an Inception block, chains that must stay on
one stream, nested forks); that every pair of activations sharing arena bytes is ordered by the schedule (an
independent happens-before check, over Inception-like graphs, GoogLeNet and random DAGs); and that a plan
scheduled for several streams computes the same results in every order its streams allow (the CPU runs the
layers one by one, which is one of those orders)."""

from __future__ import annotations

import random

import pytest
import torch

from engine_helpers import BATCH, FUSED_TOL, assert_outputs_close, graph_with_input
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig, Plan
from tensorforge.engine import builder as builder_module
from tensorforge.engine.context import ExecutionContext
from tensorforge.engine.memory import lifetimes, plan_memory
from tensorforge.engine.plan import _schedule_for_arena
from tensorforge.engine.streams import plan_streams, schedule_streams, single_stream
from tensorforge.ir.execute import bind_symbols
from test_engine_memory import random_graph

ENV = {"batch": 1}


# ---------------------------------------------------------------------------------------------
# Graphs (every convolution here does at least MIN_STREAM_MACS at batch 1, unless it is meant to be tiny)
# ---------------------------------------------------------------------------------------------


def conv(g, x, channels: int, kernel: int):
    """conv (no bias) + relu: two nodes, the relu continues the conv's chain."""
    cin = x.type.shape[1]
    w = g.add_constant(torch.randn(channels, cin, kernel, kernel) * (cin * kernel * kernel) ** -0.5, "w")
    return g.call("nn.relu", g.call("nn.conv2d", x, w, padding=(kernel // 2, kernel // 2)))


def inception(g, x):
    """GoogLeNet's block: 1x1, 1x1->3x3, 1x1->5x5 and pool->1x1 branches, joined by concatenate."""
    one = conv(g, x, 32, 1)
    three = conv(g, conv(g, x, 8, 1), 32, 3)
    five = conv(g, conv(g, x, 8, 1), 32, 5)
    pool = conv(g, g.call("nn.max_pool2d", x, pool_size=(3, 3), padding=(1, 1)), 32, 1)
    return g.call("concatenate", one, three, five, pool, axis=1)


def inception_net(blocks: int = 2):
    g, x = graph_with_input((3, 32, 32), name="inception")
    h = conv(g, x, 32, 3)
    for _ in range(blocks):
        h = inception(g, h)
    g.set_outputs([g.call("reshape", g.call("nn.global_avg_pool2d", h), newshape=(BATCH, 128))])
    return g.verify()


def diamond(branch_output: bool = False):
    """stem -> two convolutions -> concatenate; with `branch_output` the second branch is also a plan output."""
    g, x = graph_with_input((32, 32, 32), name="diamond")
    stem = conv(g, x, 32, 3)
    left, right = conv(g, stem, 32, 3), conv(g, stem, 32, 3)
    g.set_outputs([g.call("concatenate", left, right, axis=1), *([right] if branch_output else [])])
    return g.verify()


def nested_forks():
    """stem -> (a) and (b -> (b1, b2) -> add) -> concatenate: a fork inside a branch."""
    g, x = graph_with_input((32, 32, 32), name="nested")
    stem = conv(g, x, 32, 3)
    a = conv(g, stem, 32, 3)
    b = conv(g, stem, 32, 1)
    joined = g.call("add", conv(g, b, 32, 3), conv(g, b, 32, 3))
    g.set_outputs([g.call("concatenate", a, joined, axis=1)])
    return g.verify()


def positions(graph) -> dict:
    return {id(v): i for i, node in enumerate(graph.nodes) for v in node.outputs}


# ---------------------------------------------------------------------------------------------
# Independent checks: the order a schedule guarantees, and what the arena needs from it
# ---------------------------------------------------------------------------------------------


def happens_before(schedule) -> list[int]:
    """Per node position, the bit set of positions that finish before it starts: its stream's earlier nodes and
    what it waits for, transitively (side streams fork from stream 0 at entry, before every node)."""
    before, last_on = [], {}
    for i, stream in enumerate(schedule.streams):
        mask = 0
        for p in [*schedule.waits[i], *([last_on[stream]] if stream in last_on else [])]:
            mask |= before[p] | (1 << p)
        before.append(mask)
        last_on[stream] = i
    return before


def assert_schedule_valid(graph, schedule) -> None:
    """Every node runs after its producers, waits only across streams and only for earlier nodes."""
    assert len(schedule.streams) == len(schedule.waits) == len(graph.nodes)
    before = happens_before(schedule)
    where = positions(graph)
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if id(v) in where:
                assert before[i] >> where[id(v)] & 1, f"{node.name} may run before the producer of %{v.name}"
        for p in schedule.waits[i]:
            assert p < i and schedule.streams[p] != schedule.streams[i]
    assert sorted(set(schedule.streams)) == list(range(schedule.num_streams))


def unordered_sharing(graph, memory, schedule, aliases=None) -> list[tuple[str, str]]:
    """Pairs of arena values that share bytes although some of their accesses (definition, reads, reads of views
    of them) are not ordered by the schedule: each such pair is a race on the GPU."""
    aliases = aliases or {}
    accessed = {name: set() for name in memory.slots}
    for i, node in enumerate(graph.nodes):
        for v in (*node.inputs, *node.outputs):
            name = v.name
            while True:
                if name in accessed:
                    accessed[name].add(i)
                if name not in aliases:
                    break
                name = aliases[name]
    before = happens_before(schedule)

    def ordered(a, b):
        return all(before[q] >> p & 1 for p in accessed[a] for q in accessed[b])

    found = []
    names = sorted(memory.slots)
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            sa, sb = memory.slots[a], memory.slots[b]
            if (
                sa.size
                and sb.size
                and sa.offset < sb.end
                and sb.offset < sa.end
                and not ordered(a, b)
                and not ordered(b, a)
            ):
                found.append((a, b))
    return found


def run_in_order(plan: Plan, inputs, order) -> tuple[torch.Tensor, ...]:
    """The plan's layers run in `order` (as the streams could interleave them) against a fresh arena."""
    program = plan._program
    context = plan.create_execution_context()
    env = bind_symbols(plan.graph, inputs)
    views = context.views(env)
    values = [None] * program.num_values
    values[: program.num_inputs] = inputs
    for i, tensor in program.constants:
        values[i] = tensor
    for position in order:
        ExecutionContext._run_step(program.steps[position], values, views, env)
    return tuple(context._owned(values[i], i) for i in program.outputs)


def stream_interleaving(schedule, rng: random.Random) -> list[int]:
    """A random order of the nodes that keeps each stream's order and every wait."""
    queues = {s: [i for i, t in enumerate(schedule.streams) if t == s] for s in range(schedule.num_streams)}
    done, order = set(), []
    while any(queues.values()):
        ready = [s for s, q in queues.items() if q and all(p in done for p in schedule.waits[q[0]])]
        position = queues[rng.choice(ready)].pop(0)
        done.add(position)
        order.append(position)
    return order


@pytest.fixture
def streams_on_cpu(monkeypatch):
    """CPU builds get the schedule a CUDA build would (min_stream_macs 0: every fork counts), so the arena is
    planned for it; the CPU still runs the layers in node order."""
    monkeypatch.setattr(
        builder_module,
        "plan_streams",
        lambda graph, device_type, max_streams, profile: schedule_streams(
            graph, max_streams=max_streams, env=profile.opt_env, min_stream_macs=0
        ),
    )


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def test_diamond_runs_its_second_branch_on_a_side_stream():
    graph = diamond()  # positions: stem conv 0, relu 1 | left 2, 3 | right 4, 5 | concatenate 6
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    assert schedule.streams == (0, 0, 0, 0, 1, 1, 0)
    assert schedule.waits == ((), (), (), (), (1,), (), (5,))  # fork: wait for the stem; join: for the branch
    assert schedule.sections == ((2, 5),) and schedule.signals == {1, 5} and schedule.num_streams == 2
    assert_schedule_valid(graph, schedule)


def test_inception_block_spreads_its_four_branches_over_four_streams():
    graph = inception_net(blocks=1)
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    assert_schedule_valid(graph, schedule)
    assert schedule.num_streams == 4 and len(schedule.sections) == 1
    where = positions(graph)
    cat = next(i for i, n in enumerate(graph.nodes) if n.op == "concatenate")
    fork = 1  # the stem's relu (its conv is node 0)
    branch_ends = [where[id(v)] for v in graph.nodes[cat].inputs]
    first, last = schedule.sections[0]
    assert (first, last) == (fork + 1, cat - 1)
    assert sorted(schedule.streams[end] for end in branch_ends) == [0, 1, 2, 3]
    for end in branch_ends:  # a branch stays on one stream from the fork to its end
        branch = [i for i in range(first, end + 1) if schedule.streams[i] == schedule.streams[end]]
        assert all(schedule.waits[i] == () for i in branch[1:])
        assert schedule.waits[branch[0]] == (() if schedule.streams[end] == 0 else (fork,))
    assert schedule.waits[cat] == tuple(sorted(e for e in branch_ends if schedule.streams[e] != 0))
    assert schedule.signals == {fork, *(e for e in branch_ends if schedule.streams[e] != 0)}  # 4 events
    outside = [i for i in range(len(graph.nodes)) if not first <= i <= last]
    assert all(schedule.streams[i] == 0 for i in outside)
    assert all(schedule.waits[i] == () for i in outside if i != cat)


def test_nested_forks_wait_only_for_what_their_stream_has_not_seen():
    graph = nested_forks()  # stem 0,1 | a 2,3 | b 4,5 | b1 6,7 | b2 8,9 | add 10 | concatenate 11
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    assert schedule.streams == (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 1, 0)
    # the concatenate waits for the inner join only: that one already waited for b2's stream
    assert schedule.waits == ((), (), (), (), (1,), (), (), (), (5,), (), (9,), (10,))
    assert schedule.sections == ((2, 10),)
    assert_schedule_valid(graph, schedule)


def chain():
    g, x = graph_with_input((32, 32, 32), name="chain")
    h = x
    for _ in range(4):
        h = conv(g, h, 32, 3)
    g.set_outputs([h])
    return g.verify()


def residual_block():
    g, x = graph_with_input((32, 32, 32), name="residual")
    stem = conv(g, x, 32, 3)
    g.set_outputs([g.call("add", conv(g, conv(g, stem, 32, 3), 32, 3), stem)])  # the skip branch has no work
    return g.verify()


def light_branch():
    g, x = graph_with_input((32, 32, 32), name="light")
    stem = conv(g, x, 32, 3)
    pooled = g.call("nn.max_pool2d", stem, pool_size=(3, 3), padding=(1, 1))
    g.set_outputs([g.call("add", conv(g, stem, 32, 3), pooled)])  # the other branch is a pool: no MACs
    return g.verify()


def tiny_branches():
    g, x = graph_with_input((4, 8, 8), name="tiny")
    stem = conv(g, x, 4, 3)
    g.set_outputs([g.call("add", conv(g, stem, 4, 3), conv(g, stem, 4, 3))])  # 9216 MACs each
    return g.verify()


@pytest.mark.parametrize("make", [chain, residual_block, light_branch, tiny_branches])
def test_graphs_without_heavy_parallel_branches_stay_on_one_stream(make):
    graph = make()
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    assert schedule == single_stream(graph)
    assert schedule.num_streams == 1 and schedule.signals == frozenset() and schedule.sections == ()


def test_max_streams_caps_the_streams_and_one_means_none():
    g, x = graph_with_input((32, 32, 32), name="wide")
    stem = conv(g, x, 32, 3)
    g.set_outputs([g.call("concatenate", *[conv(g, stem, 16, 3) for _ in range(6)], axis=1)])
    graph = g.verify()
    for cap in (2, 3, 4):
        schedule = schedule_streams(graph, max_streams=cap, env=ENV)
        assert schedule.num_streams == cap
        assert_schedule_valid(graph, schedule)
    assert schedule_streams(graph, max_streams=1, env=ENV) == single_stream(graph)
    assert plan_streams(graph, "cpu", 4, 1) == single_stream(graph), "the CPU runs layers one by one"
    assert plan_streams(graph, "cuda", 4, 1) == schedule_streams(graph, max_streams=4, env=ENV)


def test_schedule_is_a_pure_function_of_the_graph():
    graph = inception_net()
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    doc, tensors = ir.graph_to_json(graph)
    assert schedule_streams(ir.graph_from_json(doc, tensors), max_streams=4, env=ENV) == schedule
    assert schedule_streams(graph, max_streams=4, env=ENV) == schedule


# ---------------------------------------------------------------------------------------------
# The arena: values on concurrent branches never share bytes
# ---------------------------------------------------------------------------------------------


def check_arena(graph, schedule, max_batch=1, expect_rule_matters=True):
    memory = plan_memory(graph, {"batch": max_batch}, schedule=schedule)
    assert unordered_sharing(graph, memory, schedule) == []
    if expect_rule_matters:  # the node-order arena would race on these streams: the rule is what prevents it
        assert unordered_sharing(graph, plan_memory(graph, {"batch": max_batch}), schedule)
    return memory


def test_inception_net_arena_is_safe_for_its_streams():
    graph = inception_net(blocks=3)
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    assert schedule.num_streams == 4 and len(schedule.sections) == 3
    check_arena(graph, schedule)


@pytest.mark.parametrize("max_streams", [2, 3, 4])
def test_nested_and_capped_schedules_arena_is_safe(max_streams):
    for graph in (nested_forks(), inception_net()):
        check_arena(graph, schedule_streams(graph, max_streams=max_streams, env=ENV), expect_rule_matters=False)


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_arena_is_safe_for_their_streams(seed):
    graph = random_graph(seed)
    schedule = schedule_streams(graph, max_streams=3, env=ENV, min_stream_macs=0)
    assert_schedule_valid(graph, schedule)
    check_arena(graph, schedule, max_batch=3, expect_rule_matters=False)


def test_a_view_read_on_a_side_stream_keeps_what_it_views_alive_over_the_section():
    g, x = graph_with_input((32, 32, 32), name="view")
    stem = conv(g, x, 32, 3)
    flat = g.call("reshape", stem, newshape=(BATCH, 32, 1024))
    side = g.call("reshape", flat, newshape=(BATCH, 32, 32, 32))  # a view of a view, read by the side branch
    g.set_outputs([g.call("add", conv(g, stem, 32, 3), conv(g, side, 32, 3))])
    graph = g.verify()
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    assert schedule.num_streams == 2
    aliases = {flat.name: stem.name, side.name: flat.name}
    life = lifetimes(graph, {flat.name, side.name}, aliases, schedule)
    assert life[stem.name] == (1, schedule.sections[0][1])
    memory = plan_memory(graph, ENV, unplanned={flat.name, side.name}, aliases=aliases, schedule=schedule)
    assert unordered_sharing(graph, memory, schedule, aliases) == []


@pytest.mark.slow
def test_googlenet_arena_is_safe_for_its_streams():
    torchvision = pytest.importorskip("torchvision")
    from tensorforge.engine.passes import PassContext, run_passes
    from tensorforge.frontends import from_torch

    model = torchvision.models.googlenet(aux_logits=False, init_weights=True).eval()
    region = from_torch(model, (torch.randn(1, 3, 224, 224),))
    graph = run_passes(region, PassContext(config=BuilderConfig(fp16=True), max_batch=1))
    schedule = plan_streams(graph, "cuda", 4, 1)
    assert schedule.num_streams == 4 and len(schedule.sections) == 9  # one per Inception block
    assert len(schedule.signals) == 9 * 4  # each block: one fork, three joins
    assert_schedule_valid(graph, schedule)
    check_arena(graph, schedule)


# ---------------------------------------------------------------------------------------------
# Plans scheduled for several streams, run on the CPU
# ---------------------------------------------------------------------------------------------


def test_streamed_plan_gives_the_same_results_in_every_order_its_streams_allow(streams_on_cpu):
    graph = inception_net()
    plan = Builder().build(graph, max_batch=2)
    assert plan.num_streams == 4 and [layer.stream for layer in plan.layers] == list(plan.schedule.streams)
    assert plan.create_execution_context()._side_streams == [], "the CPU ignores streams"
    memory = plan.memory
    assert unordered_sharing(plan.graph, memory, plan.schedule) == []
    rng = random.Random(0)
    for batch in (2, 1):
        x = torch.randn(batch, 3, 32, 32)
        expected = plan.run(x)
        assert_outputs_close(expected, ir.execute(graph, x), FUSED_TOL)
        for _ in range(5):
            actual = run_in_order(plan, (x,), stream_interleaving(plan.schedule, rng))
            assert all(torch.equal(a, e) for a, e in zip(actual, expected))


@pytest.mark.parametrize("seed", range(4))
def test_streamed_random_plans_match_the_reference_in_any_order(streams_on_cpu, seed):
    graph = random_graph(seed)
    plan = Builder(BuilderConfig(max_streams=3)).build(graph, max_batch=3)
    rng = random.Random(seed)
    x, y = torch.randn(3, 16), torch.randn(3, 8)
    expected = ir.execute(graph, x, y)
    assert_outputs_close(plan.run(x, y), expected)
    for _ in range(3):
        assert_outputs_close(run_in_order(plan, (x, y), stream_interleaving(plan.schedule, rng)), expected)


def test_plan_reports_its_streams(streams_on_cpu, monkeypatch):
    streamed = Builder().build(inception_net(), max_batch=1)
    text = streamed.describe()
    assert "streams: 4 (2 concurrent sections, 8 events)" in text
    assert "  stream  MACs" in text
    monkeypatch.undo()
    plain = Builder().build(inception_net(), max_batch=1)
    assert plain.num_streams == 1 and {layer.stream for layer in plain.layers} == {0}
    assert "streams: 1\n" in plain.describe() and "stream  MACs" not in plain.describe()


def test_loaded_plan_recomputes_its_schedule_and_keeps_one_stream_on_the_cpu(streams_on_cpu):
    graph = inception_net()
    plan = Builder().build(graph, max_batch=2)
    loaded = Plan.from_bytes(plan.to_bytes())
    assert loaded.num_streams == 1  # plan_streams on the CPU; its arena is safe in node order too
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.run(x)[0], plan.run(x)[0])


def test_an_arena_planned_for_one_stream_keeps_a_loaded_plan_on_one_stream():
    graph = inception_net()
    schedule = schedule_streams(graph, max_streams=4, env=ENV)
    node_order = plan_memory(graph, ENV)
    assert _schedule_for_arena(
        graph, node_order, {n.name: "reference" for n in graph.nodes}, schedule
    ) == single_stream(graph)
    streamed = plan_memory(graph, ENV, schedule=schedule)
    assert _schedule_for_arena(graph, streamed, {n.name: "reference" for n in graph.nodes}, schedule) == schedule


def long_branches():
    """Two branches of three convolutions each: on one stream each branch reuses its own dead activations."""
    g, x = graph_with_input((32, 32, 32), name="long")
    stem = conv(g, x, 32, 3)
    left, right = stem, stem
    for _ in range(3):
        left, right = conv(g, left, 32, 3), conv(g, right, 32, 3)
    g.set_outputs([g.call("add", left, right)])
    return g.verify()


def test_streams_give_way_when_their_arena_exceeds_the_workspace(streams_on_cpu):
    graph = long_branches()
    streamed = Builder().build(graph, max_batch=1)
    one_stream = plan_memory(streamed.graph, ENV).arena_bytes
    assert streamed.num_streams == 2 and streamed.peak_activation_bytes > one_stream
    fitted = Builder(BuilderConfig(max_workspace_size=one_stream)).build(graph, max_batch=1)
    assert fitted.num_streams == 1 and fitted.peak_activation_bytes == one_stream
    x = torch.randn(1, 32, 32, 32)
    assert torch.equal(fitted.run(x)[0], streamed.run(x)[0])


def test_program_records_reads_that_cross_streams_outside_the_arena(streams_on_cpu):
    plan = Builder().build(diamond(branch_output=True), max_batch=1)
    program = plan._program
    assert plan.num_streams == 2 and program.signals == plan.schedule.signals
    right = program.outputs[1]  # a plan output (not in the arena) made on the side stream
    join = next(i for i, step in enumerate(program.steps) if step.op == "concatenate")
    assert program.streams[join] == 0 and right in program.steps[join].inputs
    assert program.cross_stream_reads[join] == (right,)  # record_stream on the caller's stream before it is read
    assert program.side_stream_outputs == (right,)
    assert all(reads == () for i, reads in enumerate(program.cross_stream_reads) if i != join)


# ---------------------------------------------------------------------------------------------
# The option
# ---------------------------------------------------------------------------------------------


def test_max_streams_option_round_trips_and_is_checked():
    config = BuilderConfig(max_streams=2)
    assert BuilderConfig.from_json(config.to_json()) == config
    assert BuilderConfig.from_json({}).max_streams == 4
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="max_streams"):
            BuilderConfig(max_streams=bad)


def test_max_streams_one_builds_one_stream(streams_on_cpu):
    plan = Builder(BuilderConfig(max_streams=1)).build(inception_net(), max_batch=1)
    assert plan.num_streams == 1
    assert plan.memory == plan_memory(plan.graph, ENV)
