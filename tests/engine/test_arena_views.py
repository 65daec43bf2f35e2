"""Results that are views: whatever a kept result looks at stays in the arena while the result is used.

A plan output gets no arena slot: the kernel's own result is handed to the caller. When that result is a view
(the reference of expand_dims, reshape, a slice, a same-dtype cast returns one), it looks into the arena slot of
the layer's input, and that slot must not be given to a later layer before the run hands the output over.
Issue 12: a Llama region returned `expand_dims(arange(batch))`, its slot was reused by the next integer layer,
and the next region indexed with garbage (`IndexError: index -4802309615320873571`).
"""

from __future__ import annotations

import pytest
import torch

from engine_helpers import BATCH, assert_outputs_close, graph_with_input
from tensorforge import ir
from tensorforge.engine import Builder
from tensorforge.engine.memory import arena_exemptions, conflicts, lifetimes, plan_memory, viewed_inputs
from tensorforge.ir import Graph


def view_then_reuse(dtype: str) -> tuple[Graph, ir.Value]:
    """`viewed = expand_dims(h)` is returned; `w`, as large as `h`, is made after h's last read by a layer, so a
    planner that forgets the view gives w the bytes of h (and of the returned view)."""
    g, x = graph_with_input((8,), dtype)
    h = g.call("negative", x)  # an arena activation
    viewed = g.call("expand_dims", h, axis=1)  # a plan output: the reference returns a view of h
    w = g.call("multiply", x, x)  # as large as h, defined after h's last read
    g.set_outputs([viewed, g.call("concatenate", w, w, axis=1)])  # not elementwise: w stays in the arena
    return g.verify(), h


@pytest.mark.parametrize("dtype", ["int64", "float32"])
def test_a_returned_view_keeps_its_base_in_the_arena(dtype):
    graph, h = view_then_reuse(dtype)
    plan = Builder().build(graph, max_batch=4)
    assert h.name in plan.memory.slots, "the test needs h in the arena"
    for batch in (4, 1):
        x = torch.arange(batch * 8).reshape(batch, 8).to(getattr(torch, dtype)) + 3
        assert_outputs_close(plan.run(x), ir.execute(graph, x))
    unplanned, aliases = arena_exemptions(plan.graph, plan.tactics)
    assert aliases[plan.graph.outputs[0].name] == (h.name,)
    life = lifetimes(plan.graph, unplanned, aliases)
    assert life[h.name][1] == len(plan.graph.nodes), "h is read when the run hands its view to the caller"
    assert conflicts(plan.memory, life) == []


def test_a_view_of_a_view_keeps_the_first_base_alive():
    """reshape(expand_dims(h)) returned: the chain of kept views ends in h, which must outlive both."""
    g, x = graph_with_input((8,))
    h = g.call("sigmoid", x)
    inner = g.call("expand_dims", h, axis=1)
    outer = g.call("reshape", inner, newshape=(BATCH, 2, 4))
    w = g.call("tanh", x)
    g.set_outputs([inner, outer, g.call("nn.softmax", w)])
    g.verify()
    plan = Builder().build(g, max_batch=2)
    assert {"expand_dims", "reshape"} <= {n.op for n in plan.graph.nodes}, "the test needs the views as layers"
    x = torch.randn(2, 8)
    assert_outputs_close(plan.run(x), ir.execute(g, x))


def unplanned_view_graph(op: str, **attrs) -> tuple[Graph, ir.Value, ir.Value]:
    g, x = graph_with_input((8,))
    h = g.call("sigmoid", x)
    v = g.call(op, h, **attrs)
    g.set_outputs([g.call("nn.softmax", g.call("exp", v))])  # v is read after h's own last reader
    return g.verify(), h, v


@pytest.mark.parametrize(
    "op, attrs, views",
    [
        ("cast", {"dtype": "float32"}, True),  # x.to(its own dtype) is x itself
        ("reshape", {"newshape": (BATCH, 2, 4)}, True),
        ("cast", {"dtype": "float16"}, False),  # a real conversion allocates
        ("nn.relu", {}, False),
    ],
)
def test_the_cuda_torch_tactic_keeps_what_its_result_views_alive(op, attrs, views):
    """The `torch` tactic (CUDA) keeps its result where PyTorch put it (no arena slot): where the op's reference
    returns a view of an arena activation, that activation lives as long as the view is read. Planned here
    on the CPU from the tactic names alone, as the builder would plan it for CUDA."""
    graph, h, v = unplanned_view_graph(op, **attrs)
    tactics = {n.name: "reference" for n in graph.nodes}
    tactics[v.producer.name] = "torch"
    unplanned, aliases = arena_exemptions(graph, tactics)
    assert v.name in unplanned
    assert (aliases.get(v.name) == (h.name,)) is views
    life = lifetimes(graph, unplanned, aliases)
    last_read_of_v = 2  # exp reads v
    assert (life[h.name][1] >= last_read_of_v) is views
    memory = plan_memory(graph, {"batch": 4}, unplanned=unplanned, aliases=aliases)
    assert conflicts(memory, life) == []


def test_an_op_the_meta_device_cannot_run_may_view_any_input():
    """A plugin kernel that has no meta implementation: nothing is known, so every input is assumed viewed."""
    name = "test_arena_views.no_meta"
    if name not in ir.registered_ops():

        @ir.register_op(name, inputs=2, infer=lambda types, attrs: [types[0]])
        def no_meta(a, b):
            if a.device.type == "meta":
                raise NotImplementedError("no meta kernel")
            return a + b

    g, x = graph_with_input((8,))
    node = g.add_node(name, [g.call("sigmoid", x), g.call("tanh", x)], {})
    assert viewed_inputs(node) == [(0, 1)]
    assert viewed_inputs(g.nodes[0]) == [()], "sigmoid allocates its result"


def test_the_cuda_pointwise_torch_tactic_returns_a_same_dtype_cast_as_its_input():
    """`torch_out` interprets an engine.pointwise program; for a plan output (no arena view offered) a
    same-dtype cast in it hands back its input itself, which must then stay live to the hand-off."""
    g, x = graph_with_input((8,))
    h = g.call("sigmoid", x)
    program = (("load", 0), ("cast", (0,), (("dtype", "float32"),)), ("multiply", (0, 0), ()))
    same, squared = g.add_node("engine.pointwise", [h], {"program": program, "outputs": (1, 2)}).outputs
    g.set_outputs([same, squared])
    g.verify()
    tactics = {g.nodes[0].name: "reference", g.nodes[1].name: "torch_out"}
    unplanned, aliases = arena_exemptions(g, tactics)
    assert aliases == {same.name: (h.name,)}, "the product is a new tensor, the cast is h"
    assert lifetimes(g, unplanned, aliases)[h.name] == (0, len(g.nodes))


def test_a_returned_view_of_a_constant_belongs_to_the_caller():
    """broadcast_to(@table, (batch, n)) cannot fold (its size follows the batch), and its reference is a view of
    the plan's weight: what the caller does to it must not reach the next run, as for a returned constant."""
    g, x = graph_with_input((4,))
    table = g.call("broadcast_to", g.add_constant(torch.arange(4.0), "table"), shape=(BATCH, 4))
    g.set_outputs([g.call("add", x, table), table])
    plan = Builder().build(g.verify(), max_batch=2)
    assert "broadcast_to" in {n.op for n in plan.graph.nodes}, "the test needs the view as a layer"
    _, first = plan.run(torch.zeros(2, 4))
    first[0].fill_(-1)  # a row of an expanded tensor is an ordinary view of the table: this would write the weight
    total, again = plan.run(torch.zeros(2, 4))
    assert torch.equal(again, torch.arange(4.0).expand(2, 4))
    assert torch.equal(total, torch.arange(4.0).expand(2, 4))
