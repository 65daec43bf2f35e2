"""Control flow: an `If` whose condition is known at import becomes the nodes of its taken branch.

Exported models test shapes (`If(Equal(Gather(Shape(x), 0), 1))` to squeeze an axis only when it is 1); once
the input sizes are fixed such a condition is a constant, and the branch it selects is imported in place of
the If, so its nodes convert like any other. An If whose condition is computed from run-time data raises
Unsupported: the importer then runs it through onnxruntime as one opaque node, typing its outputs from its
branches (see `_branch_types` in `frontends/onnx.py`). `Loop` and `Scan` have no converter: they run through
onnxruntime too.
"""

from __future__ import annotations

from .registry import Unsupported, onnx_converter


@onnx_converter(
    "If",
    since=(11, 13, 16, 19, 21, 23, 24, 25),
    note="a condition known at import (constants, shapes); else one onnxruntime node",
)
def if_(ctx, *, cond, then_branch, else_branch):
    if not cond.is_known:
        raise Unsupported("its condition is computed at run time: it runs through onnxruntime as one node")
    if cond.const is None:
        raise Unsupported("its condition depends on the batch size: it runs through onnxruntime as one node")
    if cond.const.numel() != 1:
        raise Unsupported(f"its condition must hold one element, got shape {tuple(cond.const.shape)}")
    return tuple(ctx.import_subgraph(then_branch if bool(cond.const.reshape(-1)[0]) else else_branch))
