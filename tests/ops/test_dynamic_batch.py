"""Dynamic batch: one graph whose inputs have the symbolic batch `Sym("batch")`, run at several batch sizes.

Each row builds its graph once (inputs listed in `batched` get dimension 0 = batch), checks that the inferred
output types carry the symbol, then executes at every size in BATCH_SIZES and compares with eager.
"""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import BATCH, assert_close, build_single_op_graph, randn, run_graph
from tensorforge.ir import Graph, Sym, TensorType
from tensorforge.ir.registry import ShapeInferenceError

BATCH_SIZES = (2, 5)


def _conv(x, w):
    module = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    module.weight.data.copy_(w)
    return module(x)


def _linear(x, w):
    module = nn.Linear(8, 5, bias=False)
    module.weight.data.copy_(w)
    return module(x)


def _attention(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(scores if mask is None else scores + mask, -1) @ v


# (id, op, inputs at batch b, attrs, batched input indices, constant input indices, eager, output shape with Sym)
CASES = [
    (
        "conv2d-stride2-pad1",
        "nn.conv2d",
        lambda b: [randn(b, 3, 8, 8), randn(4, 3, 3, 3)],
        {"strides": (2, 2), "padding": (1, 1)},
        (0,),
        (1,),
        _conv,
        (BATCH, 4, 4, 4),
    ),
    (
        "reshape-batch-minus1",
        "reshape",
        lambda b: [randn(b, 3, 4)],
        {"newshape": (BATCH, -1)},
        (0,),
        (),
        lambda x: x.reshape(x.shape[0], -1),
        (BATCH, 12),
    ),
    (
        "reshape-split-heads-2xbatch",
        "reshape",
        lambda b: [randn(b, 6, 4)],
        {"newshape": (Sym("batch", 2), 3, 4)},
        (0,),
        (),
        lambda x: x.reshape(x.shape[0] * 2, 3, 4),
        (Sym("batch", 2), 3, 4),
    ),
    ("dense", "nn.dense", lambda b: [randn(b, 8), randn(5, 8)], {}, (0,), (1,), _linear, (BATCH, 5)),
    (
        "sdpa",
        "nn.scaled_dot_product_attention",
        lambda b: [randn(b, 2, 5, 8), randn(b, 2, 6, 8), randn(b, 2, 6, 8)],
        {},
        (0, 1, 2),
        (),
        _attention,
        (BATCH, 2, 5, 8),
    ),
    (
        "sdpa-shared-mask",
        "nn.scaled_dot_product_attention",
        lambda b: [randn(b, 2, 5, 8), randn(b, 2, 5, 8), randn(b, 2, 5, 8), randn(1, 1, 5, 5)],
        {},
        (0, 1, 2),
        (3,),
        _attention,
        (BATCH, 2, 5, 8),
    ),
    ("softmax", "nn.softmax", lambda b: [randn(b, 7)], {}, (0,), (), nn.Softmax(-1), (BATCH, 7)),
    (
        "max_pool2d",
        "nn.max_pool2d",
        lambda b: [randn(b, 2, 6, 6)],
        {"pool_size": (2, 2), "strides": (2, 2)},
        (0,),
        (),
        nn.MaxPool2d(2),
        (BATCH, 2, 3, 3),
    ),
    ("batch_flatten", "nn.batch_flatten", lambda b: [randn(b, 2, 3, 2)], {}, (0,), (), nn.Flatten(), (BATCH, 12)),
    (
        "take-batched-indices",
        "take",
        lambda b: [randn(10, 4), torch.randint(0, 10, (b, 3))],
        {},
        (1,),
        (0,),
        lambda table, idx: F.embedding(idx, table),
        (BATCH, 3, 4),
    ),
    (
        "concatenate-on-batch",
        "concatenate",
        lambda b: [randn(b, 3), randn(b, 3)],
        {"axis": 0},
        (0, 1),
        (),
        lambda a, c: torch.cat([a, c]),
        (Sym("batch", 2), 3),
    ),
    (
        "transpose-batch-last",
        "transpose",
        lambda b: [randn(b, 3, 4)],
        {"axes": (1, 2, 0)},
        (0,),
        (),
        lambda x: x.permute(1, 2, 0),
        (3, 4, BATCH),
    ),
    ("sum-over-batch", "sum", lambda b: [randn(b, 3)], {"axis": (0,)}, (0,), (), lambda x: x.sum(0), (3,)),
    (
        "full_like",
        "full_like",
        lambda b: [randn(b, 3)],
        {"fill_value": 2.0},
        (0,),
        (),
        lambda x: torch.full_like(x, 2.0),
        (BATCH, 3),
    ),
]


@pytest.mark.parametrize("name, op, make, attrs, batched, const, eager, shape", CASES, ids=[c[0] for c in CASES])
def test_dynamic_batch(name, op, make, attrs, batched, const, eager, shape):
    graph = build_single_op_graph(op, make(BATCH_SIZES[0]), attrs, const_inputs=const, dynamic_batch=batched)
    assert graph.outputs[0].type.shape == shape
    for batch in BATCH_SIZES:
        inputs = make(batch)
        actual = run_graph(graph, [t for i, t in enumerate(inputs) if i not in const])
        with torch.no_grad():
            # the constants are the ones baked into the graph at build time
            consts = {i: graph.constants[f"w{i}"].data for i in const}
            expected = eager(*[consts.get(i, t) for i, t in enumerate(inputs)])
        assert_close(actual[0], expected)


def test_arange_to_the_batch_size():
    """A Sym in an attribute binds to the batch the graph's inputs carry."""
    graph = Graph("positions")
    x = graph.add_input("x", TensorType("float32", (BATCH, 3)))
    positions = graph.call("arange", stop=BATCH)
    graph.set_outputs(
        [graph.call("add", x, graph.call("expand_dims", graph.call("cast", positions, dtype="float32"), axis=1))]
    )
    graph.verify()
    assert positions.type == TensorType("int64", (BATCH,))
    for batch in BATCH_SIZES:
        x_val = randn(batch, 3)
        (out,) = run_graph(graph, [x_val])
        assert_close(out, x_val + torch.arange(batch, dtype=torch.float32)[:, None])


def test_batch_mismatch_between_inputs_is_rejected():
    graph = build_single_op_graph("add", [randn(2, 3), randn(2, 3)], dynamic_batch=True)
    with pytest.raises(ValueError, match="batch is already 2"):
        run_graph(graph, [randn(2, 3), randn(3, 3)])


# Shape inference probes symbols with large primes; an output that depends on a symbol only for small sizes
# is caught by one more run at size 1 and refused with a clear error, instead of being typed for large batches
# and coming out wrong at batch 1.
def test_squeeze_without_axes_over_the_batch_is_refused():
    with pytest.raises(ShapeInferenceError, match=r"squeeze: output 0 is .* but \[3\] at batch=1"):
        build_single_op_graph("squeeze", [randn(2, 1, 3)], dynamic_batch=True)


def test_strided_slice_past_a_small_batch_is_refused():
    with pytest.raises(ShapeInferenceError, match=r"strided_slice: .* \[1, 3\] at batch=1: its size depends"):
        build_single_op_graph("strided_slice", [randn(4, 3)], {"begin": (0,), "end": (8,)}, dynamic_batch=True)


def test_squeeze_with_axes_and_slices_within_any_batch_are_typed():
    graph = build_single_op_graph("squeeze", [randn(2, 1, 3)], {"axis": (1,)}, dynamic_batch=True)
    run_graph(graph, [randn(1, 1, 3)])
    graph = build_single_op_graph(
        "strided_slice", [randn(4, 3)], {"begin": (0,), "end": (2,), "axes": (1,)}, dynamic_batch=True
    )
    run_graph(graph, [randn(1, 3)])
