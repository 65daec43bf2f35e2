"""Graph editing for passes (not a pass): copy a graph, and end a rewrite under the names it replaced.

Passes are pure: each starts from `copy_graph(graph)` (new Graph, Node and Value objects; constant tensors
shared, since no pass writes into a tensor) and edits only the copy, through the graph's own methods: nodes
go in with `add_node(before=..., after=...)`, readers move with `replace_all_uses`, the def-use index
(`users_of`, `sole_user`, `use_count`, `is_output`) says who reads what, and `erase_nodes` takes the replaced
nodes out.
`constant_data` reads the tensor of an input the pass already knows to be a constant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ...ir import Graph, Node, Value


def erase_and_rename(graph: Graph, gone: Iterable[Node], names: Sequence[tuple[Node | Value, str]]) -> None:
    """Erase the replaced nodes `gone` (nothing else reads their outputs by now), then give each new node or value
    in `names` its name: the replacement keeps the names of the layers and values it replaced (plans report
    layers by node name, and graph outputs keep theirs)."""
    graph.erase_nodes(gone)
    for item, name in names:
        if isinstance(item, Node):
            graph.rename_node(item, name)
        else:
            graph.rename_value(item, name)


def constant_data(value: Value) -> torch.Tensor:
    """The tensor of `value`, a constant the caller has checked is one; ValueError for an activation."""
    if value.data is None:
        raise ValueError(f"{value.name} is an activation, not a constant")
    return value.data
