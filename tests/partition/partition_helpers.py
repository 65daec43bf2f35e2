"""One way to check a partitioning: `partition_checked` partitions, then proves the result is sound.

Every partition test goes through it, so each one also checks that
- the input graph was not modified (same text, same node and value objects),
- the result verifies (which also proves its node order is topological and each region's signature
  matches its call),
- every node either went into exactly one region, or has a reason in the report, or was folded into a constant
  (and is then nowhere in the result),
- `ir.execute` gives bit-identical outputs before and after, on random inputs (batch bound to 3); where nodes were
  folded, equal within the dtype's tolerance (a folded result is a contiguous copy of what may have been a view).
"""

from __future__ import annotations

import torch

from helpers import assert_close
from tensorforge import ir
from tensorforge.ir import Graph, Sym, TensorType
from tensorforge.partition import PartitionConfig, partition_for_tensorforge

B = Sym("batch")
BATCH_SIZE = 3


def random_inputs(graph: Graph, batch: int = BATCH_SIZE, high: int = 3) -> list[torch.Tensor]:
    """Floats from randn, integers in [0, high), booleans at random; every symbol bound to `batch`."""
    out = []
    for v in graph.inputs:
        shape = v.type.concrete_shape({s: batch for s in v.type.symbols})
        dtype = v.type.torch_dtype
        if dtype.is_floating_point:
            out.append(torch.randn(shape, dtype=torch.float32).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.rand(shape) > 0.5)
        else:
            out.append(torch.randint(0, high, shape, dtype=dtype))
    return out


def _snapshot(graph: Graph):
    return (
        str(graph),
        [id(n) for n in graph.nodes],
        [id(v) for n in graph.nodes for v in n.outputs],
        [id(v) for v in graph.inputs],
        [id(v) for v in graph.outputs],
        dict(graph.constants),
    )


def region_of(graph: Graph, node_name: str) -> str | None:
    """The name of the region holding the original node `node_name`, or None if it stayed at top level."""
    found = [name for name, sub in graph.subgraphs.items() if any(n.name == node_name for n in sub.nodes)]
    assert len(found) <= 1, f"node {node_name} is in several regions: {found}"
    return found[0] if found else None


def partition_checked(
    graph: Graph, inputs: list[torch.Tensor] | None = None, **options
) -> tuple[Graph, PartitionConfig]:
    graph.verify()
    before = _snapshot(graph)
    new, config = partition_for_tensorforge(graph, **options)
    assert _snapshot(graph) == before, "partition_for_tensorforge modified its input graph"
    new.verify()
    assert not set(map(id, new.nodes)) & set(map(id, graph.nodes)), "the result shares nodes with the input"

    report = config.report
    top_level = {n.name for n in new.nodes if n.op != "subgraph"}
    folded = {name for names in report.folded_ops().values() for name in names}
    assert report.folded_nodes == len(folded) == len(graph.nodes) - report.total_nodes
    for node in graph.nodes:
        region = region_of(new, node.name)
        reason = report.reason_for(node.name)
        if node.name in folded:
            assert region is None and node.name not in top_level and reason is None, (
                f"node {node.name} was folded but is still in the graph"
            )
        elif region is None:
            assert node.name in top_level, f"node {node.name} was lost"
            assert reason, f"node {node.name} stayed out without a reason"
        else:
            assert node.name not in top_level and reason is None, f"node {node.name} is both in and out"
    for node in new.nodes:
        if node.op == "subgraph":
            assert node.attrs["target"] == "tensorforge" and node.attrs["callee"] in new.subgraphs

    inputs = random_inputs(graph) if inputs is None else inputs
    expected = ir.execute(graph, *inputs)
    actual = ir.execute(new, *inputs)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        if report.folded:  # a folded weight is contiguous where the node gave a view: kernels may sum in another order
            assert_close(a, e)
        else:
            assert torch.equal(a, e), "outputs differ after partitioning"
    return new, config


def one_op_graph(op: str, *input_types: TensorType, consts: dict[int, torch.Tensor] | None = None, **attrs) -> Graph:
    """A graph with one node named "target": its inputs are graph inputs, or constants where `consts` says."""
    graph = Graph()
    consts = consts or {}
    args, k = [], 0
    for i in range(len(input_types) + len(consts)):
        if i in consts:
            args.append(graph.add_constant(consts[i], f"c{i}"))
        else:
            args.append(graph.add_input(f"x{k}" if k else "x", input_types[k]))
            k += 1
    node = graph.add_node(op, args, attrs, name="target")
    graph.set_outputs(node.outputs)
    return graph


def f32(*shape) -> TensorType:
    return TensorType("float32", shape)
