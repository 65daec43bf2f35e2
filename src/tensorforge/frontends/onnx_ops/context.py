"""What an ONNX converter works with: `Operand`s (tensors of the ONNX graph) and the `OnnxContext`.

Exported models compute shapes at run time: `Shape -> Gather -> Unsqueeze -> Concat -> Reshape`. The
IR wants those shapes as attributes, so the importer evaluates them while importing. An operand is
either a run-time IR value, or *known*: its value is computed during import. A known operand that
depends on the symbolic input sizes (anything downstream of `Shape` of a tensor with a `batch`, `seq`,
`H` dimension) is evaluated at several probe bindings of every symbol at once, like the IR's own meta
shape inference. A known integer vector of sizes also carries its exact elements (`Operand.sizes`: ints and
`SymExpr`s), computed by the size arithmetic of `SIZE_RULES` (take, concatenate, slices, + - * and floor
division by an int, integer casts); that is what a converter reads as an attribute (`ctx.ints`). A value
outside those rules (Max of sizes, a float round trip) is solved from its probes (`solve_element`: a
constant, `a*symbol + b`, or `k*s1*s2`), else refused naming the node and the values.

`ctx.emit` folds: an IR op whose inputs are all known runs right away through its reference
implementation (once per probe), so converters never special-case constants. It stays a run-time node
when its result's size depends on the batch or the result is much larger than its inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...ir import Graph, SymExpr, TensorType, Value
from ...ir.registry import get_op
from ...ir.types import BATCH, Dim, as_dim, contains_sym
from .registry import Unsupported

SYMBOL = BATCH  # the symbol of a leading dynamic dimension under dynamic_batch
# Sizes shape computations are evaluated at: probe i binds the j-th symbol (in sorted order) to PROBE_PRIMES[i][j].
# Primes, distinct across symbols and probes, so k*symbol is never confused with a constant or another symbol; a
# lone symbol (the batch of a batch-only model) takes 17, 37, 23 as it always has.
PROBE_PRIMES = (
    (17, 59, 67, 71, 73, 79, 83, 89),
    (37, 97, 101, 103, 107, 109, 113, 127),
    (23, 131, 137, 139, 149, 151, 157, 163),
)
PROBES = tuple(primes[0] for primes in PROBE_PRIMES)  # the probes of the first symbol
MAX_SYMBOLS = len(PROBE_PRIMES[0])
# results of folded ops larger than this, and larger than twice their inputs, stay run-time nodes
FOLD_LIMIT_BYTES = 1 << 20


class Operand:
    """One tensor of the ONNX graph during import: a run-time IR `Value`, or known (`probes`).

    `probes` holds one tensor (a constant) or one tensor per probe binding (a value that depends on the
    symbolic sizes, of a shape that does not); `sizes` its elements as expressions where the size rules knew
    them. `type` is None only in the static check, for a tensor of unknown type.
    """

    __slots__ = ("name", "type", "probes", "value", "sizes")

    def __init__(
        self,
        name: str,
        type: TensorType | None,
        probes: tuple[torch.Tensor, ...] | None = None,
        value: Value | None = None,
        sizes: tuple[Dim, ...] | None = None,
    ):
        self.name = name
        self.type = type
        self.probes = probes
        self.value = value
        # the exact elements (row-major) of a known integer tensor of sizes that depends on symbols
        self.sizes = sizes

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


def probe_env(symbols: Sequence[str], i: int) -> dict[str, int]:
    """The binding of probe `i`: the j-th of `symbols` (sorted) to PROBE_PRIMES[i][j]."""
    return {s: PROBE_PRIMES[i][j] for j, s in enumerate(sorted(symbols))}


def solve_element(values: Sequence[int | float | bool], symbols: Sequence[str] = (SYMBOL,)) -> Dim | float | None:
    """The value of one element across the probes of `symbols`: a number, an expression `a*s + b` (a >= 1) or
    `k*s1*s2` over the symbols, or None (not expressible). Two probes fix the expression, the third confirms it."""
    first = values[0]
    if all(v == first for v in values):
        return first
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    envs = [probe_env(symbols, i) for i in range(len(values))]
    candidates: list[SymExpr] = []
    for s in sorted(symbols):
        (x0, v0), (x1, v1) = (envs[0][s], values[0]), (envs[1][s], values[1])
        slope, rest = divmod(int(v1) - int(v0), x1 - x0)
        if not rest and slope >= 1:
            candidates.append(slope * SymExpr.symbol(s) + (int(v0) - slope * x0))
    for a, b in itertools.combinations_with_replacement(sorted(symbols), 2):
        k, rest = divmod(int(values[0]), envs[0][a] * envs[0][b])
        if not rest and k >= 1:
            candidates.append(k * SymExpr.symbol(a) * SymExpr.symbol(b))
    for expr in candidates:
        if all(expr.bind(env) == v for env, v in zip(envs, values)):
            return expr
    return None


def _integer_elements(x: Operand) -> list[Dim] | None:
    """The elements of a known integer tensor of at most one axis, as sizes: its `sizes`, or a small constant's."""
    if x.sizes is not None:
        return list(x.sizes)
    const = x.const
    if const is None or const.dtype not in _INT_TORCH or const.dim() > 1 or const.numel() > 64:
        return None
    return [int(v) for v in const.reshape(-1).tolist()]


_INT_TORCH = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_INT_NAMES = ("int64", "int32", "int16", "int8", "uint8")


def _positive_int(d: Dim) -> int | None:
    return d if isinstance(d, int) and d >= 1 else None


def _elementwise(op: Callable[[Dim, Dim], Dim | None]) -> Callable[[list[list[Dim]], dict], list[Dim] | None]:
    def rule(args: list[list[Dim]], attrs: dict) -> list[Dim] | None:
        a, b = args
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            return None
        n = max(len(a), len(b))
        out = [op(a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0]) for i in range(n)]
        return None if any(d is None for d in out) else [d for d in out if d is not None]

    return rule


def _floordiv(a: Dim, b: Dim) -> Dim | None:
    d = _positive_int(b)
    if d is None:
        return None
    return a // d if isinstance(a, int) else as_dim(a // d)  # sizes are non-negative: trunc == floor


def _mod(a: Dim, b: Dim) -> Dim | None:
    d = _positive_int(b)
    if d is None:
        return None
    return a % d if isinstance(a, int) else as_dim(a % d)


def _take(args: list[list[Dim]], attrs: dict) -> list[Dim] | None:
    data, indices = args
    picked = [i for i in indices if isinstance(i, int) and -len(data) <= i < len(data)]
    if attrs.get("axis", 0) != 0 or len(picked) != len(indices):
        return None
    return [data[i] for i in picked]


def _strided_slice(args: list[list[Dim]], attrs: dict) -> list[Dim] | None:
    (data,) = args
    begin, end, strides = attrs["begin"], attrs["end"], attrs.get("strides") or (1,)
    axes = attrs.get("axes")
    if len(begin) != 1 or (axes is not None and tuple(axes) != (0,)):
        return None
    if not all(isinstance(v, int) for v in (begin[0], end[0], strides[0])):
        return None
    return data[slice(begin[0], end[0], strides[0])]


def _cast(args: list[list[Dim]], attrs: dict) -> list[Dim] | None:
    return args[0] if attrs.get("dtype") in _INT_NAMES else None


def _unchanged(args: list[list[Dim]], attrs: dict) -> list[Dim] | None:
    return args[0]


# The size arithmetic of shape subgraphs, by IR op: each takes the inputs' elements (flattened) and the attributes,
# and gives the output's elements, or None where it does not apply (the probe fit then decides).
SIZE_RULES: dict[str, Callable[[list[list[Dim]], dict], list[Dim] | None]] = {
    "take": _take,
    "concatenate": lambda args, attrs: [d for a in args for d in a],
    "expand_dims": _unchanged,
    "squeeze": _unchanged,
    "reshape": _unchanged,
    "copy": _unchanged,
    "strided_slice": _strided_slice,
    "cast": _cast,
    "add": _elementwise(lambda a, b: as_dim(SymExpr.from_dim(a) + b)),
    "subtract": _elementwise(lambda a, b: as_dim(SymExpr.from_dim(a) - b)),
    "multiply": _elementwise(lambda a, b: as_dim(SymExpr.from_dim(a) * b)),
    "floor_divide": _elementwise(_floordiv),
    "trunc_divide": _elementwise(_floordiv),
    "floor_mod": _elementwise(_mod),
    "trunc_mod": _elementwise(_mod),
}


class OnnxContext:
    """What a converter sees: the graph being built, the ONNX node being converted and helpers."""

    def __init__(self, graph: Graph, symbols: Sequence[str] = ()):
        self.graph = graph
        if len(symbols) > MAX_SYMBOLS:
            raise Unsupported(f"at most {MAX_SYMBOLS} symbolic input sizes are supported, got {sorted(symbols)}")
        self.symbols: tuple[str, ...] = tuple(sorted(symbols))  # every symbol of the graph's inputs
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

    def probe_env(self, i: int) -> dict[str, int]:
        return probe_env(self.symbols, i)

    def from_dims(self, dims: Sequence, dtype: torch.dtype = torch.int64, scalar: bool = False) -> Operand:
        """A known 1-d tensor of sizes (ints and SymExprs), e.g. the result of `Shape`; 0-d with `scalar`."""
        has_sym = any(isinstance(d, SymExpr) for d in dims)
        count = len(PROBE_PRIMES) if has_sym else 1
        shape = () if scalar else (len(dims),)
        probes = [
            torch.tensor(
                [d.bind(self.probe_env(i)) if isinstance(d, SymExpr) else d for d in dims], dtype=dtype
            ).reshape(shape)
            for i in range(count)
        ]
        out = self.known(probes)
        if has_sym:
            out.sizes = tuple(dims)
        return out

    def elements(self, x: Operand, what: str) -> list:
        """Every element of a known tensor: its exact sizes, else solved across the probes (numbers, SymExprs)."""
        if x is None or x.probes is None:
            raise Unsupported(f"{what} is computed at run time; it must be known when the model is imported")
        if x.sizes is not None:
            return list(x.sizes)
        flat = [p.reshape(-1).tolist() for p in x.probes]
        out = []
        for j in range(len(flat[0])):
            values = [f[j] for f in flat]
            v = solve_element(values, self.symbols)
            if v is None:
                at = "; ".join(f"{v} at {self.probe_env(i)}" for i, v in enumerate(values))
                raise Unsupported(
                    f"{what} (element {j}) depends on {', '.join(self.symbols)} in a way the IR cannot express: "
                    f"it is {at}, neither constant nor a*symbol + b nor k*s1*s2"
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
            count = len(PROBE_PRIMES)
        in_bytes = sum(p.numel() * p.element_size() for x in inputs for p in x.known_probes[:1])
        try:  # the result's size first (meta execution): a large result is never computed here
            types = opdef.infer_types([x.type for x in inputs], attrs)
        except Exception as exc:  # the op rejects these inputs: let the node run through onnxruntime
            raise Unsupported(f"{opdef.name}: {exc}") from exc
        out_bytes = sum(t.nbytes(self.probe_env(0)) for t in types)
        if out_bytes > max(FOLD_LIMIT_BYTES, 2 * in_bytes):
            return None
        runs = []
        for i in range(count):
            env = self.probe_env(i) if count > 1 else {}
            args = [x.known_probes[i] if len(x.known_probes) > 1 else x.known_probes[0] for x in inputs]
            try:
                runs.append(opdef.run(args, attrs, env, device="cpu"))
            except Exception as exc:  # the op rejects these constants: let the node run through onnxruntime
                raise Unsupported(f"{opdef.name} on the node's constant inputs failed: {exc}") from exc
        outs = []
        for j in range(len(runs[0])):
            probes = [run[j] for run in runs]
            if any(p.shape != probes[0].shape for p in probes):
                return None  # its size depends on the symbols: a run-time tensor
            outs.append(self.known(probes))
        if len(outs) == 1 and len(outs[0].known_probes) > 1:
            outs[0].sizes = self._exact_sizes(opdef.name, inputs, attrs, outs[0])
        return tuple(outs)

    def _exact_sizes(self, op: str, inputs: Sequence[Operand], attrs: dict, out: Operand) -> tuple[Dim, ...] | None:
        """The result's elements by the size rules, where they apply and agree with every probe (a rule that
        disagrees would be a bug here: the probes, which ran the op itself, then decide)."""
        rule = SIZE_RULES.get(op)
        args = [_integer_elements(x) for x in inputs]
        if rule is None or any(a is None for a in args) or out.dtype not in _INT_NAMES:
            return None
        sizes = rule([a for a in args if a is not None], attrs)
        if sizes is None:
            return None
        for i, probe in enumerate(out.known_probes):
            env = self.probe_env(i)
            bound = [d.bind(env) if isinstance(d, SymExpr) else d for d in sizes]
            if bound != probe.reshape(-1).tolist():
                return None
        return tuple(sizes)

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
        """A symbol-dependent integer tensor at run time: each symbolic size is the sum of a `full` of ones of
        that length; rare (a shape tensor used as data), so clarity beats speed here."""
        dims = self.elements(x, f"the value of {x.name}")
        dtype = x.dtype
        if dtype not in ("int64", "int32"):
            raise Unsupported(f"{x.name}: a size-dependent {dtype} tensor cannot be expressed in the IR")
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
    """Product of sizes (ints and SymExprs): an int when constant."""
    total: SymExpr = SymExpr.const(1)
    for d in dims:
        total = total * (d if isinstance(d, SymExpr) else int(d))
    return as_dim(total)
