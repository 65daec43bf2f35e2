"""SymExpr: canonical forms, algebra, binding against Python ints, and its JSON form (a file is data)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from tensorforge.ir.symbolic import MAX_JSON_DEPTH, SymbolicFormatError, SymExpr
from tensorforge.ir.types import Sym

B, S, H = SymExpr.symbol("batch"), SymExpr.symbol("seq"), SymExpr.symbol("h")
NAMES = ("batch", "seq", "h", "w")

# A random expression is a tree; `build` makes its SymExpr and `value` evaluates it with Python ints alone, so
# bind() is checked against an oracle that shares no code with the canonicalization.
Tree = Any


def random_tree(rng: random.Random, depth: int) -> Tree:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(NAMES) if rng.random() < 0.6 else rng.randint(-5, 9)
    op = rng.choice(["+", "-", "*", "//", "%"])
    if op in ("//", "%"):
        return (op, random_tree(rng, depth - 1), rng.randint(1, 8))
    return (op, random_tree(rng, depth - 1), random_tree(rng, depth - 1))


def build(tree: Tree) -> SymExpr:
    if isinstance(tree, str):
        return SymExpr.symbol(tree)
    if isinstance(tree, int):
        return SymExpr.const(tree)
    op, a, b = tree
    x = build(a)
    if op in ("//", "%"):
        return x // b if op == "//" else x % b
    y = build(b)
    return x + y if op == "+" else x - y if op == "-" else x * y


def value(tree: Tree, env: dict[str, int]) -> int:
    if isinstance(tree, str):
        return env[tree]
    if isinstance(tree, int):
        return tree
    op, a, b = tree
    x = value(a, env)
    ops: dict[str, Callable[[int, int], int]] = {
        "+": lambda p, q: p + q,
        "-": lambda p, q: p - q,
        "*": lambda p, q: p * q,
        "//": lambda p, q: p // q,
        "%": lambda p, q: p % q,
    }
    return ops[op](x, b if op in ("//", "%") else value(b, env))


def random_env(rng: random.Random, low: int = 1) -> dict[str, int]:
    return {n: rng.randint(low, 70) for n in NAMES}


# -- printing and canonical forms -------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, text",
    [
        (2 * B * S, "2*batch*seq"),
        (S * B * 2, "2*batch*seq"),
        (S - 1, "seq - 1"),
        (1 - S, "-seq + 1"),
        ((H + 1) // 2, "(h + 1) // 2"),
        (H // 2, "h // 2"),
        (3 * (H // 2), "3*(h // 2)"),
        (12 * B * S * S, "12*batch*seq**2"),
        (SymExpr.const(0), "0"),
        (SymExpr.const(-4), "-4"),
        (S % 8, "seq - 8*(seq // 8)"),
    ],
    ids=lambda x: str(x) if isinstance(x, str) else "",
)
def test_str(expr: SymExpr, text: str) -> None:
    assert str(expr) == text


@pytest.mark.parametrize(
    "a, b",
    [
        pytest.param(B * S + 1, 1 + S * B, id="commutative"),
        pytest.param((B + S) * (B - S), B * B - S * S, id="difference-of-squares"),
        pytest.param((H + 2 - 3) // 2 + 1, (H + 1) // 2, id="conv-k3-s2-p1"),
        pytest.param((H - 1) // 2 + 1, (H + 1) // 2, id="pool-ceil-form"),
        pytest.param((2 * H + 2) // 4, (H + 1) // 2, id="gcd-cancels"),
        pytest.param((H // 2) // 3, H // 6, id="nested-floor-div"),
        pytest.param((4 * S + 3) // 4, S, id="exact-quotient"),
        pytest.param((6 * B * S) // 3, 2 * B * S, id="exact-division"),
        pytest.param(S % 8 + 8 * (S // 8), S, id="div-mod-identity"),
        pytest.param(S // 1, S, id="div-by-one"),
        pytest.param(S % 1, SymExpr.const(0), id="mod-by-one"),
        pytest.param(S - S, SymExpr.const(0), id="cancel"),
        pytest.param(SymExpr.from_dim(Sym("batch", 12)), 12 * B, id="from-Sym"),
        pytest.param(SymExpr.from_dim(7), SymExpr.const(7), id="from-int"),
    ],
)
def test_canonical_forms_equal_and_hash_equal(a: SymExpr, b: SymExpr) -> None:
    assert a == b
    assert hash(a) == hash(b)
    assert str(a) == str(b)
    assert len({a, b}) == 1


def test_different_expressions_differ() -> None:
    assert B != S
    assert S + 1 != S
    assert (H + 1) // 2 != H // 2
    assert SymExpr.const(3) != 3  # an expression is not an int: dimensions keep ints as ints (to_dim)


def test_algebra_laws_over_random_expressions() -> None:
    rng = random.Random(14)
    for _ in range(300):
        a, b, c = (build(random_tree(rng, 3)) for _ in range(3))
        assert a + b == b + a and a * b == b * a
        assert (a + b) + c == a + (b + c) and (a * b) * c == a * (b * c)
        assert a * (b + c) == a * b + a * c
        assert a + 0 == a and a * 1 == a and a * 0 == SymExpr.const(0)
        assert a - a == SymExpr.const(0) and (a * -1) * -1 == a
        d = rng.randint(1, 9)
        assert (a * d + b) // d == a + b // d  # exact for every integer value of the symbols
        assert a % d + d * (a // d) == a


# -- binding ----------------------------------------------------------------------------------------


def test_bind_matches_python_ints() -> None:
    rng = random.Random(1414)
    for _ in range(500):
        tree = random_tree(rng, 4)
        expr = build(tree)
        for _ in range(4):
            env = random_env(rng)
            assert expr.bind(env) == value(tree, env), (tree, str(expr), env)


def test_floor_div_and_mod_follow_python_semantics() -> None:
    """Sizes are positive, but a numerator may go negative (seq - 5 at seq 1): floor division rounds down as Python's
    does, and % is non-negative for a positive divisor."""
    rng = random.Random(7)
    for _ in range(300):
        a, b = rng.randint(-6, 6), rng.randint(-9, 9)
        d = rng.randint(1, 12)
        e = a * S + b
        for seq in (1, 2, 3, 5, 8, 13, 64):
            n = a * seq + b
            assert (e // d).bind({"seq": seq}) == n // d
            assert (e % d).bind({"seq": seq}) == n % d


def test_free_symbols_and_to_dim() -> None:
    expr = 2 * B * ((S + 1) // 2) + H
    assert expr.free_symbols == frozenset({"batch", "seq", "h"})
    assert SymExpr.const(5).free_symbols == frozenset()
    assert (12 * B).to_dim() == Sym("batch", 12)
    assert SymExpr.const(3).to_dim() == 3
    assert (S - 1).to_dim() is None and (B * S).to_dim() is None
    assert SymExpr.from_dim(Sym("seq", 4)).to_dim() == Sym("seq", 4)


def test_subs() -> None:
    assert (B * S + 1).subs({"seq": 4}) == 4 * B + 1
    assert ((S + 1) // 2).subs({"seq": 2 * H + 1}) == H + 1
    assert (B * S).subs({}) == B * S


def test_bind_refuses_missing_or_non_int_sizes() -> None:
    with pytest.raises(ValueError, match="needs 'seq'"):
        (B * S).bind({"batch": 2})
    with pytest.raises(TypeError, match="must be an int"):
        S.bind({"seq": 2.0})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="must be an int"):
        S.bind({"seq": True})


def test_operands_and_divisors_are_checked() -> None:
    with pytest.raises(ValueError, match="positive int"):
        S // 0
    with pytest.raises(ValueError, match="positive int"):
        S % -2
    with pytest.raises(TypeError, match="only by an int"):
        S // S  # type: ignore[operator]
    with pytest.raises(TypeError):
        S + 1.5  # type: ignore[operator]
    with pytest.raises(TypeError):
        S * True  # bool is not a size
    with pytest.raises(ValueError, match="identifier"):
        SymExpr.symbol("seq len")
    with pytest.raises(TypeError, match="depends on its symbols"):
        bool(S)


def test_immutable() -> None:
    with pytest.raises(AttributeError):
        S.terms = ()  # type: ignore[misc]


# -- JSON -------------------------------------------------------------------------------------------


def test_json_round_trip_over_random_expressions() -> None:
    rng = random.Random(2024)
    for _ in range(300):
        expr = build(random_tree(rng, 4))
        data = json.loads(json.dumps(expr.to_json()))
        back = SymExpr.from_json(data)
        assert back == expr and hash(back) == hash(expr)
        assert back.to_json() == expr.to_json()


@pytest.mark.parametrize(
    "expr, data",
    [
        (SymExpr.const(3), 3),
        (S, "seq"),
        (2 * B * S, {"*": [2, "batch", "seq"]}),
        (S - 1, {"+": [-1, "seq"]}),
        ((H + 1) // 2, {"//": [{"+": [1, "h"]}, 2]}),
    ],
    ids=["int", "symbol", "product", "difference", "floor-div"],
)
def test_json_form(expr: SymExpr, data: Any) -> None:
    assert expr.to_json() == data


def test_from_json_canonicalizes_any_equivalent_form() -> None:
    assert SymExpr.from_json({"+": ["seq", "seq", {"*": [-2, "seq"]}, 3]}) == SymExpr.const(3)
    assert SymExpr.from_json({"%": ["seq", 8]}) == S % 8
    assert SymExpr.from_json({"//": [{"+": [{"*": [2, "h"]}, 2]}, 4]}) == (H + 1) // 2


def _nested(depth: int) -> Any:
    data: Any = "seq"
    for _ in range(depth):
        data = {"+": [data, 1]}
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (True, r"at \$: expected an int, a symbol name"),
        (1.5, r"at \$: expected an int, a symbol name or an object .* got float"),
        (None, "got NoneType"),
        ([1, 2], "got list"),
        ("__import__('os')", "must be an identifier"),
        ("seq len", "must be an identifier"),
        ({}, "exactly one key"),
        ({"+": [1], "*": [2]}, "exactly one key"),
        ({"**": ["seq", 2]}, "unknown operator '\\*\\*'"),
        ({"+": []}, "takes a non-empty list"),
        ({"*": "seq"}, "takes a non-empty list"),
        ({"+": ["seq", 1.0]}, r"at \$\['\+'\]\[1\]: expected an int"),
        ({"//": ["seq"]}, r"takes \[expression, positive int\]"),
        ({"//": ["seq", 0]}, r"at \$\['//'\]\[1\]: the divisor must be a positive int, got int 0"),
        ({"%": ["seq", "h"]}, "the divisor must be a positive int, got str"),
        ({"//": ["seq", True]}, "the divisor must be a positive int, got bool"),
        (_nested(MAX_JSON_DEPTH + 5), "nested more than"),
        ({"+": ["seq"] * 5000}, "more than 4096 parts"),
    ],
    ids=[
        "bool",
        "float",
        "null",
        "bare-list",
        "code-string",
        "space-in-name",
        "empty-object",
        "two-keys",
        "unknown-op",
        "empty-sum",
        "sum-not-list",
        "float-inside",
        "div-arity",
        "div-zero",
        "div-by-symbol",
        "div-by-bool",
        "too-deep",
        "too-many-parts",
    ],
)
def test_from_json_refuses_malformed(data: Any, message: str) -> None:
    with pytest.raises(SymbolicFormatError, match=message):
        SymExpr.from_json(data)


def test_a_floor_division_over_a_floor_division_plus_a_polynomial_is_one_division():
    h, w = SymExpr.symbol("h"), SymExpr.symbol("w")
    twice = ((h + 1) // 2 + 1) // 2  # two stride-2 windows, as a conv net's shape inference derives them
    assert twice == (h + 3) // 4  # as torch.export writes it
    assert ((h // 3 + w + 2) // 5) == (h + 3 * w + 6) // 15
    for expr, fn in [
        (twice, lambda h, w: ((h + 1) // 2 + 1) // 2),
        ((h // 3 + w + 2) // 5, lambda h, w: (h // 3 + w + 2) // 5),
        (((h - 7) // 2 - w) // 3, lambda h, w: ((h - 7) // 2 - w) // 3),
        ((h // 2 + w // 2) // 2, lambda h, w: (h // 2 + w // 2) // 2),  # two divisions: kept nested
        ((2 * (h // 3) + 1) // 2, lambda h, w: (2 * (h // 3) + 1) // 2),
    ]:
        for hv in range(-9, 30):
            for wv in range(-4, 7):
                assert expr.bind({"h": hv, "w": wv}) == fn(hv, wv), (expr, hv, wv)
