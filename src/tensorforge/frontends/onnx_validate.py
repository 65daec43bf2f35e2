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
  twice, two nodes of one graph (or of a called function's body) with the same name, Constant nodes aside,
  initializer data that does not fill its dims, an ir_version or opset beyond any there is, a model-local function
  named like a standard op (onnxruntime runs the op, not the function). One it runs is refused too: a 0/1 switch
  attribute given another value (keepdims=255), which onnx's shape inference, onnxruntime and the converters need
  not read alike.

`validate_model` raises `OnnxImportError` listing every problem, each naming its node, initializer or field.
"""

from __future__ import annotations

import collections
import heapq
import re
from collections.abc import Callable
from typing import Any

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
    (
        r"Field 'shape' of 'type' is required but missing",
        "the IR spec allows a graph input or output of unknown rank (onnx/onnx#2932); onnxruntime runs such models",
    ),
    (
        r"is deprecated in domain_version",
        "onnxruntime still runs deprecated ops (GroupNormalization-18), and a converter maps them",
    ),
    (
        r"^Inference error\(s\): \(op_type:\w+[^)]*\): \[ShapeInferenceError\] Inference error\(s\): ",
        "an error inside the function body onnx itself defines for a standard op (MeanVarianceNormalization-13's "
        "Constant fails onnx's own inference): onnxruntime runs the op with its kernel, not that body",
    ),
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
            problems.append(
                f"opset_import: domain {label!r} is imported twice (versions {seen[domain]} and {entry.version})"
            )
        seen[domain] = entry.version
        if entry.version < 1:
            problems.append(f"opset_import: domain {label!r} has version {entry.version}; versions start at 1")
        elif domain in known and entry.version > known[domain][1]:
            problems.append(
                f"opset_import: domain {label!r} version {entry.version} is newer than onnx "
                f"{onnx.__version__} knows (up to {known[domain][1]})"
            )
    return problems


def _version_rules(model: onnx.ModelProto) -> list[str]:
    """Versions the checker itself cannot take (it reads them as C integers): out of range, they are the problem."""
    problems = []
    if not 1 <= model.ir_version <= onnx.IR_VERSION:
        problems.append(
            f"ir_version {model.ir_version} is not one onnx {onnx.__version__} knows (1 to {onnx.IR_VERSION})"
        )
    imports = [("opset_import", entry) for entry in model.opset_import]
    imports += [
        (f"function '{f.domain}.{f.name}' opset_import", entry) for f in model.functions for entry in f.opset_import
    ]
    problems += [
        f"{where}: domain {entry.domain or 'ai.onnx'!r} has version {entry.version}, beyond any opset"
        for where, entry in imports
        if not 0 <= entry.version < 1 << 31
    ]
    return problems


def _function_rules(model: onnx.ModelProto) -> list[str]:
    """A model-local function named like a standard op of a domain onnx defines: onnxruntime runs the standard op,
    an importer that inlined the function would compute something else (the fuzzing suite found 59 such answers)."""
    return [
        f"function '{f.domain or 'ai.onnx'}.{f.name}' has the name of a standard ONNX operator in that domain "
        f"(onnxruntime runs the operator, not the function); rename the function or give it its own domain"
        for f in model.functions
        if f.domain in ("", "ai.onnx", "ai.onnx.ml")
        and onnx.defs.has(f.name, "" if f.domain == "ai.onnx" else f.domain)
    ]


def _is_constant(node) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def _attribute_graphs(attr) -> list:
    return [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)


def _duplicate_names(nodes, where: str) -> list[str]:
    """Names of nodes that onnxruntime holds as nodes (not Constant ones: it makes those initializers before it
    compares names), given to several of them; unnamed nodes never clash."""
    counts = collections.Counter(n.name for n in nodes if n.name and not _is_constant(n))
    twice = sorted(name for name, count in counts.items() if count > 1)
    if not twice:
        return []
    listed = ", ".join(repr(n) for n in twice[:5]) + (f" and {len(twice) - 5} more" if len(twice) > 5 else "")
    return [
        f"{where}node names must be unique in a graph (onnxruntime refuses the model): {listed} "
        f"name{'s' if len(twice) == 1 else ''} several nodes"
    ]


def _node_name_rules(model: onnx.ModelProto) -> list[str]:
    """onnxruntime refuses two nodes of one graph with the same name (what it checks, found by trying it on
    hand-made models): each graph is checked on its own (the main graph, every subgraph; a branch's node may share
    a name with a node outside it or in the other branch), and so is the body of each model-local function the
    model calls, which onnxruntime inlines (a function nothing calls is never inlined or checked). Constant nodes
    and unnamed ones do not count. (Inlined nodes are renamed `_inlfunc_<function>_<name>`; a node of the graph
    that already has such a name clashes in onnxruntime too, a case left out here.)"""
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    problems, called, seen = [], [], set()

    def visit(nodes, where: str) -> None:
        problems.extend(_duplicate_names(nodes, where))
        for node in nodes:
            key = (node.domain, node.op_type, node.overload)
            if key in functions and key not in seen:
                seen.add(key)
                called.append(key)
            for attr in node.attribute:
                for sub in _attribute_graphs(attr):
                    visit(sub.node, f"{where}subgraph {attr.name!r} of node {node.name!r}: ")

    visit(model.graph.node, "")
    while called:  # a function's body may call others
        domain, name, overload = called.pop(0)
        label = f"{domain}.{name}" + (f":{overload}" if overload else "")
        visit(functions[(domain, name, overload)].node, f"function {label!r}: ")
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


# integer attributes of standard ops that the spec documents as a switch, 0 or 1 (keepdims, transB, ceil_mode, ...)
SWITCH_ATTRIBUTES = frozenset(
    {
        "align_corners",
        "allowzero",
        "ceil_mode",
        "center_point_box",
        "count_include_pad",
        "detect_negative",
        "detect_positive",
        "exclude_outside",
        "exclusive",
        "fmod",
        "input_forget",
        "interleaved",
        "is_causal",
        "keepdims",
        "largest",
        "layout",
        "linear_before_reset",
        "new_axis",
        "noop_with_empty_axes",
        "reverse",
        "saturate",
        "select_last_index",
        "sorted",
        "storage_order",
        "training_mode",
        "transA",
        "transB",
        "upper",
    }
)


def _attribute_value_rules(model: onnx.ModelProto) -> list[str]:
    """A switch attribute (SWITCH_ATTRIBUTES) holds 0 or 1. onnxruntime runs other values, but each tool reads them
    its own way (keepdims=255 keeps no dimension in onnx's shape inference and onnxruntime, transB=7 transposes in
    both): the model means nothing definite, and is refused naming the attribute."""

    def default_opset(opset_import) -> int | None:
        return next((o.version for o in opset_import if o.domain in ("", "ai.onnx")), None)

    problems = []

    def visit(nodes, where: str, opset: int | None) -> None:
        for i, node in enumerate(nodes):
            for attr in node.attribute:
                for sub in _attribute_graphs(attr):
                    visit(sub.node, f"{where}subgraph {attr.name!r} of node {node.name!r}: ", opset)
            if opset is None or node.domain not in ("", "ai.onnx"):
                continue
            try:
                declared = onnx.defs.get_schema(node.op_type, opset, "").attributes
            except (onnx.defs.SchemaError, TypeError):
                continue  # an unknown op, or an op type that is not text (invalid UTF-8): the checker names it
            for attr in node.attribute:
                if (
                    attr.name in SWITCH_ATTRIBUTES
                    and attr.type == onnx.AttributeProto.INT
                    and attr.i not in (0, 1)
                    and attr.name in declared
                    and declared[attr.name].type == onnx.defs.OpSchema.AttrType.INT
                ):
                    problems.append(
                        f"{where}{_node_label(node, i)}: attribute {attr.name}={attr.i} is outside its "
                        f"documented values (0 or 1)"
                    )

    visit(model.graph.node, "", default_opset(model.opset_import))
    for function in model.functions:
        visit(function.node, f"function '{function.domain}.{function.name}': ", default_opset(function.opset_import))
    return problems


FURTHER_RULES: tuple[Callable[[onnx.ModelProto], list[str]], ...] = (
    _opset_rules,
    _function_rules,
    _node_name_rules,
    _attribute_value_rules,
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


def _inputs_read(node) -> set[str]:
    return {x for x in node.input if x}


def topological_order(nodes, reads: Callable[[Any], set[str]] = _inputs_read) -> list[int]:
    """Indices of `nodes` with every producer before its users (ties in file order); nodes on a cycle are left out.
    `reads(node)` names what a node reads (its inputs; the importer adds what its subgraphs capture)."""
    produced_by = {name: i for i, n in enumerate(nodes) for name in n.output if name}
    users, indegree = collections.defaultdict(list), [0] * len(nodes)
    for i, n in enumerate(nodes):
        for name in reads(n):
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
    return order


def _sorted_nodes(graph) -> list:
    """The graph's nodes, every producer before its users where the file got that wrong (cycles stay as they are,
    for the checker to report)."""
    nodes = list(graph.node)
    order = topological_order(nodes)
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
    shapes = {
        o.name: o.type.tensor_type.shape
        for o in inferred.graph.output
        if o.type.HasField("tensor_type") and o.type.tensor_type.HasField("shape")
    }
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
    versions = _version_rules(model)
    if versions:  # nothing else can be judged against versions no opset has
        return versions
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
        listed = problems[:MAX_LISTED] + (
            [f"and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise OnnxImportError(
            f"the model is not valid ONNX ({len(problems)} problem(s), found by onnx.checker and "
            f"the rules it leaves out):\n  " + "\n  ".join(listed)
        )
