"""The `subgraph` op: call a graph held in `graph.subgraphs` (how partitioning marks engine regions).

Attributes: `callee` (the key in the parent graph's `subgraphs`), `target` (who runs it, e.g. "tensorforge"
for an engine region) and `output_types` (recorded, since the callee's outputs define them).
The reference execution (`ir.execute`) runs the callee graph; the runtime runs it through a plan instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from torch import Tensor

from ..registry import REQUIRED, register_op
from ..types import TensorType
from .opaque import OutputTypeSpec, decode_output_type


def _infer(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    return [decode_output_type(spec) for spec in attrs["output_types"]]


@register_op(
    "subgraph",
    inputs=(0, None),
    attrs={"callee": REQUIRED, "target": "tensorforge", "output_types": REQUIRED},
    infer=_infer,
)
def subgraph(*inputs: Tensor, callee: str, target: str, output_types: Sequence[OutputTypeSpec]) -> NoReturn:
    """subgraph: call the graph `callee` of the enclosing graph (executed by ir.execute or the runtime)."""
    raise RuntimeError(f"subgraph {callee!r} is executed by its enclosing graph, not on its own")
