"""Reference execution: run a graph node by node through each op's PyTorch reference implementation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from .symbolic import SymExpr
from .types import is_monomial, monomial

if TYPE_CHECKING:
    from .graph import Graph, Value


def bind_symbols(graph: Graph, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """Check the inputs against the graph's input types and return the size of every symbol (the inputs come
    from users, so their being tensors is checked too)."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(
            f"graph {graph.name!r} takes {len(graph.inputs)} inputs "
            f"({', '.join(v.name for v in graph.inputs)}), got {len(inputs)}"
        )
    env: dict[str, int] = {}
    later: list[tuple[str, int, SymExpr, int]] = []  # (input, axis, expression, size) checked once all are bound
    for value, tensor in zip(graph.inputs, inputs):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"input {value.name!r} must be a torch.Tensor, got {type(tensor).__name__}")
        expected = value.type
        if str(tensor.dtype).removeprefix("torch.") != expected.dtype:
            raise TypeError(
                f"input {value.name!r}: expected dtype {expected.dtype}, got {str(tensor.dtype).removeprefix('torch.')}"
            )
        if tensor.dim() != expected.rank:
            raise ValueError(
                f"input {value.name!r}: expected shape {expected} (rank {expected.rank}), got {tuple(tensor.shape)}"
            )
        for axis, (dim, size) in enumerate(zip(expected.shape, tensor.shape)):
            if is_monomial(dim):  # k*symbol binds the symbol by exact division
                symbol, scale = monomial(dim, f"input {value.name!r}")
                if size % scale:
                    raise ValueError(f"input {value.name!r}: dimension {axis} must be a multiple of {scale}")
                bound = env.setdefault(symbol, size // scale)
                if bound * scale != size:
                    raise ValueError(
                        f"input {value.name!r}: dimension {axis} is {size}, but {symbol} is "
                        f"already {bound} from an earlier input"
                    )
            elif isinstance(dim, SymExpr):
                later.append((value.name, axis, dim, int(size)))
            elif dim != size:
                raise ValueError(
                    f"input {value.name!r}: expected shape {expected}, got {tuple(tensor.shape)} "
                    f"(dimension {axis} must be {dim})"
                )
    # Any other expression (seq - 1, batch*seq) binds nothing: it must agree with what the bare symbols bound.
    for name, axis, dim, size in later:
        unbound = sorted(dim.free_symbols - env.keys())
        if unbound:
            raise ValueError(
                f"input {name!r}: dimension {axis} is {dim}, but no input dimension binds {', '.join(unbound)} "
                f"directly (a size that is a multiple of one symbol)"
            )
        want = dim.bind(env)
        if want != size:
            binding = ", ".join(f"{s} = {env[s]}" for s in sorted(dim.free_symbols))
            raise ValueError(f"input {name!r}: dimension {axis} is {size}, but {dim} is {want} (with {binding})")
    return env


@torch.no_grad()
def execute(
    graph: Graph, *inputs: torch.Tensor, on_value: Callable[[Value, torch.Tensor], None] | None = None
) -> tuple[torch.Tensor, ...]:
    """Run `graph` on `inputs` (all on one device) and return its outputs as a tuple. `on_value(value, tensor)` sees
    every input, constant and node output of this graph as it comes to exist (calibration watches values so)."""
    env = bind_symbols(graph, inputs)
    device = inputs[0].device if inputs else torch.device("cpu")
    values: dict[int, torch.Tensor] = {id(v): t for v, t in zip(graph.inputs, inputs)}
    for v in graph.constants.values():
        values[id(v)] = v.tensor.to(device)
    if on_value is not None:
        for v in (*graph.inputs, *graph.constants.values()):
            on_value(v, values[id(v)])
    # free each intermediate after its last use, so peak memory stays close to what eager needs
    last_use: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[id(v)] = i
    keep = {id(v) for v in graph.outputs} | {id(v) for v in graph.inputs} | {id(v) for v in graph.constants.values()}
    for i, node in enumerate(graph.nodes):
        args = [values[id(v)] for v in node.inputs]
        if node.op == "subgraph":
            outs = execute(graph.subgraphs[node.attrs["callee"]], *args)
        else:
            outs = node.opdef.run(args, node.attrs, env, device)
        if len(outs) != len(node.outputs):
            raise RuntimeError(
                f"node {node.name!r} ({node.op}) produced {len(outs)} outputs, expected {len(node.outputs)}"
            )
        for v, t in zip(node.outputs, outs):
            values[id(v)] = t
            if on_value is not None:
                on_value(v, t)
        for v in node.inputs:
            if last_use.get(id(v)) == i and id(v) not in keep:
                values.pop(id(v), None)
    return tuple(values[id(v)] for v in graph.outputs)
