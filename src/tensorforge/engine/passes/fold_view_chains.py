"""fold_view_chains: a chain of reshapes, transposes, squeezes and slices becomes one `engine.strided_view`.

Why: each shape op alone may need a copy even when the chain as a whole does not. PyTorch's
`nn.MultiheadAttention` (ViT) splits its packed Q/K/V projection through reshape -> transpose -> select ->
reshape(L, B*H, d) -> transpose -> reshape(B, H, L, d): the middle reshape merges the batch axis with the
heads across a transposition, which no strides can express, so eager PyTorch (and a plan running op by op)
copies Q, K and V every layer. Yet the chain's END is just a strided window of the projection's output
(strides (L*3E, d, 3E, 1) for the query), so attention can read it in place. A transformer over a dynamic
`seq` is the same: its head split `[batch, seq, 768] -> [batch, seq, 12, 64] -> [batch, 12, seq, 64]` is the
view with strides (768*seq, 64, 768, 1) of the projection, whatever `seq` is.

How: for every value made by a view op and read by something that is not a view op, walk back to the
chain's source (the first value not made by a view op). Starting from the source read as contiguous memory
(strides the suffix products of its sizes, which are ints or `SymExpr`s), each op maps the layout to its
result's (`_Layout`: each axis a mixed-radix number over (size, stride) digits): a transpose permutes the
axes, a slice adds begin*stride to the offset and multiplies the stride by its step, a split's part starts
after the parts before it, a broadcast gives new axes stride 0, and a reshape (squeeze, expand_dims, flatten)
refills the axes with the same digits in row-major order, splitting a digit where an axis ends inside it. An
axis merged across a transposition has several digits and no stride; where a later reshape splits it again
the chain's end is still a view. Every step is exact in the symbols, so one plan's view is right at every size
of its profile; a chain whose end has an axis without a stride (or that slices such an axis inside a digit)
stays as its view ops. The folded view is then checked against the chain run on an index tensor of the
source, at each symbol in turn at several sizes and at all of them distinct (`PROBE_SIZES`). A chain of one
op, a chain the strides cannot express, and graph outputs are left alone. A `split` is a view too (its parts
are slices), so the Q/K/V parts of a horizontally fused projection fold straight onto the wide GEMM's output.

`engine.strided_view` holds each size, stride and offset as (constant, per-batch), the batch read from its
input; where the chain depends on other symbols the parts are `SymExpr`s in them, bound by each run's sizes
(a chain over the batch alone has int parts only).

The folded view reads its source as row-major memory (a source laid out otherwise is copied first, still
correct), so chains starting at a convolution or attention output, which kernels often leave in another
memory order, stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ...ir import Graph, Node, Value, copy_graph, get_op
from ...ir.symbolic import SymExpr
from ...ir.types import BATCH, Dim, TensorType, as_dim, is_monomial, monomial
from ..tactics.views import VIEW_OPS
from ._edit import constant_data

if TYPE_CHECKING:
    from . import PassContext

NAME = "fold_view_chains"
FOLDABLE = frozenset(VIEW_OPS) - {"layout_transform"}  # ops that only re-describe memory (a split: slices)
# producers whose result may sit in memory in another order than the IR's row-major one (cuDNN answers
# channels-last, attention kernels answer [batch, seq, heads, dim]): the folded view would need a copy of
# the source first, while PyTorch's own view ops often find a view of what is there
PERMUTED_PRODUCERS = frozenset(
    {"engine.conv", "nn.conv1d", "nn.conv2d", "nn.conv3d", "nn.scaled_dot_product_attention"}
)
# Each symbol in turn takes these sizes (the others at the first), then every symbol a distinct one of
# DISTINCT_SIZES: the folded view must equal the chain at each (a product of two symbols shows only there).
PROBE_SIZES = (2, 3, 1, 5, 7)
DISTINCT_SIZES = (3, 5, 7, 11, 13, 17, 19, 23)
# Sizes at which a reshape's axes are grouped (the grouping does not depend on the sizes; large primes keep a
# symbol from equalling a constant by chance, and every grouping is then checked symbolically)
GROUPING_SIZES = (1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049)

Step = tuple[Node, int]  # a view node and which of its outputs the chain follows
Affine = tuple[Dim, Dim]  # (constant, per-batch): a size that is constant + per-batch * batch


Sub = tuple[Dim, SymExpr]  # (size, stride): one digit of an axis's index and how far it moves in the source


@dataclass(frozen=True)
class _Layout:
    """The chain so far as a map from its indices to elements of the contiguous source. Each axis is a
    mixed-radix number over sub-axes (outer first, none of size 1; an axis of size 1 has none): element
    (i0, i1, ...) is source element offset + the sum over every axis's digits of digit * stride. An axis of one
    sub-axis is a strided axis; a reshape that merges axes not adjacent in memory makes one of several, which no
    stride says, but a later reshape may split it again (nn.MultiheadAttention's heads do)."""

    axes: tuple[tuple[Sub, ...], ...]
    offset: SymExpr

    @staticmethod
    def contiguous(shape: Sequence[Dim]) -> _Layout:
        axes: list[tuple[Sub, ...]] = []
        step = SymExpr.const(1)
        for size in reversed(shape):
            axes.append(_axis(size, step))
            step = step * SymExpr.from_dim(size)
        return _Layout(tuple(reversed(axes)), SymExpr.const(0))


def _axis(size: Dim, stride: SymExpr) -> tuple[Sub, ...]:
    return () if size == 1 else ((size, stride),)


def _merged(subs: Sequence[Sub]) -> tuple[Sub, ...]:
    """`subs` with each run of sub-axes adjacent in memory (outer stride = inner stride * inner size) as one."""
    out: list[Sub] = []
    for size, stride in subs:
        if out and out[-1][1] == stride * SymExpr.from_dim(size):
            outer_size, _ = out.pop()
            size = as_dim(SymExpr.from_dim(outer_size) * SymExpr.from_dim(size))
        out.append((size, stride))
    return tuple(out)


def _stride(subs: Sequence[Sub]) -> SymExpr | None:
    """The stride of an axis made of `subs`, or None where it has none (digits not adjacent in memory)."""
    merged = _merged(subs)
    if len(merged) > 1:
        return None
    return merged[0][1] if merged else SymExpr.const(0)  # size 1: any stride fits, 0 says so


def _chain(value: Value) -> tuple[Value, list[Step]] | None:
    """(source value, [(view node, which of its outputs)] from the source to `value`), or None when the chain
    reads a second activation or starts at a value whose memory may not be in row-major order at run time."""
    steps: list[Step] = []
    while value.producer is not None and value.producer.op in FOLDABLE:
        node = value.producer
        if any(v.data is None for v in node.inputs[1:]):
            return None  # a second activation input: not a pure view of one tensor
        steps.append((node, node.outputs.index(value)))
        value = node.inputs[0]
    if value.producer is not None and value.producer.op in PERMUTED_PRODUCERS:
        return None
    return value, steps[::-1]


# -- each view op on the layout ---------------------------------------------------------------------------------
# `grouping` binds every symbol to a generic size (GROUPING_SIZES); each rule returns None where the op's result
# is not a function of the layout this representation can state.

StepRule = Callable[[_Layout, Node, int, dict[str, int]], "_Layout | None"]


def _transposed(layout: _Layout, node: Node, which: int, grouping: dict[str, int]) -> _Layout | None:
    rank = len(layout.axes)
    axes = node.attrs["axes"]
    order = [a % rank for a in axes] if axes is not None else list(reversed(range(rank)))
    return _Layout(tuple(layout.axes[a] for a in order), layout.offset)


def _slice_start(size: Dim, begin: Dim) -> SymExpr:
    """Where a slice with step > 0 starts: Python's rule (negative counts from the end, clamped to the size)."""
    if isinstance(begin, SymExpr):
        return begin
    if isinstance(size, int):
        return SymExpr.const(slice(begin, None).indices(size)[0])
    # inside a symbolic size, as the slice's type says (its size is end - begin)
    return SymExpr.from_dim(size) + begin if begin < 0 else SymExpr.const(begin)


def _window(
    layout: _Layout, axis: int, start: SymExpr, step: int, size: Dim, grouping: dict[str, int]
) -> _Layout | None:
    """`layout` with axis `axis` cut to `size` elements from `start`, every `step`-th. An axis with a stride is
    cut anywhere; one without (several sub-axes) only along its outermost digit: a contiguous window whose start
    and size are whole multiples of what the inner digits count."""
    subs = _merged(layout.axes[axis])
    axes = list(layout.axes)
    if len(subs) <= 1:
        stride = subs[0][1] if subs else SymExpr.const(0)
        axes[axis] = _axis(size, stride * step)
        return _Layout(tuple(axes), layout.offset + start * stride)
    inner = _product(s for s, _ in subs[1:])
    first = _quotient(start, inner, grouping)
    count = _quotient(SymExpr.from_dim(size), inner, grouping)
    if step != 1 or first is None or count is None:
        return None
    axes[axis] = (*_axis(count, subs[0][1]), *subs[1:])
    return _Layout(tuple(axes), layout.offset + SymExpr.from_dim(first) * subs[0][1])


def _sliced(layout: _Layout, node: Node, which: int, grouping: dict[str, int]) -> _Layout | None:
    begin = node.attrs["begin"]
    rank = len(layout.axes)
    axes = range(len(begin)) if node.attrs["axes"] is None else node.attrs["axes"]
    steps = (1,) * len(begin) if node.attrs["strides"] is None else node.attrs["strides"]
    shape = node.outputs[which].type.shape
    before = node.inputs[0].type.shape
    result: _Layout | None = layout
    for axis, first, step in zip(axes, begin, steps):
        if not isinstance(step, int) or step <= 0:
            return None  # a backward slice gathers (no non-negative strides say it)
        axis %= rank
        start = _slice_start(before[axis], first)
        result = _window(result, axis, start, step, shape[axis], grouping) if result is not None else None
    return result


def _split_part(layout: _Layout, node: Node, which: int, grouping: dict[str, int]) -> _Layout | None:
    """Part `which` starts where the parts before it end (the parts tile the axis, in order)."""
    axis = node.attrs["axis"] % len(layout.axes)
    start = sum((SymExpr.from_dim(v.type.shape[axis]) for v in node.outputs[:which]), SymExpr.const(0))
    return _window(layout, axis, start, 1, node.outputs[which].type.shape[axis], grouping)


def _broadcast(layout: _Layout, node: Node, which: int, grouping: dict[str, int]) -> _Layout | None:
    """New leading axes and axes grown from size 1 repeat the same elements: stride 0."""
    shape = node.outputs[which].type.shape
    lead = len(shape) - len(layout.axes)
    zero = SymExpr.const(0)
    grown = (_axis(want, zero) if not subs else subs for subs, want in zip(layout.axes, shape[lead:]))
    return _Layout(tuple(_axis(size, zero) for size in shape[:lead]) + tuple(grown), layout.offset)


def _reshaped(layout: _Layout, node: Node, which: int, grouping: dict[str, int]) -> _Layout | None:
    """The node's output shape over the same digits: read in row-major order, the sub-axes fill the new axes
    one after another; a sub-axis that straddles two new axes is split in two (outer part: the stride times the
    inner part's size). Which sub-axes fill which axis is found at the grouping sizes and checked exactly."""
    shape = node.outputs[which].type.shape
    if 0 in shape:
        return None
    flat = [sub for subs in layout.axes for sub in subs]
    axes: list[tuple[Sub, ...]] = []
    for size in shape:
        taken: list[Sub] = []
        have, want = 1, _at(size, grouping)
        while have != want:
            if not flat or want % have:
                return None
            sub_size, sub_stride = flat.pop(0)
            digits = _at(sub_size, grouping)
            if want % (have * digits) == 0:
                taken.append((sub_size, sub_stride))
                have *= digits
                continue
            if digits % (want // have):
                return None
            outer = _quotient(SymExpr.from_dim(size), _product(s for s, _ in taken), grouping)
            inner = None if outer is None else _quotient(SymExpr.from_dim(sub_size), SymExpr.from_dim(outer), grouping)
            if outer is None or inner is None:
                return None
            taken.append((outer, sub_stride * SymExpr.from_dim(inner)))
            flat.insert(0, (inner, sub_stride))
            have = want
        if _product(s for s, _ in taken) != SymExpr.from_dim(size):
            return None  # equal at the grouping sizes only
        axes.append(tuple(taken))
    return _Layout(tuple(axes), layout.offset) if not flat else None


def _at(size: Dim, env: dict[str, int]) -> int:
    return size.bind(env) if isinstance(size, SymExpr) else size


def _product(sizes: Iterable[Dim]) -> SymExpr:
    total = SymExpr.const(1)
    for size in sizes:
        total = total * SymExpr.from_dim(size)
    return total


def _quotient(numerator: SymExpr, denominator: SymExpr, grouping: dict[str, int]) -> Dim | None:
    """numerator / denominator where that is exact for every size: by a constant, term by term by a single
    term (`12*seq / seq`), or a constant ratio (`12*seq - 12` over `seq - 1`); None otherwise."""
    if denominator.is_constant:
        d = denominator.constant
        quotient = numerator // d if d > 0 else None
    elif len(denominator.terms) == 1:
        quotient = _termwise(numerator, denominator)
    else:
        quotient = SymExpr.const(numerator.bind(grouping) // max(denominator.bind(grouping), 1))
    if quotient is None or quotient * denominator != numerator:
        return None
    return as_dim(quotient)


def _termwise(numerator: SymExpr, denominator: SymExpr) -> SymExpr | None:
    """numerator / c*m (one term) when c divides every coefficient and m every monomial of the numerator."""
    ((den_mono, den_coeff),) = denominator.terms
    den_powers = dict(den_mono)
    total = SymExpr.const(0)
    for mono, coeff in numerator.terms:
        powers = dict(mono)
        if den_coeff <= 0 or coeff % den_coeff or any(powers.get(a, 0) < p for a, p in den_powers.items()):
            return None
        term = SymExpr.const(coeff // den_coeff)
        for atom, power in mono:
            factor = SymExpr.symbol(atom) if isinstance(atom, str) else atom.numerator // atom.divisor
            for _ in range(power - den_powers.get(atom, 0)):
                term = term * factor
        total = total + term
    return total


STEP_RULES: dict[str, StepRule] = {
    "transpose": _transposed,
    "strided_slice": _sliced,
    "split": _split_part,
    "broadcast_to": _broadcast,
    "reshape": _reshaped,
    "squeeze": _reshaped,
    "expand_dims": _reshaped,
    "nn.batch_flatten": _reshaped,
}  # engine.strided_view itself is not here: a chain through a view already folded stays as it is


def _derive(source: Value, steps: list[Step]) -> tuple[list[SymExpr], SymExpr] | None:
    """The chain as (strides, offset) of a strided view of its contiguous source, or None where no strides
    express it."""
    symbols = sorted(_symbols(source, steps))
    if len(symbols) > len(GROUPING_SIZES):
        return None
    grouping = dict(zip(symbols, GROUPING_SIZES))
    layout: _Layout | None = _Layout.contiguous(source.type.shape)
    for node, which in steps:
        rule = STEP_RULES.get(node.op)
        layout = rule(layout, node, which, grouping) if rule is not None and layout is not None else None
    if layout is None:
        return None
    strides = [_stride(subs) for subs in layout.axes]
    if any(s is None for s in strides):
        return None
    return [s for s in strides if s is not None], layout.offset


def _symbols(source: Value, steps: list[Step]) -> set[str]:
    """Every symbol the chain's sizes or attributes name (a slice may end at a `seq` its source does not have)."""
    types = [source.type, *(v.type for node, _ in steps for v in node.outputs)]
    found = {s for t in types for s in t.symbols}
    return found | {s for node, _ in steps for a in node.attrs.values() for s in _attr_symbols(a)}


def _attr_symbols(value: object) -> set[str]:
    if isinstance(value, SymExpr):
        return set(value.free_symbols)
    if isinstance(value, (tuple, list)):
        return {s for v in value for s in _attr_symbols(v)}
    return set()


# -- the attributes -------------------------------------------------------------------------------------------


def _batch_axis(value: Value) -> tuple[int, int] | None:
    """(axis, scale) of the source's batch dimension, or None."""
    for axis, d in enumerate(value.type.shape):
        if isinstance(d, SymExpr) and is_monomial(d):
            symbol, scale = monomial(d, "fold_view_chains")
            if symbol == BATCH:
                return axis, scale
    return None


def _affine(expr: Dim, per_batch: bool) -> Affine | None:
    """`expr` as (constant, per-batch) with neither part naming the batch, or None where it is not affine in it
    (`batch*batch`); without a batch axis to read it from, the batch is one more symbol in the constant."""
    expr = SymExpr.from_dim(expr)
    if not per_batch:
        return as_dim(expr), 0
    constant = expr.subs({BATCH: 0})
    slope = expr.subs({BATCH: 1}) - constant
    if constant + slope * SymExpr.symbol(BATCH) != expr:
        return None
    return as_dim(constant), as_dim(slope)


def fold(source: Value, steps: list[Step]) -> dict[str, Any] | None:
    """The attributes of one engine.strided_view equal to the chain, or None when no strides express it."""
    derived = _derive(source, steps)
    if derived is None:
        return None
    strides, offset = derived
    node, which = steps[-1]
    sizes = node.outputs[which].type.shape
    batch_from = _batch_axis(source)
    parts = [_affine(e, batch_from is not None) for e in (*sizes, *strides, offset)]
    if any(p is None for p in parts):
        return None
    rank = len(sizes)
    attrs = {
        "shape": tuple(parts[:rank]),
        "strides": tuple(parts[rank : 2 * rank]),
        "offset": parts[-1],
        "batch_from": batch_from,
    }
    symbols = sorted(_symbols(source, steps))
    if not all(_matches(source, steps, attrs, env) for env in _probe_envs(symbols)):
        return None
    return attrs


def _probe_envs(symbols: list[str]) -> list[dict[str, int]]:
    envs: list[dict[str, int]] = []
    for symbol in symbols:
        for size in PROBE_SIZES:
            envs.append({**dict.fromkeys(symbols, PROBE_SIZES[0]), symbol: size})
    envs.append(dict(zip(symbols, DISTINCT_SIZES)))
    unique: list[dict[str, int]] = []
    for env in envs:
        if env not in unique:
            unique.append(env)
    return unique


def _matches(source: Value, steps: list[Step], attrs: dict[str, Any], env: dict[str, int]) -> bool:
    """Whether the folded view holds the same source elements as the chain at the sizes `env`."""
    shape = source.type.concrete_shape(env)
    index = torch.arange(torch.Size(shape).numel(), dtype=torch.int64).view(shape)
    cpu = torch.device("cpu")
    try:
        t = index
        for node, which in steps:
            constants = [constant_data(v) for v in node.inputs[1:]]  # `_chain` checked they are
            t = node.opdef.run([t, *constants], node.attrs, env, cpu)[which]
        (view,) = get_op("engine.strided_view").run([index], attrs, env, cpu)
    except (RuntimeError, ValueError):
        return False
    return view.shape == t.shape and torch.equal(view, t)


def _folds_to(attrs: dict[str, Any], source: TensorType, want: TensorType) -> bool:
    strided_view = get_op("engine.strided_view")
    return strided_view.infer_types([source], strided_view.normalize_attrs(attrs)) == [want]


def fold_view_chains(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    folded = 0
    for node in graph.nodes:
        if node.op not in FOLDABLE:
            continue
        for end in node.outputs:
            users = graph.users_of(end)
            if graph.is_output(end) or not users or all(u.op in FOLDABLE for u in users):
                continue
            chain = _chain(end)
            if chain is None or len(chain[1]) < 2:
                continue
            attrs = fold(*chain)
            if attrs is None or not _folds_to(attrs, chain[0].type, end.type):
                continue
            view = graph.add_node("engine.strided_view", [chain[0]], attrs, name=f"{end.name}.view", after=node)
            graph.replace_all_uses(end, view.output, skip=[u for u in users if u.op in FOLDABLE])
            folded += 1
    ctx.count(NAME, folded)
    return graph
