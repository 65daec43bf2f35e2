"""Matrix products: Gemm, MatMul and Einsum.

A product with a constant 2-d right operand is a linear layer: it becomes `nn.dense` with the weight
transposed once, at import (the engine then sees the layer it has its best tactics for, as with the
PyTorch frontend's `aten.linear`), and a 1-d constant bias added to it becomes `nn.bias_add`.

Einsum has no IR op of its own: it is lowered to the transposes, reshapes, matmuls, multiplies and sums it stands
for (the PyTorch frontend never sees one: torch.export decomposes `torch.einsum` into those already).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from ...ir.types import FLOAT_DTYPES, Dim, as_dim, bind_dim
from .context import Operand, product, same_dtype
from .registry import Unsupported, onnx_converter


def _product(ctx, a, b, b_transposed: bool):
    """a @ b (b_transposed: a @ b.T) as nn.dense where b is a constant float matrix."""
    if b.rank == 2 and a.dtype in FLOAT_DTYPES:
        if b_transposed:
            return ctx.emit("nn.dense", a, b)
        if b.is_known:
            return ctx.emit("nn.dense", a, ctx.emit("transpose", b, axes=(1, 0)))  # folds: b is known
    if b_transposed:
        b = ctx.emit("transpose", b, axes=(1, 0))
    return ctx.emit("matmul", a, b)


def _add_bias(ctx, out, bias):
    if bias.rank == 1 and bias.shape[0] == out.shape[-1] and out.rank >= 1:
        return ctx.emit("nn.bias_add", out, bias, axis=-1)
    return ctx.emit("add", out, bias)


@onnx_converter("Gemm", since=(11, 13))
def gemm(ctx, *, A, B, C=None, alpha, beta, transA, transB):
    a = ctx.emit("transpose", A, axes=(1, 0)) if transA else A
    out = _product(ctx, a, B, bool(transB))
    if alpha != 1:
        out = ctx.emit("multiply", out, ctx.const(float(alpha), dtype=out.dtype))
    if C is None or beta == 0:
        return out
    bias = C if beta == 1 else ctx.emit("multiply", C, ctx.const(float(beta), dtype=C.dtype))
    return _add_bias(ctx, out, bias)


@onnx_converter("MatMul", since=(9, 13))
def matmul(ctx, *, A, B):
    return _product(ctx, A, B, b_transposed=False)


# -- Einsum ----------------------------------------------------------------------------------------
#
# The inputs are combined one pair at a time, left to right, as torch.einsum does by default: a label repeated
# within one input reads its diagonal; a label nothing later needs is summed out as early as possible; the labels
# two inputs share and nothing later needs are contracted by one matmul, the other labels of each input lined up
# as its batch, row or column axes; a pair with nothing to contract is a broadcast multiply. The result is summed
# and transposed to the output's labels.

Term = tuple[Operand, tuple[str, ...]]  # an operand and the label of each of its axes


def _bad_equation(equation: str, why: str) -> Unsupported:
    return Unsupported(f"Einsum equation {equation!r}: {why}")


def _split_term(equation: str, term: str) -> tuple[str, bool, str]:
    """The letters before and after a term's ellipsis, and whether it has one."""
    head, dots, tail = term.partition("...")
    if not all(c.isascii() and c.isalpha() for c in head + tail):
        raise _bad_equation(equation, f"the term {term!r} holds other than letters and at most one ellipsis")
    return head, bool(dots), tail


def parse_einsum(equation: str, ranks: Sequence[int | None]) -> tuple[list[tuple[str, ...]], tuple[str, ...]]:
    """The labels of each input's axes and of the output's, by ONNX's rules: spaces are ignored; without `->` the
    output is the ellipsis, then the labels that occur once, sorted (upper case first). The ellipsis becomes the
    labels '.0', '.1', ..., aligned from the right across inputs as broadcasting aligns them. A rank of None (an
    input of unknown type) is taken to be the term's own. Unsupported, naming the equation, when it is malformed."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = [_split_term(equation, term) for term in lhs.split(",")]
    if len(terms) != len(ranks):
        raise _bad_equation(equation, f"{len(terms)} input terms for {len(ranks)} inputs")
    widths = []
    for (head, dots, tail), rank in zip(terms, ranks):
        letters = len(head) + len(tail)
        width = rank - letters if rank is not None and dots else 0
        if rank is not None and (width < 0 or (not dots and rank != letters)):
            term = head + "..." * dots + tail
            raise _bad_equation(equation, f"the term {term!r} does not fit an input of rank {rank}")
        widths.append(width)
    ellipsis = max(widths, default=0)

    def ellipsis_labels(width: int) -> tuple[str, ...]:
        return tuple(f".{i}" for i in range(ellipsis - width, ellipsis))

    inputs = [
        tuple(head) + (ellipsis_labels(width) if dots else ()) + tuple(tail)
        for (head, dots, tail), width in zip(terms, widths)
    ]
    if arrow:
        head, dots, tail = _split_term(equation, rhs)
        output = tuple(head) + (ellipsis_labels(ellipsis) if dots else ()) + tuple(tail)
    else:
        counts = collections.Counter(label for labels in inputs for label in labels if not label.startswith("."))
        output = ellipsis_labels(ellipsis) + tuple(sorted(label for label, n in counts.items() if n == 1))
    if len(set(output)) != len(output):
        raise _bad_equation(equation, "a label repeats in the output")
    unknown = set(output).difference(*inputs)
    if unknown:
        raise _bad_equation(equation, f"the output label(s) {sorted(unknown)} name no input axis")
    return inputs, output


def lower_einsum(ctx, equation: str, operands: Sequence[Operand]) -> Operand:
    """Einsum in IR ops: diagonals, sums, transposes, reshapes, matmuls and broadcast multiplies."""
    inputs, output = parse_einsum(equation, [x.rank for x in operands])
    terms = [_diagonal(ctx, equation, x, labels) for x, labels in zip(operands, inputs)]
    terms = _unbroadcast(ctx, equation, terms)
    result = terms[0]
    for i in range(1, len(terms)):
        needed = set(output).union(*(labels for _, labels in terms[i + 1 :]))
        result = _contract(ctx, result, terms[i], needed, output)
    x, labels = _sum_out(ctx, result, set(output))
    return _permute(ctx, x, labels, output)


def _permute(ctx, x: Operand, labels: Sequence[str], order: Sequence[str]) -> Operand:
    """x with its axes (labelled `labels`) in the order `order`."""
    perm = tuple(labels.index(label) for label in order)
    return x if perm == tuple(range(len(perm))) else ctx.emit("transpose", x, axes=perm)


def _reshape(ctx, x: Operand, shape: Sequence[Dim]) -> Operand:
    shape = tuple(as_dim(d) for d in shape)
    return x if shape == tuple(x.shape) else ctx.emit("reshape", x, newshape=shape)


def _diagonal(ctx, equation: str, x: Operand, labels: tuple[str, ...]) -> Term:
    """A label repeated within one input reads that input's diagonal: the r axes it labels, moved next to its first
    and merged into one of n**r elements, read with the stride 1 + n + ... + n**(r-1)."""
    while len(set(labels)) != len(labels):
        label = next(label for label in labels if labels.count(label) > 1)
        repeats = [i for i, other in enumerate(labels) if other == label]
        sizes = [x.shape[i] for i in repeats]
        n = sizes[0]
        if not isinstance(n, int) or any(d != n for d in sizes):
            raise _bad_equation(
                equation,
                f"the repeated label {label!r} spans the sizes [{', '.join(map(str, sizes))}]; a diagonal needs one "
                "size known at import",
            )
        before = [i for i in range(repeats[0]) if labels[i] != label]
        after = [i for i in range(repeats[0], len(labels)) if labels[i] != label]
        if before + repeats + after != list(range(len(labels))):
            x = ctx.emit("transpose", x, axes=tuple(before + repeats + after))
        r, at = len(repeats), len(before)
        x = _reshape(ctx, x, list(x.shape[:at]) + [n**r] + list(x.shape[at + r :]))
        x = ctx.emit("strided_slice", x, begin=(0,), end=(n**r,), strides=(sum(n**i for i in range(r)),), axes=(at,))
        labels = tuple(labels[i] for i in before) + (label,) + tuple(labels[i] for i in after)
    return x, labels


def _unbroadcast(ctx, equation: str, terms: list[Term]) -> list[Term]:
    """A label of size 1 in one input and n in another broadcasts: the axis of size 1 is dropped, so that every
    label left has one size."""
    sizes: dict[str, set] = collections.defaultdict(set)
    for x, labels in terms:
        for label, d in zip(labels, x.shape):
            sizes[label].add(d)
    for label, found in sizes.items():
        if len(found - {1}) > 1:
            raise _bad_equation(equation, f"the label {label!r} spans the sizes [{', '.join(sorted(map(str, found)))}]")
    out = []
    for x, labels in terms:
        keep = [i for i, (label, d) in enumerate(zip(labels, x.shape)) if d != 1 or sizes[label] == {1}]
        out.append((_reshape(ctx, x, [x.shape[i] for i in keep]), tuple(labels[i] for i in keep)))
    return out


def _sum_out(ctx, term: Term, keep: set[str]) -> Term:
    """The term summed over the labels not in `keep`."""
    x, labels = term
    axes = tuple(i for i, label in enumerate(labels) if label not in keep)
    if not axes:
        return term
    summed = same_dtype(ctx, ctx.emit("sum", x, axis=axes, keepdims=False), x)  # sum promotes small integers
    return summed, tuple(label for label in labels if label in keep)


def _contract(ctx, a: Term, b: Term, needed: set[str], output: Sequence[str]) -> Term:
    """The product of two terms summed over the labels they share that are not `needed`: one matmul, or a broadcast
    multiply when they share no label to sum over."""
    a = _sum_out(ctx, a, needed | set(b[1]))
    b = _sum_out(ctx, b, needed | set(a[1]))
    contracted = [label for label in a[1] if label in b[1] and label not in needed]
    if not contracted:
        return _multiply(ctx, a, b)
    if set(a[1]) == set(b[1]):  # nothing but batch and contracted axes: a matmul would have rows and columns of 1
        return _sum_out(ctx, _multiply(ctx, a, b), needed)
    plans = [plan for first, second in ((a, b), (b, a)) for plan in _matmul_plans(first, second, contracted)]
    env = ctx.probe_env(0)
    return _matmul(ctx, *min(plans, key=lambda plan: _copied(env, *plan, output=output)))


# a matmul plan: (left term, right term, batch labels, row labels, contracted labels); the left term is laid out
# (batch..., rows, contracted), the right one (its batch labels..., contracted, its own labels)
MatmulPlan = tuple[Term, Term, list[str], list[str], list[str]]


def _matmul_plans(left: Term, right: Term, contracted: list[str]) -> list[MatmulPlan]:
    """Two layouts of left's other labels: in left's own order, those before the last label shared with right as
    batch axes (where right broadcasts) and those after as rows; or every label right lacks a row."""
    others = [c for c in left[1] if c not in contracted]
    last_shared = max((i for i, c in enumerate(others) if c in right[1]), default=-1)
    own_order = (others[: last_shared + 1], others[last_shared + 1 :])
    shared_batch = ([c for c in others if c in right[1]], [c for c in others if c not in right[1]])
    layouts = [own_order] if own_order == shared_batch else [own_order, shared_batch]
    return [(left, right, batch, rows, contracted) for batch, rows in layouts]


def _copied(env, left: Term, right: Term, batch: list[str], rows: list[str], contracted: list[str], *, output) -> int:
    """The elements a plan copies (sizes bound at `env`): a run-time operand transposed, the right operand
    broadcast over batch axes it lacks (the matmul then copies it once per batch element), the result transposed
    to the output's order."""
    (x, left_labels), (y, right_labels) = left, right
    size = {c: bind_dim(d, env) for c, d in list(zip(left_labels, x.shape)) + list(zip(right_labels, y.shape))}
    columns = [c for c in right_labels if c not in left_labels]

    def volume(labels) -> int:
        return int(product([size[c] for c in labels]))

    cost = 0
    if not x.is_known and batch + rows + contracted != list(left_labels):
        cost += volume(left_labels)
    if not y.is_known and [c for c in batch if c in right_labels] + contracted + columns != list(right_labels):
        cost += volume(right_labels)
    if any(c in right_labels for c in batch) and any(c not in right_labels for c in batch):
        cost += volume(batch + contracted + columns)
    result = batch + rows + columns
    if result != [c for c in output if c in result] + [c for c in result if c not in output]:
        cost += volume(result)
    return cost


def _matmul(ctx, left: Term, right: Term, batch: list[str], rows: list[str], contracted: list[str]) -> Term:
    """One matmul of left, laid out (batch..., rows, contracted), by right, laid out (batch..., contracted, columns);
    a right operand without batch axes takes left's batch and row axes as they are (the matmul folds them)."""
    (x, left_labels), (y, right_labels) = left, right
    size = dict(zip(left_labels, x.shape)) | dict(zip(right_labels, y.shape))
    columns = [c for c in right_labels if c not in left_labels]
    y_batch = [size[c] if c in right_labels else 1 for c in batch]
    while y_batch and y_batch[0] == 1:  # leading axes of 1 broadcast without being written
        y_batch.pop(0)
    merged_rows = [product([size[c] for c in rows])] if y_batch else [size[c] for c in rows]
    x = _permute(ctx, x, left_labels, batch + rows + contracted)
    x = _reshape(ctx, x, [size[c] for c in batch] + merged_rows + [product([size[c] for c in contracted])])
    y = _permute(ctx, y, right_labels, [c for c in batch if c in right_labels] + contracted + columns)
    y = _reshape(ctx, y, y_batch + [product([size[c] for c in contracted]), product([size[c] for c in columns])])
    labels = batch + rows + columns
    return _reshape(ctx, _product(ctx, x, y, b_transposed=False), [size[c] for c in labels]), tuple(labels)


def _multiply(ctx, a: Term, b: Term) -> Term:
    """The broadcast product of two terms that share no label to sum over: a's labels, then b's others."""
    (x, la), (y, lb) = a, b
    extra = [c for c in lb if c not in la]
    labels = list(la) + extra
    size = dict(zip(la, x.shape)) | dict(zip(lb, y.shape))
    x = _reshape(ctx, x, list(x.shape) + [1] * len(extra))
    y = _permute(ctx, y, lb, [c for c in labels if c in lb])
    y_shape = [size[c] if c in lb else 1 for c in labels]
    while y_shape and y_shape[0] == 1:  # leading axes of 1 broadcast without being written
        y_shape.pop(0)
    y = _reshape(ctx, y, y_shape)
    return ctx.emit("multiply", x, y), tuple(labels)


def _einsum_check(*, equation, Inputs, **_):
    """Any equation: ellipsis, broadcasting, sums, diagonals and any number of inputs."""
    ranks = [x.type.rank if x is not None and x.type is not None else None for x in Inputs]
    try:
        parse_einsum(equation, ranks)
    except Unsupported as exc:
        return str(exc)
    return None


@onnx_converter(
    "Einsum", since=(12, 28), check=_einsum_check, note="a repeated label (a diagonal) needs its size known at import"
)
def einsum(ctx, *, Inputs, equation):
    return lower_einsum(ctx, equation, Inputs)
