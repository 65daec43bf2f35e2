"""An op-table case through the whole flow, not just the IR: the one-node graph is partitioned (the node must go
to an engine region), built into a plan (reference tactics on the CPU) and run by the runtime module, and its
result is compared with the case's expected value from PyTorch eager, at the case's dtype tolerance."""

from __future__ import annotations

import torch

import tensorforge as forge
from helpers import Case, assert_close, build_single_op_graph


def check_case_in_engine(c: Case) -> None:
    inputs = c.inputs()
    graph = build_single_op_graph(c.op, inputs, c.attrs, const_inputs=c.const_inputs)
    # no folding: a case whose inputs are all constants must still reach the engine
    partitioned, config = forge.partition_for_tensorforge(graph, use_implicit_batch=False, fold_constants=False)
    assert config.report.reason_for("node") is None, str(config.report)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    module = forge.build(partitioned, config, device="cpu")
    actual = module(*[t for i, t in enumerate(inputs) if i not in c.const_inputs])
    actual = tuple(actual) if isinstance(actual, (tuple, list)) else (actual,)
    layers = {n.op for plans in module.plans().values() for plan in plans for n in plan.graph.nodes}
    assert c.op in layers, f"no plan runs a {c.op} layer (the plans run {sorted(layers)})"
    with torch.no_grad():
        expected = c.expected(*[t.clone() for t in inputs])
    expected = tuple(expected) if isinstance(expected, (tuple, list)) else (expected,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, torch.as_tensor(e), tol=c.tol)
