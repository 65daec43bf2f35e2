"""Symbolic sizes: integer expressions over named dimensions, in one canonical form.

`Sym(symbol, scale)` (types.py) builds what a dynamic *batch* produces (batch, 12*batch). Any dynamic
dimension (issue 14, docs/dynamic_shapes.md) needs more: a reshape folds `batch*seq`, a slice drops one
position (`seq - 1`), a strided conv or pool halves a side (`(h + 1) // 2`), attention scores are
`batch*heads*seq*seq`. `SymExpr` is that: ints and named symbols under +, -, * and floor-division / modulo
by a positive int.

Canonical form, so that equal expressions compare and hash equal: a sum of terms, each an integer
coefficient times a monomial (a sorted product of atoms with powers); an atom is a symbol name or a
floor-division `(e // d)` whose numerator is itself canonical and *reduced*:

- `(d*a + b) // d` becomes `a + b // d` (exact for every integer value of the symbols), so every coefficient
  of a numerator lies in 0..d-1;
- a common factor of the numerator's coefficients and the divisor cancels: `(2*h + 2) // 4` is `(h + 1) // 2`;
- `(e // a + t) // b` is `(e + a*t) // (a*b)` (t free of floor-divisions; `(e // a) // b` is `e // (a*b)`);
- `e % d` is `e - d*(e // d)`, so `x % 8 + 8*(x // 8)` simplifies to `x`.

Polynomial identities are therefore decided exactly. Identities that need a case split (`(x + 1)//2 + x//2`
equals `x`) are not found: two expressions that compare unequal may still be equal for every size; two that
compare equal always are.

A file holding an expression is data: `from_json` parses a small structured form (ints, symbol names,
`{"+": [...]}`, `{"*": [...]}`, `{"//": [e, d]}`, `{"%": [e, d]}`), validates every part, and rebuilds the
canonical form through the same arithmetic; no string is ever evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

# A document nested deeper, or with more nodes, than any shape arithmetic needs is not one to_json wrote;
# refusing it keeps a hostile file from exhausting the stack or the time of a load.
MAX_JSON_DEPTH = 32
MAX_JSON_NODES = 4096


class SymbolicFormatError(ValueError):
    """A JSON form of a symbolic size is malformed; the message says where and what was expected."""


Atom: TypeAlias = "str | FloorDiv"
Monomial: TypeAlias = tuple[tuple[Atom, int], ...]  # (atom, power >= 1), sorted by _atom_key; () is the constant
Terms: TypeAlias = tuple[tuple[Monomial, int], ...]  # (monomial, nonzero coefficient), sorted by monomial key


def _atom_key(atom: Atom) -> tuple[Any, ...]:
    if isinstance(atom, str):
        return (0, atom)
    return (1, atom.numerator.sort_key(), atom.divisor)


def _mono_key(mono: Monomial) -> tuple[Any, ...]:
    return tuple((_atom_key(a), p) for a, p in mono)


class FloorDiv:
    """The atom `numerator // divisor`: numerator canonical, non-constant and reduced (see the module docstring);
    made only by `SymExpr.__floordiv__`."""

    __slots__ = ("numerator", "divisor", "_hash")

    numerator: SymExpr
    divisor: int
    _hash: int

    def __init__(self, numerator: SymExpr, divisor: int) -> None:
        object.__setattr__(self, "numerator", numerator)
        object.__setattr__(self, "divisor", divisor)
        object.__setattr__(self, "_hash", hash(("//", numerator, divisor)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("FloorDiv is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FloorDiv):
            return NotImplemented
        return self.divisor == other.divisor and self.numerator == other.numerator

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy rebuild through __init__ (__setattr__ refuses)
        return (FloorDiv, (self.numerator, self.divisor))

    def __repr__(self) -> str:
        return f"FloorDiv({self.numerator!r}, {self.divisor})"

    def __str__(self) -> str:
        inner = str(self.numerator)
        if len(self.numerator.terms) > 1:
            inner = f"({inner})"
        return f"{inner} // {self.divisor}"


def _check_int(value: object, what: str) -> int:
    if type(value) is not int:  # bool is an int subclass, and never a size
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    return value


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a symbol name must be an identifier, got {name!r}")
    return name


Operand: TypeAlias = "SymExpr | int"


class SymExpr:
    """An immutable, hashable integer expression over named symbols, kept in canonical form.

    Build one from `SymExpr.symbol("seq")`, `SymExpr.const(3)`, `Sym("batch", 12)` (types.py), and
    combine with ints and other expressions by `+ - *` and by `// %` with a positive int."""

    __slots__ = ("terms", "_hash")

    terms: Terms
    _hash: int

    def __init__(self, terms: Terms) -> None:
        """Private: `terms` must already be canonical. Use the constructors and the operators."""
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "_hash", hash(terms))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SymExpr is immutable")

    # -- constructors ---------------------------------------------------------------------------

    @staticmethod
    def const(value: int) -> SymExpr:
        return _from_dict({(): _check_int(value, "a constant size")})

    @staticmethod
    def symbol(name: str) -> SymExpr:
        return _from_dict({((_check_name(name), 1),): 1})

    @staticmethod
    def from_dim(dim: int | SymExpr) -> SymExpr:
        """The expression of an IR dimension (types.Dim): itself, or the constant of an int."""
        if isinstance(dim, SymExpr):
            return dim
        return SymExpr.const(_check_int(dim, "a dimension"))

    @staticmethod
    def lift(value: Operand) -> SymExpr:
        return value if isinstance(value, SymExpr) else SymExpr.const(_check_int(value, "an operand"))

    # -- reading --------------------------------------------------------------------------------

    @property
    def is_constant(self) -> bool:
        return all(mono == () for mono, _ in self.terms)

    @property
    def constant(self) -> int:
        """The constant term (the value itself when `is_constant`)."""
        return next((c for mono, c in self.terms if mono == ()), 0)

    @property
    def free_symbols(self) -> frozenset[str]:
        found: set[str] = set()
        for mono, _ in self.terms:
            for atom, _ in mono:
                found.update((atom,) if isinstance(atom, str) else atom.numerator.free_symbols)
        return frozenset(found)

    def to_dim(self) -> int | SymExpr | None:
        """The form `Sym` could say, if it can: the int of a constant, itself when k*symbol with k >= 1; else None."""
        if self.is_constant:
            return self.constant
        if len(self.terms) == 1:
            (mono, coeff) = self.terms[0]
            if coeff >= 1 and len(mono) == 1 and mono[0][1] == 1 and isinstance(mono[0][0], str):
                return self
        return None

    def sort_key(self) -> tuple[Any, ...]:
        """A total order on canonical forms (deterministic printing and atom order)."""
        return tuple((_mono_key(mono), c) for mono, c in self.terms)

    def bind(self, env: Mapping[str, int]) -> int:
        """The value with every symbol bound by `env`; a missing symbol is an error that names it."""
        total = 0
        for mono, coeff in self.terms:
            product = coeff
            for atom, power in mono:
                if isinstance(atom, str):
                    try:
                        value = env[atom]
                    except KeyError:
                        raise ValueError(
                            f"symbolic size {self} is not bound: needs {atom!r}; bound: {dict(env)}"
                        ) from None
                    _check_int(value, f"the size bound to {atom!r}")
                else:
                    value = atom.numerator.bind(env) // atom.divisor
                product *= value**power
            total += product
        return total

    def bounds(self, ranges: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """The least and greatest value over every size in `ranges` (symbol -> (lo, hi)), by interval arithmetic.

        Exact for sums of non-negative terms (every shape a graph computes at the ends of its range); otherwise
        a sound enclosure (the true range lies inside). Arena slots are sized at the upper end."""
        lo_total = hi_total = 0
        for mono, coeff in self.terms:
            lo, hi = coeff, coeff
            for atom, power in mono:
                if isinstance(atom, str):
                    try:
                        a_lo, a_hi = ranges[atom]
                    except KeyError:
                        raise ValueError(
                            f"symbolic size {self} has no range for {atom!r}; ranges: {dict(ranges)}"
                        ) from None
                else:
                    n_lo, n_hi = atom.numerator.bounds(ranges)
                    a_lo, a_hi = n_lo // atom.divisor, n_hi // atom.divisor
                for _ in range(power):
                    corners = (lo * a_lo, lo * a_hi, hi * a_lo, hi * a_hi)
                    lo, hi = min(corners), max(corners)
            lo_total += lo
            hi_total += hi
        return lo_total, hi_total

    def subs(self, mapping: Mapping[str, Operand]) -> SymExpr:
        """This expression with symbols replaced by expressions or ints (others kept), renormalized."""
        total = SymExpr.const(0)
        for mono, coeff in self.terms:
            product = SymExpr.const(coeff)
            for atom, power in mono:
                if isinstance(atom, str):
                    factor = SymExpr.lift(mapping[atom]) if atom in mapping else SymExpr.symbol(atom)
                else:
                    factor = atom.numerator.subs(mapping) // atom.divisor
                for _ in range(power):
                    product = product * factor
            total = total + product
        return total

    # -- arithmetic -----------------------------------------------------------------------------

    def __add__(self, other: Operand) -> SymExpr:
        if not isinstance(other, SymExpr | int) or isinstance(other, bool):
            return NotImplemented
        acc = dict(self.terms)
        for mono, c in SymExpr.lift(other).terms:
            acc[mono] = acc.get(mono, 0) + c
        return _from_dict(acc)

    __radd__ = __add__

    def __neg__(self) -> SymExpr:
        return SymExpr(tuple((mono, -c) for mono, c in self.terms))

    def __sub__(self, other: Operand) -> SymExpr:
        if not isinstance(other, SymExpr | int) or isinstance(other, bool):
            return NotImplemented
        return self + -SymExpr.lift(other)

    def __rsub__(self, other: Operand) -> SymExpr:
        if not isinstance(other, int) or isinstance(other, bool):
            return NotImplemented
        return SymExpr.const(other) - self

    def __mul__(self, other: Operand) -> SymExpr:
        if not isinstance(other, SymExpr | int) or isinstance(other, bool):
            return NotImplemented
        acc: dict[Monomial, int] = {}
        for mono_a, ca in self.terms:
            for mono_b, cb in SymExpr.lift(other).terms:
                mono = _mono_mul(mono_a, mono_b)
                acc[mono] = acc.get(mono, 0) + ca * cb
        return _from_dict(acc)

    __rmul__ = __mul__

    def __floordiv__(self, divisor: int) -> SymExpr:
        divisor = _check_divisor(divisor, "//")
        if divisor == 1:
            return self
        quotient: dict[Monomial, int] = {}
        remainder: dict[Monomial, int] = {}
        for mono, c in self.terms:  # (d*q + r) // d == q + r // d for every integer value: split each coefficient
            quotient[mono] = c // divisor
            remainder[mono] = c % divisor
        q, r = _from_dict(quotient), _from_dict(remainder)
        if r.is_constant:  # 0 <= r < d
            return q
        g = math.gcd(divisor, *(c for _, c in r.terms))
        if g > 1:
            r = _from_dict({mono: c // g for mono, c in r.terms})
            divisor //= g
        # (e // a + t) // b == (e + a*t) // (a*b) for positive a, b and integer t (floor(floor(x) + t) == floor(x + t)):
        # a stride-2 window over a stride-2 window is one floor-division, (h + 3) // 4, as PyTorch writes it too. Only
        # for a numerator with one floor-division atom, alone in its term with coefficient 1 (else which one absorbs
        # the rest would not be unique)
        divided = [(mono, c) for mono, c in r.terms if any(isinstance(atom, FloorDiv) for atom, _ in mono)]
        if len(divided) == 1:
            (mono, c) = divided[0]
            (atom, power) = mono[0]
            if c == 1 and len(mono) == 1 and power == 1 and isinstance(atom, FloorDiv):
                rest = r - _from_dict({mono: 1})
                return q + (atom.numerator + atom.divisor * rest) // (atom.divisor * divisor)
        return q + _from_dict({((FloorDiv(r, divisor), 1),): 1})

    def __mod__(self, divisor: int) -> SymExpr:
        divisor = _check_divisor(divisor, "%")
        return self - divisor * (self // divisor)

    # -- identity and printing ------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SymExpr):
            return NotImplemented
        return self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        raise TypeError(f"the truth of symbolic size {self} depends on its symbols; compare sizes with bind()")

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy rebuild through __init__ (__setattr__ refuses)
        return (SymExpr, (self.terms,))

    def __repr__(self) -> str:
        return f"SymExpr({str(self)!r})"

    def __str__(self) -> str:
        ordered = [t for t in self.terms if t[0] != ()] + [t for t in self.terms if t[0] == ()]
        if not ordered:
            return "0"
        out = ""
        for i, (mono, coeff) in enumerate(ordered):
            body = _term_str(mono, abs(coeff))
            if i == 0:
                out = f"-{body}" if coeff < 0 else body
            else:
                out += f" - {body}" if coeff < 0 else f" + {body}"
        return out

    # -- JSON -----------------------------------------------------------------------------------

    def to_json(self) -> Any:
        """A JSON-able form: an int, a symbol name, or {"+": [...]}, {"*": [...]}, {"//": [e, d]}."""
        parts = [_term_json(mono, coeff) for mono, coeff in self.terms]
        if not parts:
            return 0
        return parts[0] if len(parts) == 1 else {"+": parts}

    @staticmethod
    def from_json(data: Any) -> SymExpr:
        """Parse what `to_json` writes (any equivalent form), validating every part; never evaluates a string."""
        budget = [MAX_JSON_NODES]
        return _parse(data, "$", 0, budget)


def _check_divisor(divisor: object, op: str) -> int:
    if type(divisor) is not int:
        raise TypeError(f"a symbolic size is divided ({op}) only by an int, got {type(divisor).__name__}")
    if divisor < 1:
        raise ValueError(f"a symbolic size is divided ({op}) only by a positive int, got {divisor}")
    return divisor


def _from_dict(acc: Mapping[Monomial, int]) -> SymExpr:
    return SymExpr(tuple(sorted(((m, c) for m, c in acc.items() if c != 0), key=lambda t: _mono_key(t[0]))))


def _mono_mul(a: Monomial, b: Monomial) -> Monomial:
    if not a:
        return b
    if not b:
        return a
    powers: dict[Atom, int] = dict(a)
    for atom, p in b:
        powers[atom] = powers.get(atom, 0) + p
    return tuple(sorted(powers.items(), key=lambda t: _atom_key(t[0])))


def _factor_str(atom: Atom, power: int, alone: bool) -> str:
    text = atom if isinstance(atom, str) else str(atom)
    if isinstance(atom, FloorDiv) and (not alone or power > 1):
        text = f"({text})"
    return text if power == 1 else f"{text}**{power}"


def _term_str(mono: Monomial, magnitude: int) -> str:
    if not mono:
        return str(magnitude)
    alone = magnitude == 1 and len(mono) == 1
    factors = [_factor_str(a, p, alone) for a, p in mono]
    return "*".join(([str(magnitude)] if magnitude != 1 else []) + factors)


def _atom_json(atom: Atom) -> Any:
    return atom if isinstance(atom, str) else {"//": [atom.numerator.to_json(), atom.divisor]}


def _term_json(mono: Monomial, coeff: int) -> Any:
    factors: list[Any] = [] if coeff == 1 and mono else [coeff]
    for atom, power in mono:
        factors.extend([_atom_json(atom)] * power)
    return factors[0] if len(factors) == 1 else {"*": factors}


def _parse(data: Any, where: str, depth: int, budget: list[int]) -> SymExpr:
    if depth > MAX_JSON_DEPTH:
        raise SymbolicFormatError(f"symbolic size at {where}: nested more than {MAX_JSON_DEPTH} levels deep")
    budget[0] -= 1
    if budget[0] < 0:
        raise SymbolicFormatError(f"symbolic size at {where}: more than {MAX_JSON_NODES} parts")
    if type(data) is int:
        return SymExpr.const(data)
    if isinstance(data, str):
        if not data.isidentifier():
            raise SymbolicFormatError(f"symbolic size at {where}: a symbol name must be an identifier, got {data!r}")
        return SymExpr.symbol(data)
    if not isinstance(data, dict):
        raise SymbolicFormatError(
            f"symbolic size at {where}: expected an int, a symbol name or an object with one key of "
            f"'+', '*', '//', '%', got {_describe(data)}"
        )
    if len(data) != 1:
        raise SymbolicFormatError(f"symbolic size at {where}: an object has exactly one key, got {sorted(data)!r}")
    ((op, args),) = data.items()
    if op in ("+", "*"):
        if not isinstance(args, list) or not args:
            raise SymbolicFormatError(f"symbolic size at {where}: {op!r} takes a non-empty list, got {_describe(args)}")
        parts = [_parse(a, f"{where}[{op!r}][{i}]", depth + 1, budget) for i, a in enumerate(args)]
        return _fold(parts, op)
    if op in ("//", "%"):
        if not isinstance(args, list) or len(args) != 2:
            raise SymbolicFormatError(
                f"symbolic size at {where}: {op!r} takes [expression, positive int], got {_describe(args)}"
            )
        numerator = _parse(args[0], f"{where}[{op!r}][0]", depth + 1, budget)
        divisor = args[1]
        if type(divisor) is not int or divisor < 1:
            raise SymbolicFormatError(
                f"symbolic size at {where}[{op!r}][1]: the divisor must be a positive int, got {_describe(divisor)}"
            )
        return numerator // divisor if op == "//" else numerator % divisor
    raise SymbolicFormatError(f"symbolic size at {where}: unknown operator {op!r} (expected '+', '*', '//', '%')")


def _fold(parts: Iterable[SymExpr], op: str) -> SymExpr:
    result: SymExpr | None = None
    for p in parts:
        result = p if result is None else (result + p if op == "+" else result * p)
    assert result is not None
    return result


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
