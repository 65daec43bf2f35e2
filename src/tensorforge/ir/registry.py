"""The op registry: every IR op is declared here once, by decorating its reference implementation.

An op declaration carries
- its attributes with defaults (`REQUIRED` for the ones without),
- how many inputs it takes,
- shape/dtype inference (by default: run the reference implementation on meta tensors, see below),
- the reference implementation itself (PyTorch ops, so it runs on CPU and GPU),
- its multiply-accumulate count (for reports and for pruning regions that do no arithmetic).

Shape inference by meta execution: instead of writing shape arithmetic twice (once in the reference,
once in an inference function), the reference runs on `meta` tensors. Symbolic dimensions are probed
with two sets of prime sizes and each output dimension is solved as a constant, as an expression an input
dimension or a size attribute already carries (same values at two probes and a third: `seq - 1`, `batch*seq`
pass through elementwise ops, transposes and broadcasts unchanged), or as `scale * symbol`. An op whose sizes
are arithmetic on its inputs (reshape, slices, concatenation, convolution and pooling) declares `infer_shape`,
symbolic shape arithmetic that is checked against the probes; where the reference refuses the probe sizes, the
arithmetic is asked why, so a refusal names the symbols ("seq broadcast against 7") rather than probe sizes.
A further run with every symbol at 1 must agree, so an output that depends on a symbol only for small sizes
(squeeze without axes, a slice past a small batch) is refused, not typed wrong. Ops whose output type cannot
come from their reference (opaque ops) supply `infer`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import torch

from .symbolic import SymExpr
from .types import AttrValue, Dim, Sym, TensorType, as_dim, bind_dim, bind_value, dtype_name, is_monomial


class _Required:
    """The default of an attribute that has none: a node must give it."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()

InferFn = Callable[[Sequence[TensorType], Mapping[str, Any]], list[TensorType]]
# Symbolic shape arithmetic of an op (issue 14): each output's shape from the input types and attributes, or
# None where the op's arithmetic does not cover these inputs (the probe fit then types it, or refuses).
InferShapeFn = Callable[[Sequence[TensorType], Mapping[str, Any]], "list[tuple[Dim, ...]] | None"]
MacsFn = Callable[[Sequence[TensorType], Sequence[TensorType], Mapping[str, Any]], int]
_Reference = TypeVar("_Reference", bound=Callable[..., Any])


class UnknownOpError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want a sentence
        return str(self.args[0])


class ShapeInferenceError(ValueError):
    pass


def _no_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    return 0


@dataclass(frozen=True)
class OpDef:
    name: str
    compute: Callable[..., Any]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    num_inputs: tuple[int, int | None] = (1, 1)  # (min, max); max None = variadic
    infer: InferFn | None = None
    macs: MacsFn = _no_macs
    family: str = ""
    opaque: bool = False
    check_attrs: Callable[[Mapping[str, Any]], str | None] | None = None  # opaque ops: their attributes' layout
    infer_shape: InferShapeFn | None = None  # symbolic shape arithmetic, checked against the meta probes
    # inferred types by (input types, attributes): a graph repeats its layers (a transformer's blocks, an unrolled
    # recurrence's steps), and every pass that rebuilds a node infers again; inference through the meta probes costs
    # ~0.5 ms a node, a lookup here microseconds. Not an init field: an OpDef made from another
    # (dataclasses.replace, with another infer or infer_shape) starts with a cache of its own
    _inferred: dict[Any, tuple[TensorType, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @property
    def doc(self) -> str:
        return (self.compute.__doc__ or "").strip().splitlines()[0] if self.compute.__doc__ else ""

    def check_arity(self, n: int) -> str | None:
        lo, hi = self.num_inputs
        if n < lo or (hi is not None and n > hi):
            want = str(lo) if lo == hi else f"{lo}..{'' if hi is None else hi}"
            return f"{self.name} takes {want} inputs, got {n}"
        return None

    def normalize_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults, reject unknown or missing attributes, make values canonical (tuples, dtype names)."""
        if self.opaque:
            problem = self.check_attrs(attrs) if self.check_attrs is not None else None
            if problem:
                raise ValueError(f"{self.name}: {problem}")
            return {k: canonical_attr(v) for k, v in attrs.items()}
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {unknown}; it takes {sorted(self.attrs)}")
        out: dict[str, Any] = {}
        for key, default in self.attrs.items():
            if key in attrs:
                out[key] = canonical_attr(attrs[key])
            elif default is REQUIRED:
                raise ValueError(f"{self.name}: attribute {key!r} is required")
            else:
                out[key] = canonical_attr(default)
        return out

    def infer_types(self, inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        problem = self.check_arity(len(inputs))
        if problem:
            raise ShapeInferenceError(problem)
        key = _inference_key(inputs, attrs)
        known = self._inferred.get(key) if key is not None else None
        if known is not None:
            return list(known)
        types = list(self.infer(inputs, attrs)) if self.infer is not None else infer_by_meta(self, inputs, attrs)
        if key is not None:
            if len(self._inferred) >= _INFERRED_LIMIT:
                self._inferred.clear()
            self._inferred[key] = tuple(types)
        return types

    def count_macs(
        self,
        inputs: Sequence[TensorType],
        outputs: Sequence[TensorType],
        attrs: Mapping[str, Any],
        env: Mapping[str, int],
    ) -> int:
        """MACs with every symbol bound by `env` (missing symbols count as 1; a size that is then negative, like an
        audio frame's `samples - 64`, counts as 0: a report's estimate, not a size the model runs)."""
        env = _default_env([*inputs, *outputs], env)

        def bind(types: Sequence[TensorType]) -> list[TensorType]:
            return [TensorType(t.dtype, tuple(max(0, d) for d in t.concrete_shape(env))) for t in types]

        return int(self.macs(bind(inputs), bind(outputs), {k: bind_value(v, env) for k, v in attrs.items()}))

    def run(
        self,
        tensors: Sequence[torch.Tensor],
        attrs: Mapping[str, Any],
        env: Mapping[str, int],
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Run the reference; ops with no inputs (arange, full) create their result on `device`, and so do
        opaque ops, which may have no inputs (`{"device": None}` in their arguments means this device)."""
        kwargs = {k: bind_value(v, env) for k, v in attrs.items()}
        if self.num_inputs[1] == 0 or self.opaque:
            kwargs["device"] = device
        out = self.compute(*tensors, **kwargs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _default_env(types: Sequence[TensorType], env: Mapping[str, int]) -> dict[str, int]:
    full = {s: 1 for t in types for s in t.symbols}
    full.update(env)
    return full


_INFERRED_LIMIT = 4096  # inferred types kept per op


def _inference_key(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> Any:
    """A hashable key of an inference's arguments, each attribute value with its type (1, 1.0 and True are equal
    in Python but may type an output differently), or None where a value cannot be hashed."""

    def freeze(value: Any) -> Any:
        if isinstance(value, dict):
            return ("dict", tuple(sorted((k, freeze(v)) for k, v in value.items())))
        if isinstance(value, (tuple, list)):
            return (type(value).__name__, tuple(freeze(v) for v in value))
        return (type(value).__name__, value)

    try:
        key = (tuple(inputs), tuple(sorted((k, freeze(v)) for k, v in attrs.items())))
        hash(key)
    except TypeError:
        return None
    return key


def canonical_attr(value: object) -> AttrValue:
    """Attribute values are JSON-able scalars, strings, symbolic sizes, dtype names and (nested) tuples."""
    if isinstance(value, (list, tuple, torch.Size)):
        return tuple(canonical_attr(v) for v in value)
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, dict):
        return {k: canonical_attr(v) for k, v in value.items()}
    if isinstance(value, SymExpr):
        return as_dim(value)  # a constant size is its int, as in shapes
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} is not allowed in the IR")


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

_OPS: dict[str, OpDef] = {}
# Opaque ops are named after their source op ("torch.aten.logcumsumexp.default", "onnx.Hardmax"): one resolver
# per namespace prefix builds their OpDef on demand.
_OPAQUE_NAMESPACES: dict[str, Callable[[str], OpDef]] = {}


def register_op(
    name: str,
    *,
    attrs: Mapping[str, Any] | None = None,
    inputs: int | tuple[int, int | None] = 1,
    infer: InferFn | None = None,
    macs: MacsFn | None = None,
    infer_shape: InferShapeFn | None = None,
) -> Callable[[_Reference], _Reference]:
    """Decorator: declare the IR op `name` with the decorated function as its reference implementation."""
    arity: tuple[int, int | None]
    if isinstance(inputs, int):
        arity = (inputs, inputs)
    else:
        low, high = inputs
        arity = (low, high)

    def decorate(fn: _Reference) -> _Reference:
        if name in _OPS:
            raise ValueError(f"IR op {name!r} is already registered (by {_OPS[name].compute.__module__})")
        family = fn.__module__.rsplit(".", 1)[-1]
        _OPS[name] = OpDef(
            name=name,
            compute=fn,
            attrs=dict(attrs or {}),
            num_inputs=arity,
            infer=infer,
            macs=macs or _no_macs,
            family=family,
            infer_shape=infer_shape,
        )
        return fn

    return decorate


def register_opaque_namespace(prefix: str, resolver: Callable[[str], OpDef]) -> None:
    if prefix in _OPAQUE_NAMESPACES:
        raise ValueError(f"opaque namespace {prefix!r} is already registered")
    _OPAQUE_NAMESPACES[prefix] = resolver


def is_opaque(op: str) -> bool:
    return any(op.startswith(prefix) for prefix in _OPAQUE_NAMESPACES)


def get_op(name: str) -> OpDef:
    opdef = _OPS.get(name)
    if opdef is not None:
        return opdef
    for prefix, resolver in _OPAQUE_NAMESPACES.items():
        if name.startswith(prefix):
            return resolver(name)
    close = difflib.get_close_matches(name, list(_OPS), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownOpError(f"unknown IR op {name!r}{hint}")


def registered_ops() -> dict[str, OpDef]:
    return dict(sorted(_OPS.items()))


# ---------------------------------------------------------------------------------------------
# Shape inference by meta execution
# ---------------------------------------------------------------------------------------------

# Probe bindings (A, B, and C: a third point, asked only to confirm an expression that is not k*symbol): primes,
# distinct across symbols and probes. Small ones first, below the size of the tables a model slices by a symbol
# (BERT's position ids, 512 rows); where the reference refuses them, large ones: a real network divides an image
# side by 32 and then needs a window of 3, or reflect-pads an audio frame by 64. Meta tensors cost nothing at any
# size.
_PROBE_SETS = (
    ((17, 19, 23, 29, 31), (37, 41, 43, 47, 53), (59, 61, 67, 71, 73)),
    ((257, 263, 269, 271, 277), (281, 283, 293, 307, 311), (313, 317, 331, 337, 347)),
)
_MAX_SYMBOLS = len(_PROBE_SETS[0][0])
_PROBE_FAR = (1009, 2003, 3001, 4001, 5003)  # symbols far apart: tells apart expressions the close probes cannot


def _symbols_of(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[str]:
    found: set[str] = set()
    for t in inputs:
        found |= t.symbols

    def walk(v: object) -> None:
        if isinstance(v, SymExpr):
            found.update(v.free_symbols)
        elif isinstance(v, tuple):
            for x in v:
                walk(x)

    for v in attrs.values():
        walk(v)
    return sorted(found)


def _meta_run(
    opdef: OpDef, inputs: Sequence[TensorType], attrs: Mapping[str, Any], env: dict[str, int]
) -> tuple[torch.Tensor, ...]:
    tensors = [torch.empty(t.concrete_shape(env), dtype=t.torch_dtype, device="meta") for t in inputs]
    return opdef.run(tensors, attrs, env, device="meta")


def infer_by_meta(opdef: OpDef, inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    """Types by running the reference on meta tensors at probe sizes. Each output dimension that differs
    between the probes is, in this order: the op's own `infer_shape` arithmetic where it has one (checked
    against the probes); an input dimension's or a size attribute's expression with the same value at
    three probe bindings (so `seq - 1` or `batch*seq` passes through unchanged); `k*symbol`."""
    symbols = _symbols_of(inputs, attrs)
    if len(symbols) > _MAX_SYMBOLS:
        raise ShapeInferenceError(f"{opdef.name}: at most {_MAX_SYMBOLS} distinct symbols are supported")
    for probe_a, probe_b, probe_c in _PROBE_SETS if symbols else _PROBE_SETS[:1]:
        env_a, env_b, env_c = (dict(zip(symbols, probe)) for probe in (probe_a, probe_b, probe_c))
        try:
            outs_a = _meta_run(opdef, inputs, attrs, env_a)
            outs_b = _meta_run(opdef, inputs, attrs, env_b) if symbols else outs_a
            break
        except Exception as exc:  # noqa: BLE001 - the reference refused these sizes: larger probes, else say so
            refusal = exc
    else:
        if symbols and opdef.infer_shape is not None:
            _symbolic_shapes(opdef, inputs, attrs)  # its arithmetic may know why, in the symbols' terms: it raises
        shown = ", ".join(str(t) for t in inputs)
        raise ShapeInferenceError(f"{opdef.name}({shown}; {dict(attrs)}): {refusal}") from refusal
    shapes = _hook_shapes(opdef, inputs, attrs, outs_a, outs_b, env_a, env_b) if symbols else None
    if shapes is None:
        fit = _ProbeFit(opdef, inputs, attrs, env_a, env_b, env_c)
        shapes = [
            tuple(fit.dim(i, axis, int(da), int(db)) for axis, (da, db) in enumerate(zip(a.shape, b.shape)))
            for i, (a, b) in enumerate(zip(outs_a, outs_b))
        ]
    types = [TensorType(dtype_name(a.dtype), shape) for a, shape in zip(outs_a, shapes)]
    if symbols:
        _check_at_one(opdef, inputs, attrs, symbols, types)
    return types


def _hook_shapes(
    opdef: OpDef,
    inputs: Sequence[TensorType],
    attrs: Mapping[str, Any],
    outs_a: Sequence[torch.Tensor],
    outs_b: Sequence[torch.Tensor],
    env_a: dict[str, int],
    env_b: dict[str, int],
) -> list[tuple[Dim, ...]] | None:
    """The op's symbolic arithmetic, if it has some for these inputs; it must agree with the reference at
    both probes (a disagreement is a bug in the arithmetic, and is said so rather than typed wrong)."""
    shapes = _symbolic_shapes(opdef, inputs, attrs)
    if shapes is None:
        return None
    for env, outs in ((env_a, outs_a), (env_b, outs_b)):
        got = [tuple(bind_dim(d, env) for d in shape) for shape in shapes]
        want = [tuple(int(x) for x in out.shape) for out in outs]
        if got != want:
            raise ShapeInferenceError(
                f"{opdef.name}: its shape arithmetic gives {[list(s) for s in shapes]}, which is {got} at {env}, "
                f"but the reference gives {want}"
            )
    return shapes


def _symbolic_shapes(
    opdef: OpDef, inputs: Sequence[TensorType], attrs: Mapping[str, Any]
) -> list[tuple[Dim, ...]] | None:
    """The op's `infer_shape`, if it has one and it covers these inputs. Its ShapeInferenceError (a refusal that
    it gives in the symbols' own terms, e.g. "seq broadcast against 7") is raised naming the op and its inputs."""
    if opdef.infer_shape is None:
        return None
    try:
        shapes = opdef.infer_shape(inputs, attrs)
    except ShapeInferenceError as exc:
        shown = ", ".join(str(t) for t in inputs)
        raise ShapeInferenceError(f"{opdef.name}({shown}): {exc}") from None
    if shapes is None:
        return None
    return [tuple(as_dim(d) for d in shape) for shape in shapes]


class _ProbeFit:
    """Solves one output dimension from its sizes at the two probes: first an expression the inputs already
    carry (input dimensions, symbolic sizes in attributes) that has the same value at those and a third
    probe, then `k*symbol`."""

    def __init__(
        self,
        opdef: OpDef,
        inputs: Sequence[TensorType],
        attrs: Mapping[str, Any],
        env_a: dict[str, int],
        env_b: dict[str, int],
        env_c: dict[str, int],
    ) -> None:
        self.opdef, self.inputs, self.attrs = opdef, inputs, attrs
        self.env_a, self.env_b, self.env_c = env_a, env_b, env_c
        self.env_far = dict(zip(env_a, _PROBE_FAR))
        self._outs: dict[tuple[tuple[str, int], ...], list[tuple[int, ...]]] = {}  # output sizes at a probe
        seen: dict[SymExpr, None] = {}  # ordered set: inputs first, in order, then attributes
        for t in inputs:
            for d in t.shape:
                if isinstance(d, SymExpr):
                    seen[d] = None
        for v in attrs.values():
            for e in _sym_values(v):
                seen[e] = None
        self.candidates = list(seen)

    def dim(self, output: int, axis: int, da: int, db: int) -> int | SymExpr:
        """One output dimension: a constant where it is the same at both probes and, if it has inputs' expressions
        to be, at the far one too ((sequence + 64) // 128 - 1 is 1 at both close probes); else `solve`."""
        if da == db:
            far = self._size_at(self.env_far, output, axis) if self.candidates else None
            if far is None or far == da:
                return da
        return self.solve(output, axis, da, db)

    def solve(self, output: int, axis: int, da: int, db: int) -> SymExpr:
        # a k*symbol is fixed by two points; any other expression must also agree at a third
        matches = [
            expr
            for expr in self.candidates
            if expr.bind(self.env_a) == da
            and expr.bind(self.env_b) == db
            and (is_monomial(expr) or expr.bind(self.env_c) == self._size_at(self.env_c, output, axis))
        ]
        if matches and (len(matches) > 1 or not is_monomial(matches[0])):
            # the probes lie close together: (h + 15) // 16 and (w + 15) // 16 agree at all three, and so may a
            # floor-division by 128 and the size it should be. A point where the symbols lie far apart tells them
            # apart (where the reference refuses that point, the close probes decide)
            size = self._size_at(self.env_far, output, axis)
            if size is not None:
                matches = [e for e in matches if e.bind(self.env_far) == size]
        if matches:
            return matches[0]
        return _solve_dim(self.opdef.name, da, db, self.env_a, self.env_b)

    def _size_at(self, env: dict[str, int], output: int, axis: int) -> int | None:
        key = tuple(sorted(env.items()))
        if key not in self._outs:
            try:
                outs = _meta_run(self.opdef, self.inputs, self.attrs, env)
            except Exception:  # noqa: BLE001 - no such point: no expression other than k*symbol is confirmed by it
                self._outs[key] = []
            else:
                self._outs[key] = [tuple(int(x) for x in out.shape) for out in outs]
        sizes = self._outs[key]
        return sizes[output][axis] if output < len(sizes) else None


def _sym_values(value: object) -> list[SymExpr]:
    if isinstance(value, SymExpr):
        return [value]
    if isinstance(value, tuple):
        return [e for v in value for e in _sym_values(v)]
    return []


def _check_at_one(
    opdef: OpDef, inputs: Sequence[TensorType], attrs: Mapping[str, Any], symbols: list[str], types: list[TensorType]
) -> None:
    """The probes are large primes, so an output that depends on a symbol only for small values (squeeze
    without axes drops a batch of 1; a slice ending at 8 clamps to a batch below 8) would be typed as if the
    symbol were always large, and a plan would be wrong at batch 1. One more run with every symbol at 1 must
    give the inferred types' sizes; where the reference refuses size 1 (a training-mode batch norm), there is
    nothing to compare."""
    ones = dict.fromkeys(symbols, 1)
    try:
        outs = _meta_run(opdef, inputs, attrs, ones)
    except Exception:  # noqa: BLE001 - size 1 is not a valid input here: no case to get wrong
        return
    for i, (t, out) in enumerate(zip(types, outs)):
        if tuple(out.shape) != t.concrete_shape(ones):
            at_one = ", ".join(f"{s}=1" for s in symbols)
            raise ShapeInferenceError(
                f"{opdef.name}: output {i} is {t} for large {'/'.join(symbols)}, but {list(out.shape)} at {at_one}: "
                f"its size depends on the symbol in a way the IR cannot express (give explicit axes or bounds "
                f"that hold for every size)"
            )


def _solve_dim(op: str, da: int, db: int, env_a: dict[str, int], env_b: dict[str, int]) -> SymExpr:
    for sym, pa in env_a.items():
        pb = env_b[sym]
        if da % pa == 0 and db % pb == 0 and da // pa == db // pb:
            return Sym(sym, da // pa)
    raise ShapeInferenceError(
        f"{op}: an output dimension depends on a symbol in a way the IR cannot express "
        f"(it is neither constant nor a multiple of one symbol)"
    )
