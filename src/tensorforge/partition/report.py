"""PartitionReport: what went to the engine, what stayed in PyTorch, and why — every node, not the first.

Per op: how many nodes, how many offloaded. Overall: the share of nodes and of multiply-accumulates
(symbolic dimensions counted as 1) offloaded. Every region with its size, MACs, inputs and outputs.
Every reason a node stayed out, grouped by op then reason, with the names of all nodes it applies to.
Apart from those counts: the nodes folded into constants before partitioning (computed from constants only, see
fold.py), by op, and the constant-only nodes left unfolded, with why (a result too large to store, a random op...).
`str(report)` is the readable form; `to_dict()` / `from_dict()` the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpCount:
    op: str
    total: int
    offloaded: int


@dataclass(frozen=True)
class RegionSummary:
    name: str
    num_nodes: int
    macs: int
    inputs: tuple[tuple[str, str], ...]  # (value name, type)
    outputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Fallback:
    """Nodes of one op that stayed in PyTorch for one reason."""

    op: str
    reason: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Folded:
    """Nodes of one op computed from constants only, folded into constants before partitioning."""

    op: str
    nodes: tuple[str, ...]


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def _gmacs(macs: int) -> str:
    return f"{macs / 1e9:.3f} GMACs" if macs >= 1e6 else f"{macs} MACs"


@dataclass(frozen=True)
class PartitionReport:
    graph: str
    op_counts: tuple[OpCount, ...]
    total_macs: int
    offloaded_macs: int
    regions: tuple[RegionSummary, ...]
    fallbacks: tuple[Fallback, ...]  # sorted by op, then reason
    folded: tuple[Folded, ...] = ()  # sorted by op; these nodes are in none of the counts above
    not_folded: tuple[Fallback, ...] = ()  # constant-only nodes left in the graph, and why

    @property
    def folded_nodes(self) -> int:
        return sum(len(f.nodes) for f in self.folded)

    @property
    def total_nodes(self) -> int:
        return sum(c.total for c in self.op_counts)

    @property
    def offloaded_nodes(self) -> int:
        return sum(c.offloaded for c in self.op_counts)

    @property
    def node_share(self) -> float:
        """Share of nodes offloaded (1.0 for an empty graph)."""
        return _share(self.offloaded_nodes, self.total_nodes)

    @property
    def mac_share(self) -> float:
        """Share of multiply-accumulates offloaded (1.0 when the graph has none)."""
        return _share(self.offloaded_macs, self.total_macs)

    def counts(self) -> dict[str, tuple[int, int]]:
        """op -> (total, offloaded)."""
        return {c.op: (c.total, c.offloaded) for c in self.op_counts}

    def reasons(self) -> dict[str, dict[str, list[str]]]:
        """op -> reason -> the names of every node of that op that stayed out for that reason."""
        out: dict[str, dict[str, list[str]]] = {}
        for f in self.fallbacks:
            out.setdefault(f.op, {})[f.reason] = list(f.nodes)
        return out

    def reason_for(self, node_name: str) -> str | None:
        """Why the node stayed in PyTorch, or None if it went to the engine."""
        for f in self.fallbacks:
            if node_name in f.nodes:
                return f.reason
        return None

    def folded_ops(self) -> dict[str, list[str]]:
        """op -> the names of the nodes of that op folded into constants."""
        return {f.op: list(f.nodes) for f in self.folded}

    def fold_reason(self, node_name: str) -> str | None:
        """Why a node computed from constants only was not folded, or None (folded, or not constant-only)."""
        for f in self.not_folded:
            if node_name in f.nodes:
                return f.reason
        return None

    def __str__(self) -> str:
        lines = [
            f"partition of graph {self.graph!r}: {self.offloaded_nodes}/{self.total_nodes} nodes offloaded "
            f"({100 * self.node_share:.1f}%), {_gmacs(self.offloaded_macs)} of {_gmacs(self.total_macs)} "
            f"({100 * self.mac_share:.1f}% of MACs)",
        ]
        if self.folded:
            lines.append(
                f"folded into constants first ({self.folded_nodes} nodes): "
                + ", ".join(f"{f.op} {len(f.nodes)}" for f in self.folded)
            )
        for f in self.not_folded:
            lines.append(f"  not folded, {f.op} ({len(f.nodes)}): {f.reason}: {', '.join(f.nodes)}")
        lines.append(f"regions ({len(self.regions)}):")
        for r in self.regions:
            lines.append(f"  {r.name}: {r.num_nodes} node{'s' * (r.num_nodes != 1)}, {_gmacs(r.macs)}")
            lines.append("    inputs:  " + (", ".join(f"%{n}: {t}" for n, t in r.inputs) or "-"))
            lines.append("    outputs: " + ", ".join(f"%{n}: {t}" for n, t in r.outputs))
        width = max((len(c.op) for c in self.op_counts), default=2)
        lines.append("ops (offloaded / total):")
        lines += [f"  {c.op:<{width}}  {c.offloaded}/{c.total}" for c in self.op_counts]
        out = self.total_nodes - self.offloaded_nodes
        if out:
            lines.append(f"stayed in PyTorch ({out} node{'s' * (out != 1)}):")
            for op, by_reason in self.reasons().items():
                lines.append(f"  {op} ({sum(len(n) for n in by_reason.values())}):")
                for reason, nodes in by_reason.items():
                    lines.append(f"    {reason}: {', '.join(nodes)}")
        else:
            lines.append("stayed in PyTorch: nothing")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "graph": self.graph,
            "nodes": {"total": self.total_nodes, "offloaded": self.offloaded_nodes},
            "macs": {"total": self.total_macs, "offloaded": self.offloaded_macs},
            "ops": {c.op: {"total": c.total, "offloaded": c.offloaded} for c in self.op_counts},
            "regions": [
                {
                    "name": r.name,
                    "nodes": r.num_nodes,
                    "macs": r.macs,
                    "inputs": [list(x) for x in r.inputs],
                    "outputs": [list(x) for x in r.outputs],
                }
                for r in self.regions
            ],
            "fallback": self.reasons(),
            "folded": self.folded_ops(),
            "not_folded": [{"op": f.op, "reason": f.reason, "nodes": list(f.nodes)} for f in self.not_folded],
        }

    @classmethod
    def from_dict(cls, doc: dict) -> PartitionReport:
        return cls(
            graph=doc["graph"],
            op_counts=tuple(OpCount(op, c["total"], c["offloaded"]) for op, c in doc["ops"].items()),
            total_macs=doc["macs"]["total"],
            offloaded_macs=doc["macs"]["offloaded"],
            regions=tuple(
                RegionSummary(
                    r["name"],
                    r["nodes"],
                    r["macs"],
                    tuple(tuple(x) for x in r["inputs"]),
                    tuple(tuple(x) for x in r["outputs"]),
                )
                for r in doc["regions"]
            ),
            fallbacks=tuple(
                Fallback(op, reason, tuple(nodes))
                for op, by_reason in doc["fallback"].items()
                for reason, nodes in by_reason.items()
            ),
            folded=tuple(Folded(op, tuple(nodes)) for op, nodes in doc.get("folded", {}).items()),
            not_folded=tuple(Fallback(f["op"], f["reason"], tuple(f["nodes"])) for f in doc.get("not_folded", [])),
        )
