"""Implicit batch mode: ops that change, reduce or mix the batch dimension stay out; explicit mode takes them.

Every case runs in both modes: in implicit batch mode the node named "target" must stay in PyTorch with the
expected reason (or go to the engine, for the cases that keep the batch intact); with
use_implicit_batch=False it must always go to the engine. Numerics are checked in both modes.
"""

from __future__ import annotations

import pytest
import torch

from partition_helpers import B, f32, one_op_graph, partition_checked, region_of
from tensorforge.ir import Graph, Sym, TensorType

I64 = lambda *shape: TensorType("int64", shape)  # noqa: E731


def _take_from_table():
    """An embedding lookup: take from a constant table along its axis 0 is per sample."""
    g = Graph()
    ids = g.add_input("ids", I64(B, 5))
    table = g.add_constant(torch.randn(7, 4), "table")
    g.set_outputs([g.call("take", table, ids, axis=0, name="target")])
    return g


def _static_transpose_feeding_matmul():
    """transpose of a constant moves its axis 0, but a constant has no batch: it goes to the engine."""
    g = Graph()
    x = g.add_input("x", f32(B, 6))
    w = g.call("transpose", g.add_constant(torch.randn(5, 6)), axes=(1, 0), name="target")
    g.set_outputs([g.call("matmul", x, w)])
    return g


def _sdpa_with_broadcast_mask():
    g = Graph()
    q = g.add_input("q", f32(B, 2, 5, 4))
    mask = g.add_input("mask", f32(1, 1, 5, 5))
    g.set_outputs([g.call("nn.scaled_dot_product_attention", q, q, q, mask, name="target")])
    return g


ACROSS = "axis 0, the batch dimension (implicit batch mode"
LEADING = "its activations differ in the leading (batch) dimension"
IDX = torch.tensor([2, 0])

# (id, graph builder, expected reason fragment in implicit batch mode, None = offloaded)
CASES = [
    # reductions
    ("sum-all-axes", lambda: one_op_graph("sum", f32(B, 4, 6)), "sum over all axes (axis=None) includes " + ACROSS),
    ("sum-axis0", lambda: one_op_graph("sum", f32(B, 4, 6), axis=(0,)), "sum acts on " + ACROSS),
    ("mean-axis-neg3", lambda: one_op_graph("mean", f32(B, 4, 6), axis=(-3,), keepdims=True), "mean acts on"),
    ("max-axes-0-2", lambda: one_op_graph("max", f32(B, 4, 6), axis=(0, 2)), "max acts on"),
    ("variance-axis0", lambda: one_op_graph("variance", f32(B, 4), axis=(0,)), "variance acts on"),
    ("argmax-all", lambda: one_op_graph("argmax", f32(B, 4)), "argmax over all axes"),
    ("argmin-axis0", lambda: one_op_graph("argmin", f32(B, 4), axis=0), "argmin acts on"),
    ("sum-axes-1-2", lambda: one_op_graph("sum", f32(B, 4, 6), axis=(1, 2)), None),
    ("mean-last", lambda: one_op_graph("mean", f32(B, 4, 6), axis=(-1,), keepdims=True), None),
    ("argmax-axis1", lambda: one_op_graph("argmax", f32(B, 4), axis=1), None),
    # normalizations along axis 0
    ("softmax-axis0", lambda: one_op_graph("nn.softmax", f32(B, 4), axis=0), "nn.softmax acts on " + ACROSS),
    ("log_softmax-rank1", lambda: one_op_graph("nn.log_softmax", f32(B)), "nn.log_softmax acts on"),
    (
        "layer_norm-axis0",
        lambda: one_op_graph("nn.layer_norm", f32(2, 4), consts={1: torch.rand(2, 4), 2: torch.rand(2, 4)}, axis=0),
        "nn.layer_norm acts on",
    ),
    ("softmax-last", lambda: one_op_graph("nn.softmax", f32(B, 4)), None),
    # layout
    (
        "transpose-swap-batch",
        lambda: one_op_graph("transpose", f32(B, 4, 6), axes=(1, 0, 2)),
        "transpose moves " + ACROSS,
    ),
    ("transpose-reverse", lambda: one_op_graph("transpose", f32(B, 4, 6)), "transpose moves"),
    ("transpose-batch-last", lambda: one_op_graph("transpose", f32(B, 4, 6), axes=(1, 2, -3)), "transpose moves"),
    ("transpose-inner", lambda: one_op_graph("transpose", f32(B, 4, 6), axes=(0, 2, 1)), None),
    ("roll-batch", lambda: one_op_graph("roll", f32(B, 4, 6), shift=(1, 2), axis=(0, 2)), "roll acts on " + ACROSS),
    ("roll-flattened", lambda: one_op_graph("roll", f32(B, 4, 6), shift=(3,)), "roll over all axes"),
    ("roll-inner", lambda: one_op_graph("roll", f32(B, 4, 6), shift=(-3, 2), axis=(-2, 2)), None),
    ("cumsum-batch", lambda: one_op_graph("cumsum", f32(B, 4, 6), axis=0), "cumsum acts on " + ACROSS),
    ("cumsum-batch-negative", lambda: one_op_graph("cumsum", I64(B, 5), axis=-2), "cumsum acts on " + ACROSS),
    ("cumsum-inner-negative", lambda: one_op_graph("cumsum", I64(B, 5), axis=-1, dtype="int32"), None),
    (
        "layout-NCHW-CNHW",
        lambda: one_op_graph("layout_transform", f32(B, 3, 4, 5), src_layout="NCHW", dst_layout="CNHW"),
        "layout_transform moves",
    ),
    (
        "layout-NCHW-NHWC",
        lambda: one_op_graph("layout_transform", f32(B, 3, 4, 5), src_layout="NCHW", dst_layout="NHWC"),
        None,
    ),
    # reshapes
    ("reshape-fold-batch-static", lambda: one_op_graph("reshape", f32(2, 4, 6), newshape=(8, 6)), LEADING),
    (
        "reshape-fold-batch-symbolic",
        lambda: one_op_graph("reshape", f32(B, 4, 6), newshape=(Sym("batch", 4), 6)),
        LEADING,
    ),
    ("reshape-unfold-batch", lambda: one_op_graph("reshape", f32(B, 4, 6), newshape=(4, B, 6)), LEADING),
    ("reshape-keep-batch", lambda: one_op_graph("reshape", f32(B, 4, 6), newshape=(B, 24)), None),
    ("reshape-keep-batch-static", lambda: one_op_graph("reshape", f32(2, 4, 6), newshape=(2, 3, 8)), None),
    ("batch_flatten", lambda: one_op_graph("nn.batch_flatten", f32(B, 4, 2, 3)), None),
    # joining and splitting
    (
        "concatenate-axis0",
        lambda: one_op_graph("concatenate", f32(B, 4), f32(B, 4), axis=0),
        "concatenate acts on " + ACROSS,
    ),
    ("concatenate-axis1", lambda: one_op_graph("concatenate", f32(B, 4), f32(B, 2), axis=1), None),
    ("stack-axis0", lambda: one_op_graph("stack", f32(B, 4), f32(B, 4), axis=0), "stack acts on"),
    ("stack-axis-neg3", lambda: one_op_graph("stack", f32(B, 4), f32(B, 4), axis=-3), "stack acts on"),
    ("stack-axis1", lambda: one_op_graph("stack", f32(B, 4), f32(B, 4), axis=1), None),
    ("split-axis0", lambda: one_op_graph("split", f32(4, 6), indices_or_sections=2, axis=0), "split acts on"),
    ("split-axis1", lambda: one_op_graph("split", f32(B, 6), indices_or_sections=(2, 5), axis=1), None),
    # slicing and indexing
    (
        "strided_slice-axis0-begin1",
        lambda: one_op_graph("strided_slice", f32(4, 6), begin=(1,), end=(100,)),
        "slices " + ACROSS,
    ),
    (
        "strided_slice-axis0-stride2",
        lambda: one_op_graph("strided_slice", f32(4, 6), begin=(0,), end=(100,), strides=(2,)),
        "slices",
    ),
    ("strided_slice-axis0-short-end", lambda: one_op_graph("strided_slice", f32(4, 6), begin=(0,), end=(2,)), LEADING),
    ("strided_slice-axis0-full", lambda: one_op_graph("strided_slice", f32(B, 6), begin=(0, 1), end=(2**62, 4)), None),
    ("strided_slice-axis1", lambda: one_op_graph("strided_slice", f32(B, 6), begin=(1,), end=(5,), axes=(1,)), None),
    ("take-axis0-activation", lambda: one_op_graph("take", f32(B, 4), consts={1: IDX}, axis=0), "take acts on"),
    ("take-axis1-activation", lambda: one_op_graph("take", f32(B, 4), consts={1: IDX}, axis=1), None),
    ("take-embedding-table", _take_from_table, None),
    ("gather-axis0", lambda: one_op_graph("gather", f32(B, 4), I64(B, 4), axis=0), "gather acts on"),
    ("gather-axis1", lambda: one_op_graph("gather", f32(B, 4), I64(B, 2), axis=1), None),
    ("adv_index-axis0", lambda: one_op_graph("adv_index", f32(B, 4), consts={1: IDX}, axes=(0,)), "indexes along"),
    ("adv_index-axis1", lambda: one_op_graph("adv_index", f32(B, 4), consts={1: IDX}, axes=(1,)), None),
    ("reverse-axis0", lambda: one_op_graph("reverse", f32(B, 4), axis=0), "reverse acts on"),
    ("reverse-axis1", lambda: one_op_graph("reverse", f32(B, 4), axis=1), None),
    # adding and removing axes
    ("squeeze-axis0", lambda: one_op_graph("squeeze", f32(1, 1, 6), axis=(0,)), "squeeze acts on"),
    # squeeze without axes over a symbolic batch is refused by shape inference already (tests/ops/
    # test_dynamic_batch.py): its rank would depend on the batch
    ("squeeze-all-static-batch", lambda: one_op_graph("squeeze", f32(2, 1, 6)), None),
    ("squeeze-axis1", lambda: one_op_graph("squeeze", f32(B, 1, 6), axis=(1,)), None),
    ("expand_dims-axis0", lambda: one_op_graph("expand_dims", f32(B, 6), axis=0), "expand_dims acts on"),
    ("expand_dims-axis-neg3", lambda: one_op_graph("expand_dims", f32(B, 6), axis=-3), "expand_dims acts on"),
    ("expand_dims-axis-neg1", lambda: one_op_graph("expand_dims", f32(B, 6), axis=-1), None),
    ("expand_dims-axis1", lambda: one_op_graph("expand_dims", f32(B, 6), axis=1, num_newaxis=2), None),
    (
        "broadcast_to-new-leading-axis",
        lambda: one_op_graph("broadcast_to", f32(B, 6), shape=(3, B, 6)),
        "broadcast_to adds axes in front of",
    ),
    ("broadcast_to-inner", lambda: one_op_graph("broadcast_to", f32(B, 1, 6), shape=(B, 4, 6)), None),
    ("tile-batch", lambda: one_op_graph("tile", f32(B, 6), reps=(2, 1)), "tiles along"),
    ("tile-new-axes", lambda: one_op_graph("tile", f32(B, 6), reps=(2, 1, 1)), "tiles along"),
    ("tile-inner", lambda: one_op_graph("tile", f32(B, 6), reps=(1, 2)), None),
    ("pad-batch", lambda: one_op_graph("nn.pad", f32(2, 3), pad_width=((1, 0), (0, 0))), LEADING),
    ("pad-inner", lambda: one_op_graph("nn.pad", f32(B, 3), pad_width=((0, 0), (1, 2))), None),
    # broadcasting across the batch
    (
        "add-lower-rank-activation",
        lambda: one_op_graph("add", f32(B, 4, 6), f32(4, 6)),
        "broadcasts a lower-rank activation across the batch dimension",
    ),
    ("add-leading-one-activation", lambda: one_op_graph("add", f32(B, 4, 6), f32(1, 4, 6)), LEADING),
    ("add-lower-rank-constant", lambda: one_op_graph("add", f32(B, 4, 6), consts={1: torch.randn(4, 6)}), None),
    (
        "where-constant-condition",
        lambda: one_op_graph("where", f32(B, 4), f32(B, 4), consts={0: torch.rand(1, 4) > 0.5}),
        None,
    ),
    ("sdpa-broadcast-mask", _sdpa_with_broadcast_mask, LEADING),
    (
        "sdpa",
        lambda: one_op_graph("nn.scaled_dot_product_attention", f32(B, 2, 5, 4), f32(B, 2, 5, 4), f32(B, 2, 5, 4)),
        None,
    ),
    # products
    ("matmul-batch-differs", lambda: one_op_graph("matmul", f32(B, 3, 4), f32(1, 4, 5)), LEADING),
    (
        "matmul-contracts-batch",
        lambda: one_op_graph("matmul", f32(2, 6), consts={0: torch.randn(3, 2)}),
        "matmul contracts an activation along its " + ACROSS,
    ),
    (
        "matmul-rank1-activation",
        lambda: one_op_graph("matmul", f32(4), consts={1: torch.randn(4, 5)}),
        "matmul contracts",
    ),
    (
        "dense-rank1-activation",
        lambda: one_op_graph("nn.dense", f32(6), consts={1: torch.randn(5, 6)}),
        "nn.dense contracts",
    ),
    ("matmul-constant-weight", lambda: one_op_graph("matmul", f32(B, 3, 4), consts={1: torch.randn(4, 5)}), None),
    ("matmul-two-activations", lambda: one_op_graph("matmul", f32(B, 3, 4), f32(B, 4, 5)), None),
    ("batch_matmul", lambda: one_op_graph("nn.batch_matmul", f32(B, 3, 4), f32(B, 5, 4)), None),
    ("dense", lambda: one_op_graph("nn.dense", f32(B, 6), consts={1: torch.randn(5, 6)}), None),
    # scalars and constants
    ("scalar-activation", lambda: one_op_graph("nn.relu", f32()), "a scalar activation has no batch dimension"),
    ("static-transpose", _static_transpose_feeding_matmul, None),
    ("full_like", lambda: one_op_graph("full_like", f32(B, 4), fill_value=2.0), None),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_implicit_batch(build, expected):
    # no folding: the rules themselves must leave constant-only nodes (a static transpose) to the engine
    new, config = partition_checked(build(), use_implicit_batch=True, fold_constants=False)
    reason = config.report.reason_for("target")
    if expected is None:
        assert region_of(new, "target") is not None, str(config.report)
    else:
        assert region_of(new, "target") is None, str(config.report)
        assert expected in reason, reason
        assert reason.endswith("(implicit batch mode; use_implicit_batch=False lifts this)")


@pytest.mark.parametrize("build", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_explicit_batch_takes_everything(build):
    new, config = partition_checked(build(), use_implicit_batch=False, fold_constants=False)
    assert region_of(new, "target") is not None, str(config.report)
    assert config.report.fallbacks == ()
