"""Readable text for graphs: the full listing (`str(graph)`) and the summary of op counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .symbolic import SymExpr

if TYPE_CHECKING:
    from .graph import Graph, Value


def _attr(value: object) -> str:
    if isinstance(value, SymExpr):
        return str(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_attr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _ref(v: Value) -> str:
    return ("@" if v.kind == "const" else "%") + v.name


def print_graph(graph: Graph) -> str:
    params = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"graph {graph.name}({params}) {{"]
    for node in graph.nodes:
        outs = ", ".join(_ref(v) for v in node.outputs)
        args = [_ref(v) for v in node.inputs] + [f"{k}={_attr(v)}" for k, v in node.attrs.items()]
        types = ", ".join(str(v.type) for v in node.outputs)
        lines.append(f"  {outs} = {node.op}({', '.join(args)})  # {types}")
    lines.append(f"  return {', '.join(_ref(v) for v in graph.outputs)}")
    lines.append("}")
    for sub in graph.subgraphs.values():
        lines += ["", print_graph(sub)]
    return "\n".join(lines)


def summary(graph: Graph) -> str:
    counts = graph.op_counts()
    opaque = [n for n in graph.nodes if n.opdef.opaque]
    width = max((len(op) for op in counts), default=10)
    lines = [
        f"graph {graph.name}: {len(graph.nodes)} nodes, {len(counts)} distinct ops, "
        f"{len(graph.constants)} constants ({graph.parameter_bytes() / 2**20:.1f} MiB), "
        f"{graph.macs() / 1e9:.3f} GMACs at batch 1",
        "inputs:  " + ", ".join(f"{v.name}: {v.type}" for v in graph.inputs),
        "outputs: " + ", ".join(f"{v.name}: {v.type}" for v in graph.outputs),
        "op counts:",
    ]
    lines += [f"  {op:<{width}}  {n}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if opaque:
        lines.append(f"opaque ops ({len(opaque)} nodes, run through their source framework):")
        lines += [f"  {n.name}: {n.op}" for n in opaque]
    else:
        lines.append("opaque ops: none")
    return "\n".join(lines)
