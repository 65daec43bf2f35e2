"""fold_view_chains: a chain of reshapes, transposes, squeezes and slices becomes one `engine.strided_view`.

Why: each shape op alone may need a copy even when the chain as a whole does not. PyTorch's
`nn.MultiheadAttention` (ViT) splits its packed Q/K/V projection through reshape -> transpose -> select ->
reshape(L, B*H, d) -> transpose -> reshape(B, H, L, d): the middle reshape merges the batch axis with the
heads across a transposition, which no strides can express, so eager PyTorch (and a plan running op by op)
copies Q, K and V every layer. Yet the chain's END is just a strided window of the projection's output
(strides (L*3E, d, 3E, 1) for the query), so attention can read it in place.

How: for every value made by a view op and read by something that is not a view op, walk back to the
chain's source (the first value not made by a view op). Run the chain on an index tensor of the source
(`arange` in the source's shape) at several batch sizes; the result is a strided view of the source exactly
when `as_strided` with its per-axis strides reproduces those indices. Strides and offset are affine in the
batch (sizes are), fitted on two batch sizes and checked on all of them. A chain of one op, a chain the
strides cannot express, and graph outputs are left alone. A `split` is a view too (its parts are slices), so
the Q/K/V parts of a horizontally fused projection fold straight onto the wide GEMM's output.

Only the batch may vary: `engine.strided_view` holds each size, stride and offset as (constant, per-batch), so a
chain whose sizes or attributes name another symbol of a profile (`seq`, `h`) is left as its view ops, correct at
every size though not fused (strides polynomial in several symbols would need SymExpr attributes).

The folded view reads its source as row-major memory (a source laid out otherwise is copied first, still
correct), so chains starting at a convolution or attention output, which kernels often leave in another
memory order, stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ...ir import Graph, Node, Value, get_op
from ...ir.symbolic import SymExpr
from ...ir.types import BATCH, is_monomial, monomial
from ..tactics.views import VIEW_OPS
from ._edit import constant_data, copy_graph

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
PROBE_BATCHES = (2, 3, 1, 5, 7)  # the first two fit the affine strides, every one checks them

Step = tuple[Node, int]  # a view node and which of its outputs the chain follows
Affine = tuple[int, int]  # (constant, per-batch): a size that is constant + per-batch * batch


class _Sample(NamedTuple):
    """The chain's result at one batch size, as a view of the contiguous source."""

    batch: int
    sizes: tuple[int, ...]
    strides: list[int | None]  # None: a size-1 axis, where any stride fits
    offset: int


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


def _batch_axis(value: Value) -> tuple[int, int] | None:
    """(axis, scale) of the source's batch dimension, or None."""
    for axis, d in enumerate(value.type.shape):
        if isinstance(d, SymExpr) and is_monomial(d):
            symbol, scale = monomial(d, "fold_view_chains")
            if symbol == BATCH:
                return axis, scale
    return None


def _strided_at(source: Value, steps: list[Step], batch: int) -> tuple[_Sample, torch.Tensor] | None:
    """The chain's result at `batch` as a view of the contiguous source, and the source indices it holds; None
    when it is empty."""
    env = {BATCH: batch}
    shape = source.type.concrete_shape(env)
    t = torch.arange(torch.Size(shape).numel(), dtype=torch.int64).view(shape)
    for node, which in steps:
        constants = [constant_data(v) for v in node.inputs[1:]]  # `_chain` checked they are
        t = node.opdef.run([t, *constants], node.attrs, env, torch.device("cpu"))[which]
    if t.numel() == 0:
        return None
    flat = t.reshape(-1)
    offset = int(flat[0])
    strides: list[int | None] = []
    for axis, size in enumerate(t.shape):
        if size == 1:
            strides.append(None)  # any stride fits a size-1 axis
            continue
        step = [0] * t.dim()
        step[axis] = 1
        strides.append(int(t[tuple(step)]) - offset)
    return _Sample(batch, tuple(t.shape), strides, offset), t


def _fit(samples: list[_Sample]) -> tuple[list[Affine], Affine]:
    """Affine (constant, per-batch) pairs for the strides and offset of `samples` (one sample: nothing depends on
    the batch)."""
    first = samples[0]
    second = samples[1] if len(samples) > 1 else first._replace(batch=first.batch + 1)
    (b1, _, s1, o1), (b2, _, s2, o2) = first, second
    strides: list[Affine] = []
    for x1, x2 in zip(s1, s2):
        if x1 is None or x2 is None:
            known = x1 if x2 is None else x2
            strides.append((0 if known is None else known, 0))
            continue
        per = (x2 - x1) // (b2 - b1)
        strides.append((x1 - per * b1, per))
    per = (o2 - o1) // (b2 - b1)
    return strides, (o1 - per * b1, per)


def _affine(pair: Affine, batch: int) -> int:
    return pair[0] + pair[1] * batch


def _names_other_symbols(source: Value, steps: list[Step]) -> bool:
    """Whether the chain's sizes or attributes name a symbol other than the batch (a profile's `seq`, `h`)."""
    types = [source.type, *(v.type for node, _ in steps for v in node.outputs)]
    symbols = {s for t in types for s in t.symbols}
    symbols |= {s for node, _ in steps for a in node.attrs.values() for s in _attr_symbols(a)}
    return bool(symbols - {BATCH})


def _attr_symbols(value: object) -> set[str]:
    if isinstance(value, SymExpr):
        return set(value.free_symbols)
    if isinstance(value, (tuple, list)):
        return {s for v in value for s in _attr_symbols(v)}
    return set()


def fold(source: Value, steps: list[Step]) -> dict[str, Any] | None:
    """The attributes of one engine.strided_view equal to the chain, or None when no strides express it."""
    if _names_other_symbols(source, steps):
        # engine.strided_view's sizes, strides and offset are affine in the batch alone: under any other symbol
        # the chain stays as its view ops (each a view where PyTorch finds one, else a copy), correct at every size
        return None
    batch_from = _batch_axis(source)
    batches = PROBE_BATCHES if batch_from is not None else (1,)
    samples: list[_Sample] = []
    results: list[tuple[int, torch.Tensor]] = []
    try:
        for b in batches:
            got = _strided_at(source, steps, b)
            if got is None:
                return None
            sample, t = got
            samples.append(sample)
            results.append((b, t))
    except (RuntimeError, ValueError):
        return None
    strides, offset = _fit(samples)
    for b, t in results:
        env = {BATCH: b}
        numel = torch.Size(source.type.concrete_shape(env)).numel()
        sizes = tuple(t.shape)
        bound = [_affine(s, b) for s in strides]
        if any(s < 0 for s in bound) or _affine(offset, b) < 0:
            return None
        try:
            view = torch.arange(numel, dtype=torch.int64).as_strided(sizes, bound, _affine(offset, b))
        except RuntimeError:
            return None
        if not torch.equal(view, t):
            return None
    node, which = steps[-1]
    out = node.outputs[which].type
    # sizes as (constant, multiple of batch); `_names_other_symbols` kept every other symbol out
    if any(
        isinstance(d, SymExpr) and not (is_monomial(d) and monomial(d, "fold_view_chains")[0] == BATCH)
        for d in out.shape
    ):
        return None
    shape = tuple((0, monomial(d, "fold_view_chains")[1]) if isinstance(d, SymExpr) else (int(d), 0) for d in out.shape)
    return {
        "shape": shape,
        "strides": tuple(tuple(s) for s in strides),
        "offset": tuple(offset),
        "batch_from": batch_from,
    }


def fold_view_chains(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    strided_view = get_op("engine.strided_view")
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
            if attrs is None or strided_view.infer_types([chain[0].type], strided_view.normalize_attrs(attrs)) != [
                end.type
            ]:
                continue
            view = graph.add_node("engine.strided_view", [chain[0]], attrs, name=f"{end.name}.view", after=node)
            graph.replace_all_uses(end, view.output, skip=[u for u in users if u.op in FOLDABLE])
            folded += 1
    ctx.count(NAME, folded)
    return graph
