"""Is it a valid ONNX model? Checked whole before anything is imported; every problem is reported at once.

`onnx.checker.check_model(full_check=True)` is the judge (structure, schemas, attribute types, tensors, and
strict type and shape inference), with three adjustments, each because onnxruntime, which runs what the IR
cannot, draws the line elsewhere:

- The checker stops at its first finding. Each node and each initializer is therefore also checked on its own
  (`check_node`, `check_tensor`), so a model with several broken nodes names them all.
- Some of its rules are stricter than the ONNX spec and onnxruntime (TOLERATED): the model is checked as the
  importer will read it (inputs typed as imported, nodes sorted, "ai.onnx" as the default domain, declared
  intermediate and output shapes, which onnxruntime treats as hints, replaced by inferred ones), and findings
  that remain of those kinds pass.
- onnxruntime refuses what it lets through (FURTHER_RULES): an opset newer than onnx knows, a domain imported
  twice, two nodes of one graph with the same name, initializer data that does not fill its dims.

`validate_model` raises `OnnxImportError` listing every problem, each naming its node, initializer or field.
"""

from __future__ import annotations

import collections
import heapq
import re
from typing import Callable

import onnx
import onnx.checker
import onnx.defs
import onnx.numpy_helper

PROTOBUF_LIMIT = (1 << 31) - 1  # check_model serializes the model; larger ones get the per-part checks only
MAX_LISTED = 20


class OnnxImportError(ValueError):
    """The ONNX model cannot be imported: it is invalid, or uses something the importer cannot express."""


# checker findings (patterns) that do not make a model invalid for onnxruntime, and why
TOLERATED: tuple[tuple[str, str], ...] = (
    (r"Field 'shape' of 'type' is required but missing",
     "the IR spec allows a graph input or output of unknown rank (onnx/onnx#2932); onnxruntime runs such models"),
    (r"is deprecated in domain_version",
     "onnxruntime still runs deprecated ops (GroupNormalization-18), and a converter maps them"),
    (r"^Inference error\(s\): \(op_type:\w+[^)]*\): \[ShapeInferenceError\] Inference error\(s\): ",
     "an error inside the function body onnx itself defines for a standard op (MeanVarianceNormalization-13's "
     "Constant fails onnx's own inference): onnxruntime runs the op with its kernel, not that body"),
)


def _core(exc: BaseException | str) -> str:
    """The checker's message without its context trailer, on one line."""
    text = re.sub(r"\s*==> Context:.*", "", str(exc), flags=re.S).strip()
    text = re.sub(r"^\[\w+\]\s*", "", text)
    return " ".join(text.split())


def _tolerated(message: str) -> bool:
    return any(re.search(pattern, message) for pattern, _why in TOLERATED)


def _node_label(node, index: int) -> str:
    return f"node {node.name or f'#{index}'!r} ({node.op_type})"


# -- rules the checker does not enforce and onnxruntime does ------------------------------------

def _opset_rules(model: onnx.ModelProto) -> list[str]:
    problems = []
    known = onnx.defs.C.schema_version_map()  # domain -> (first, last) opset onnx knows
    seen: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain in ("", "ai.onnx") else entry.domain
        label = domain or "ai.onnx"
        if domain in seen and seen[domain] != entry.version:
            problems.append(f"opset_import: domain {label!r} is imported twice (versions {seen[domain]} and "
                            f"{entry.version})")
        seen[domain] = entry.version
        if entry.version < 1:
            problems.append(f"opset_import: domain {label!r} has version {entry.version}; versions start at 1")
        elif domain in known and entry.version > known[domain][1]:
            problems.append(f"opset_import: domain {label!r} version {entry.version} is newer than onnx "
                            f"{onnx.__version__} knows (up to {known[domain][1]})")
    return problems


def _node_name_rules(graph, where: str = "") -> list[str]:
    problems = []
    counts = collections.Counter(n.name for n in graph.node if n.name)
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        listed = ", ".join(repr(n) for n in twice[:5]) + (f" and {len(twice) - 5} more" if len(twice) > 5 else "")
        problems.append(f"{where}node names must be unique in a graph (onnxruntime refuses the model): {listed} "
                        f"name{'s' if len(twice) == 1 else ''} several nodes")
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                problems += _node_name_rules(sub, f"{where}subgraph {attr.name!r} of node {node.name!r}: ")
    return problems


def _initializer_rules(model: onnx.ModelProto) -> list[str]:
    """Each initializer's data decodes to its dims (check_tensor does not compare raw_data's length with them)."""
    problems = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue  # not loaded: load_model reports a file that is missing or short
        try:
            onnx.numpy_helper.to_array(tensor)
        except Exception as exc:  # noqa: BLE001  (ValueError from numpy, onnx's own for segments and types)
            dims = list(tensor.dims)
            problems.append(f"initializer {tensor.name!r}: its data does not decode to dims {dims}: {_core(exc)}")
    return problems


FURTHER_RULES: tuple[Callable[[onnx.ModelProto], list[str]], ...] = (
    _opset_rules,
    lambda model: _node_name_rules(model.graph),
    _initializer_rules,
)


# -- the checker, part by part ------------------------------------------------------------------

def _context(model: onnx.ModelProto):
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    return ctx


def _part_problems(model: onnx.ModelProto) -> list[str]:
    """check_tensor on each initializer, check_node on each node of the main graph (nodes holding subgraphs are
    left to check_model, which knows the names their subgraphs read from outside)."""
    ctx, problems = _context(model), []
    for tensor in model.graph.initializer:
        try:
            onnx.checker.check_tensor(tensor, ctx)
        except Exception as exc:  # noqa: BLE001  (ValidationError, and protobuf's own errors)
            problems.append(f"initializer {tensor.name!r}: {_core(exc)}")
    for i, node in enumerate(model.graph.node):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            continue
        if node.domain == "ai.onnx":  # "ai.onnx" names the default domain too; the checker alone tells them apart
            node = onnx.NodeProto()
            node.CopyFrom(model.graph.node[i])
            node.domain = ""
        try:
            onnx.checker.check_node(node, ctx)
        except Exception as exc:  # noqa: BLE001
            if not _tolerated(_core(exc)):
                problems.append(f"{_node_label(node, i)}: {_core(exc)}")
    return problems


def _sorted_nodes(graph) -> list:
    """The graph's nodes, every producer before its users where the file got that wrong (cycles stay as they are,
    for the checker to report)."""
    nodes = list(graph.node)
    produced_by = {name: i for i, n in enumerate(nodes) for name in n.output if name}
    users, indegree = collections.defaultdict(list), [0] * len(nodes)
    for i, n in enumerate(nodes):
        for name in {x for x in n.input if x}:
            if name in produced_by and produced_by[name] != i:
                indegree[i] += 1
                users[produced_by[name]].append(i)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in users[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(ready, j)
    placed = set(order)
    order += [i for i in range(len(nodes)) if i not in placed]
    return [nodes[i] for i in order]


def _as_imported(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy to check as the importer reads the model: nodes sorted, value_info dropped (onnxruntime only warns
    when it disagrees with inference), and each graph output's declared shape replaced by what inference finds
    (left out where inference cannot tell its rank: the spec allows outputs of unknown rank)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = _sorted_nodes(copy.graph)
    for node in nodes:  # "ai.onnx" names the default domain too; the checker alone tells them apart
        if node.domain == "ai.onnx":
            node.domain = ""
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    graphs = [copy.graph]
    while graphs:
        graph = graphs.pop()
        graph.ClearField("value_info")
        for node in graph.node:
            for attr in node.attribute:
                graphs += [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
    for out in copy.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001  (the full check below reports why)
        inferred = copy
    shapes = {o.name: o.type.tensor_type.shape for o in inferred.graph.output
              if o.type.HasField("tensor_type") and o.type.tensor_type.HasField("shape")}
    keep = []
    for out in copy.graph.output:
        if not out.type.HasField("tensor_type"):
            keep.append(out)
        elif out.name in shapes:
            out.type.tensor_type.shape.CopyFrom(shapes[out.name])
            keep.append(out)
    del copy.graph.output[:]
    copy.graph.output.extend(keep)
    return copy


def model_problems(model: onnx.ModelProto) -> list[str]:
    """Every problem found, one sentence each; empty for a valid model."""
    problems = [p for rule in FURTHER_RULES for p in rule(model)]
    problems += _part_problems(model)
    if model.ByteSize() <= PROTOBUF_LIMIT:
        try:
            onnx.checker.check_model(_as_imported(model), full_check=True)
        except Exception as exc:  # noqa: BLE001  (ValidationError, InferenceError)
            core = _core(exc)
            if not _tolerated(core) and not any(core in p for p in problems):
                problems.append(core)
    return problems


def validate_model(model: onnx.ModelProto) -> None:
    """Raise OnnxImportError naming every problem of an invalid model."""
    problems = model_problems(model)
    if problems:
        listed = problems[:MAX_LISTED] + ([f"and {len(problems) - MAX_LISTED} more"]
                                          if len(problems) > MAX_LISTED else [])
        raise OnnxImportError(f"the model is not valid ONNX ({len(problems)} problem(s), found by onnx.checker and "
                              f"the rules onnxruntime adds):\n  " + "\n  ".join(listed))
