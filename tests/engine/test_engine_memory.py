"""Memory planning: no two activations that are live together share bytes (property test over random and real
graphs), the arena is really used, smaller batches fit, outputs are the caller's, and the workspace limit holds."""

from __future__ import annotations

import random

import pytest
import torch

from engine_helpers import BATCH, FUSED_TOL, assert_outputs_close, batch_norm_params, graph_with_input
from tensorforge import ir
from tensorforge.engine import ALIGNMENT, Builder, BuilderConfig, BuildError
from tensorforge.engine.memory import conflicts, lifetimes, plan_memory, planned_values
from tensorforge.ir import Graph, TensorType

UNARY = ["nn.relu", "sigmoid", "tanh", "negative", "exp"]


def random_graph(seed: int, nodes: int = 40) -> Graph:
    """A random DAG of elementwise, concatenate, split and slice ops over a dynamic batch (widths vary, so sizes do)."""
    rng = random.Random(seed)
    g = Graph(f"random{seed}")
    pool = [g.add_input("x", TensorType("float32", (BATCH, 16))), g.add_input("y", TensorType("float32", (BATCH, 8)))]
    for _ in range(nodes):
        kind = rng.choice(["unary", "unary", "binary", "concat", "split", "slice"])
        a = rng.choice(pool[-8:])
        width = a.type.shape[1]
        if kind == "unary":
            pool.append(g.call(rng.choice(UNARY), a))
        elif kind == "binary":
            same = [v for v in pool if v.type == a.type]
            pool.append(g.call(rng.choice(["add", "multiply", "maximum"]), a, rng.choice(same)))
        elif kind == "concat" and width <= 64:
            pool.append(g.call("concatenate", a, rng.choice(pool), axis=1))
        elif kind == "split" and width % 2 == 0:
            pool.extend(g.call("split", a, indices_or_sections=2, axis=1))
        elif width > 2:
            pool.append(g.call("strided_slice", a, begin=(1,), end=(width,), axes=(1,)))
    g.set_outputs(rng.sample(pool[-6:], 2))
    return g.verify()


def conv_net() -> Graph:
    """A small residual conv net: conv-bn-relu, conv-bn + skip, relu, pool, dense."""
    g, x = graph_with_input((3, 16, 16), name="convnet")
    h = g.call(
        "nn.relu",
        g.call(
            "nn.batch_norm",
            g.call("nn.conv2d", x, g.add_constant(torch.randn(8, 3, 3, 3), "w1"), padding=(1, 1)),
            *batch_norm_params(g, 8, "bn1"),
        ),
    )
    y = g.call(
        "nn.batch_norm",
        g.call("nn.conv2d", h, g.add_constant(torch.randn(8, 8, 3, 3) * 0.2, "w2"), padding=(1, 1)),
        *batch_norm_params(g, 8, "bn2"),
    )
    y = g.call("nn.relu", g.call("add", y, h))
    y = g.call("reshape", g.call("nn.global_avg_pool2d", y), newshape=(BATCH, 8))
    g.set_outputs(
        [
            g.call(
                "nn.bias_add",
                g.call("nn.dense", y, g.add_constant(torch.randn(10, 8), "fc")),
                g.add_constant(torch.randn(10), "fc.b"),
                axis=-1,
            )
        ]
    )
    return g.verify()


def check_memory_plan(graph: Graph, max_batch: int) -> None:
    env = {"batch": max_batch}
    plan = plan_memory(graph, env)
    life = lifetimes(graph)
    sizes = {v.name: v.type.nbytes(env) for v in planned_values(graph)}
    assert set(plan.slots) == set(sizes)
    assert conflicts(plan, life) == []
    names = sorted(plan.slots)  # and checked here independently of the planner's own helper
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (sa, sb), (la, lb) = (plan.slots[a], plan.slots[b]), (life[a], life[b])
            live_together = la[0] <= lb[1] and lb[0] <= la[1]
            share_bytes = sa.offset < sb.offset + sizes[b] and sb.offset < sa.offset + sizes[a]
            assert not (live_together and share_bytes and sizes[a] and sizes[b]), f"%{a} and %{b} overlap"
    for name, slot in plan.slots.items():
        assert slot.offset % ALIGNMENT == 0 and slot.size >= sizes[name] and slot.end <= plan.arena_bytes
    aligned = {n: -(-s // ALIGNMENT) * ALIGNMENT for n, s in sizes.items()}
    assert plan.arena_bytes <= sum(aligned.values())
    most_live = max(
        (sum(aligned[n] for n, (a, b) in life.items() if a <= i <= b) for i in range(len(graph.nodes))), default=0
    )
    assert plan.arena_bytes >= most_live


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_plan_without_overlap_and_run_unchanged(seed):
    graph = random_graph(seed)
    check_memory_plan(graph, max_batch=3)
    plan = Builder().build(graph, max_batch=3)
    check_memory_plan(plan.graph, max_batch=3)
    assert plan.peak_activation_bytes == plan_memory(plan.graph, {"batch": 3}).arena_bytes
    for batch in (1, 3, 2):  # the same arena serves every batch size, in any order
        x, y = torch.randn(batch, 16), torch.randn(batch, 8)
        # fp32 tolerance, not bit equality: the plan hands kernels contiguous arena copies where ir.execute hands
        # them strided views, and PyTorch's vectorized and strided paths may differ in the last bit
        assert_outputs_close(plan.run(x, y), ir.execute(graph, x, y))


def test_conv_net_plan_and_numerics():
    graph = conv_net()
    plan = Builder().build(graph, max_batch=4)
    check_memory_plan(plan.graph, max_batch=4)
    for batch in (4, 1):
        x = torch.randn(batch, 3, 16, 16)
        assert_outputs_close(plan.run(x), ir.execute(graph, x), FUSED_TOL)


def test_activations_really_live_in_the_arena():
    g, x = graph_with_input((5,))
    hidden = g.call("sigmoid", x)
    g.set_outputs([g.call("nn.softmax", hidden)])  # not elementwise: the two stay separate layers
    plan = Builder().build(g, max_batch=4)
    slot = plan.memory.slots[hidden.name]
    context = plan.create_execution_context()
    assert context.arena.dtype == torch.uint8 and context.arena.numel() == plan.peak_activation_bytes
    for batch in (4, 2):  # at batch 2 the leading part of the slot holds the activation
        data = torch.randn(batch, 5)
        plan.run(data, context=context)
        stored = context.arena[slot.offset : slot.offset + batch * 5 * 4].view(torch.float32).view(batch, 5)
        assert torch.equal(stored, torch.sigmoid(data))


def test_outputs_belong_to_the_caller():
    g, x = graph_with_input((6,))
    viewed = g.call("reshape", g.call("sigmoid", x), newshape=(BATCH, 2, 3))  # a view of an arena activation
    g.set_outputs([viewed, g.call("arange", stop=4)])  # and a folded constant
    plan = Builder().build(g, max_batch=2)
    first = torch.randn(2, 6)
    out, const = plan.run(first)
    const.fill_(-1)
    out2, const2 = plan.run(torch.randn(2, 6))
    assert torch.equal(out, torch.sigmoid(first).reshape(2, 2, 3)), "a later run overwrote an earlier result"
    assert torch.equal(const2, torch.arange(4)), "the caller could change the plan's constant"


def test_separate_contexts_do_not_share_an_arena():
    g, x = graph_with_input((5,))
    g.set_outputs([g.call("nn.softmax", g.call("sigmoid", x))])
    plan = Builder().build(g, max_batch=2)
    a, b = plan.create_execution_context(), plan.create_execution_context()
    assert a.arena.data_ptr() != b.arena.data_ptr()
    data = torch.randn(2, 5)
    assert torch.equal(plan.run(data, context=a)[0], plan.run(data, context=b)[0])


def test_workspace_limit_is_enforced_with_a_clear_message():
    graph = conv_net()
    needed = Builder().build(graph, max_batch=4).peak_activation_bytes
    Builder(BuilderConfig(max_workspace_size=needed)).build(graph, max_batch=4)  # exactly enough is enough
    with pytest.raises(BuildError) as info:
        Builder(BuilderConfig(max_workspace_size=needed - 1)).build(graph, max_batch=4)
    message = str(info.value)
    assert f"{needed} bytes" in message and f"allows {needed - 1} bytes" in message and "max_batch=4" in message
    assert "raise max_workspace_size or lower max_batch" in message
