"""What an ONNX converter works with: `Operand`s (tensors of the ONNX graph) and the `OnnxContext`.

Exported models compute shapes at run time: `Shape -> Gather -> Unsqueeze -> Concat -> Reshape`. The
IR wants those shapes as attributes, so the importer evaluates them while importing. An operand is
either a run-time IR value, or *known*: its value is computed during import. A known operand that
depends on the dynamic batch (anything downstream of `Shape` of a batched tensor) is evaluated at
several probe batch sizes at once, like the IR's own meta shape inference; an integer it holds that
equals `k * batch` at every probe becomes `Sym("batch", k)` where a converter needs it as an attribute
(`ctx.ints`), and a value that is the same at every probe is a plain constant.

`ctx.emit` folds: an IR op whose inputs are all known runs right away through its reference
implementation (once per probe), so converters never special-case constants. It stays a run-time node
when its result's size depends on the batch or the result is much larger than its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...ir import Graph, Sym, SymExpr, TensorType, Value
from ...ir.registry import get_op
from ...ir.types import BATCH, contains_sym
from .registry import Unsupported

SYMBOL = BATCH
# batch sizes shape computations are evaluated at; primes, so k * batch is never confused with a constant
PROBES = (17, 37, 23)
# results of folded ops larger than this, and larger than twice their inputs, stay run-time nodes
FOLD_LIMIT_BYTES = 1 << 20


class Operand:
    """One tensor of the ONNX graph during import: a run-time IR `Value`, or known (`probes`).

    `probes` holds one tensor (a constant) or one tensor per entry of PROBES (a batch-dependent value
    of batch-independent shape). `type` is None only in the static check, for a tensor of unknown type.
    """

    __slots__ = ("name", "type", "probes", "value")

    def __init__(
        self,
        name: str,
        type: TensorType | None,
        probes: tuple[torch.Tensor, ...] | None = None,
        value: Value | None = None,
    ):
        self.name = name
        self.type = type
        self.probes = probes
        self.value = value

    @staticmethod
    def known(name: str, probes: Sequence[torch.Tensor]) -> Operand:
        probes = tuple(probes)
        first = probes[0]
        if all(_same(p, first) for p in probes[1:]):
            probes = (first,)
        return Operand(name, TensorType.of(first), probes=probes)

    @property
    def is_known(self) -> bool:
        return self.probes is not None

    @property
    def known_probes(self) -> tuple[torch.Tensor, ...]:
        """The probes of a known operand; asking a run-time operand for them is a bug."""
        assert self.probes is not None, f"operand {self.name} is computed at run time"
        return self.probes

    @property
    def known_type(self) -> TensorType:
        """The type; only the static check's operands can lack one, and they never reach a converter."""
        if self.type is None:  # the same error as reading an attribute of None, with the operand's name
            raise AttributeError(f"operand {self.name} has no known type")
        return self.type

    @property
    def const(self) -> torch.Tensor | None:
        """The value when it is a constant (the same at every batch size), else None."""
        return self.probes[0] if self.probes is not None and len(self.probes) == 1 else None

    @property
    def rank(self) -> int:
        return self.known_type.rank

    @property
    def shape(self) -> tuple:
        return self.known_type.shape

    @property
    def dtype(self) -> str:
        return self.known_type.dtype

    def __repr__(self) -> str:
        kind = "const" if self.const is not None else "known" if self.is_known else "value"
        return f"Operand({self.name}: {self.type}, {kind})"


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and values, NaN equal to NaN (a NaN constant is still a constant)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(torch.all((a == b) | (torch.isnan(a) & torch.isnan(b))))
    return torch.equal(a, b)


def solve_element(values: Sequence[int | float | bool]):
    """The value of one element across the probes: a number, Sym('batch', k), or None (not expressible)."""
    first = values[0]
    if all(v == first for v in values):
        return first
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    if values[0] % PROBES[0]:
        return None
    scale = int(values[0]) // PROBES[0]  # an int: checked above
    if scale >= 1 and all(v == scale * p for v, p in zip(values, PROBES)):
        return Sym(SYMBOL, scale)
    return None


class OnnxContext:
    """What a converter sees: the graph being built, the ONNX node being converted and helpers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.node_name: str | None = None
        self.outputs_used: list[bool] = []
        self.since: int = 0  # since-version of the op being converted
        self._materialized: list[Operand] = []
        # set by the importer: imports a subgraph's nodes here, returns its outputs (If's taken branch)
        self.subgraph_importer: Callable[[Any], list[Operand]] | None = None

    # -- undoing a converter that gave up half-way ----------------------------------------------

    def checkpoint(self) -> tuple[int, frozenset, int]:
        return len(self.graph.nodes), frozenset(self.graph.constants), len(self._materialized)

    def rollback(self, state: tuple[int, frozenset, int]) -> None:
        """Drop what a converter added before raising Unsupported, so the opaque node replaces it cleanly."""
        nodes, constants, materialized = state
        self.graph.erase_nodes(self.graph.nodes[nodes:])  # converters only append: the new nodes are the last
        for key in set(self.graph.constants) - constants:
            self.graph.erase_constant(self.graph.constants[key])
        for operand in self._materialized[materialized:]:
            operand.value = None
        del self._materialized[materialized:]

    # -- subgraphs ------------------------------------------------------------------------------

    def import_subgraph(self, graph) -> list[Operand]:
        """Import the nodes of an ONNX subgraph (a `GraphProto` without inputs) into the graph being built, as if
        they stood in place of the node being converted; the operands of its outputs, in order."""
        if self.subgraph_importer is None:
            raise Unsupported("subgraphs are imported only during from_onnx")
        return self.subgraph_importer(graph)

    # -- known values ---------------------------------------------------------------------------

    def const(self, value, dtype: torch.dtype | str | None = None) -> Operand:
        """A known constant from a tensor, a number or a (nested) list."""
        if isinstance(dtype, str):
            dtype = TensorType(dtype, ()).torch_dtype
        if not isinstance(value, torch.Tensor):
            if dtype is None:
                flat = value
                while isinstance(flat, (list, tuple)) and flat:
                    flat = flat[0]
                dtype = (
                    torch.bool if isinstance(flat, bool) else torch.int64 if isinstance(flat, int) else torch.float32
                )
            value = torch.tensor(value, dtype=dtype)
        elif dtype is not None:
            value = value.to(dtype)
        return Operand.known(self.node_name or "const", [value])

    def known(self, probes: Sequence[torch.Tensor]) -> Operand:
        return Operand.known(self.node_name or "known", probes)

    def from_dims(self, dims: Sequence, dtype: torch.dtype = torch.int64) -> Operand:
        """A known 1-d tensor of sizes (ints and Syms), e.g. the result of `Shape`."""
        has_sym = any(isinstance(d, SymExpr) for d in dims)
        count = len(PROBES) if has_sym else 1
        probes = [
            torch.tensor([d.bind({SYMBOL: PROBES[i]}) if isinstance(d, SymExpr) else d for d in dims], dtype=dtype)
            for i in range(count)
        ]
        return self.known(probes)

    def elements(self, x: Operand, what: str) -> list:
        """Every element of a known tensor, solved across the probes (numbers and Syms)."""
        if x is None or x.probes is None:
            raise Unsupported(f"{what} is computed at run time; it must be known when the model is imported")
        flat = [p.reshape(-1).tolist() for p in x.probes]
        out = []
        for j in range(len(flat[0])):
            v = solve_element([f[j] for f in flat])
            if v is None:
                raise Unsupported(
                    f"{what} depends on the batch size in a way the IR cannot express (not a multiple of it)"
                )
            out.append(v)
        return out

    def ints(self, x: Operand, what: str) -> tuple:
        """A known 0-d/1-d integer tensor as a tuple of ints and Syms (for attributes)."""
        if x is not None and x.type is not None and x.type.dtype not in ("int64", "int32", "int16", "int8", "uint8"):
            raise Unsupported(f"{what} must be an integer tensor, got {x.type}")
        return tuple(self.elements(x, what))

    def scalar(self, x: Operand, what: str):
        values = self.elements(x, what)
        if len(values) != 1:
            raise Unsupported(f"{what} must hold one value, got {len(values)}")
        return values[0]

    # -- emitting IR ----------------------------------------------------------------------------

    def emit(self, op: str, *inputs: Operand, **attrs):
        """Add IR op `op` (or evaluate it now when every input is known); return its output operand(s)."""
        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs)
        if all(x.is_known for x in inputs):
            folded = self._fold(opdef, inputs, attrs)
            if folded is not None:
                return folded[0] if len(folded) == 1 else folded
        values = [self.materialize(x) for x in inputs]
        node = self.graph.add_node(op, values, attrs, name=self.node_name)
        outs = tuple(Operand(v.name, v.type, value=v) for v in node.outputs)
        return outs[0] if len(outs) == 1 else outs

    def _fold(self, opdef, inputs: Sequence[Operand], attrs: dict) -> tuple[Operand, ...] | None:
        count = max((len(x.known_probes) for x in inputs), default=1)
        if contains_sym(tuple(attrs.values())):
            count = len(PROBES)
        in_bytes = sum(p.numel() * p.element_size() for x in inputs for p in x.known_probes[:1])
        try:  # the result's size first (meta execution): a large result is never computed here
            types = opdef.infer_types([x.type for x in inputs], attrs)
        except Exception as exc:  # the op rejects these inputs: let the node run through onnxruntime
            raise Unsupported(f"{opdef.name}: {exc}") from exc
        out_bytes = sum(t.nbytes({SYMBOL: PROBES[0]}) for t in types)
        if out_bytes > max(FOLD_LIMIT_BYTES, 2 * in_bytes):
            return None
        runs = []
        for i in range(count):
            env = {SYMBOL: PROBES[i]} if count > 1 else {}
            args = [x.known_probes[i] if len(x.known_probes) > 1 else x.known_probes[0] for x in inputs]
            try:
                runs.append(opdef.run(args, attrs, env, device="cpu"))
            except Exception as exc:  # the op rejects these constants: let the node run through onnxruntime
                raise Unsupported(f"{opdef.name} on the node's constant inputs failed: {exc}") from exc
        outs = []
        for j in range(len(runs[0])):
            probes = [run[j] for run in runs]
            if any(p.shape != probes[0].shape for p in probes):
                return None  # its size depends on the batch: a run-time tensor
            outs.append(self.known(probes))
        return tuple(outs)

    def materialize(self, x: Operand) -> Value:
        """The IR value of an operand: known operands become constants (or, batch-dependent, small
        computations from `full`), once per operand."""
        if x.value is not None:
            return x.value
        if not x.is_known:
            raise RuntimeError(f"operand {x.name} has neither a value nor known contents")
        if x.const is not None:
            x.value = self.graph.add_constant(x.const, x.name or "const")
        else:
            x.value = self._materialize_symbolic(x)
        self._materialized.append(x)
        return x.value

    def _materialize_symbolic(self, x: Operand) -> Value:
        """A batch-dependent integer tensor at run time: each `k * batch` is the sum of a `full` of ones of
        that length; rare (a shape tensor used as data), so clarity beats speed here."""
        dims = self.elements(x, f"the value of {x.name}")
        dtype = x.dtype
        if dtype not in ("int64", "int32"):
            raise Unsupported(f"{x.name}: a batch-dependent {dtype} tensor cannot be expressed in the IR")
        parts = []
        for d in dims:
            if isinstance(d, SymExpr):
                ones = self.graph.call("full", shape=(d,), fill_value=1, dtype=dtype)
                total = self.graph.call("sum", ones, axis=(0,), keepdims=True)
                parts.append(self.graph.call("cast", total, dtype=dtype))
            else:
                parts.append(self.graph.add_constant(torch.tensor([d], dtype=x.known_type.torch_dtype), "dim"))
        flat = parts[0] if len(parts) == 1 else self.graph.call("concatenate", *parts, axis=0)
        return self.graph.call("reshape", flat, newshape=tuple(x.shape))


def same_dtype(ctx: OnnxContext, x: Operand, like: Operand) -> Operand:
    """x cast to like's dtype (ONNX ops keep their input's dtype where PyTorch would promote)."""
    return x if x.dtype == like.dtype else ctx.emit("cast", x, dtype=like.dtype)


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def product(dims: Sequence) -> Any:
    """Product of sizes; at most one may be symbolic (the result is then symbolic)."""
    total, sym = 1, None
    for d in dims:
        if isinstance(d, SymExpr):
            if sym is not None:
                raise Unsupported("a product of two batch-dependent sizes")
            sym = d
        else:
            total *= int(d)
    if sym is None:
        return total
    if total == 0:
        return 0
    return sym * total
