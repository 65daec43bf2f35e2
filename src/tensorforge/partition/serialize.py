"""Region "codegen": each engine region as JSON plus its weights, as TVM's TensorRT codegen emits JSON.

Needs no GPU: the builder (or a runtime on another machine) rebuilds the region graph from this pair.
The JSON is `ir.graph_to_json`'s document, dumped with sorted keys so equal regions give equal text
(the runtime's engine cache hashes it).
"""

from __future__ import annotations

import json

import torch

from ..ir.graph import Graph
from ..ir.serialize import graph_from_json, graph_to_json


def serialize_region(subgraph: Graph) -> tuple[str, dict[str, torch.Tensor]]:
    """(JSON text, constant tensors by name) of one region graph (`partitioned.subgraphs[name]`)."""
    doc, tensors = graph_to_json(subgraph)
    return json.dumps(doc, sort_keys=True), tensors


def deserialize_region(text: str, tensors: dict[str, torch.Tensor]) -> Graph:
    """The region graph back from `serialize_region`'s output."""
    return graph_from_json(json.loads(text), tensors)
