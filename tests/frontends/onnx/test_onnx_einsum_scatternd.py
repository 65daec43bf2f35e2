"""Einsum and ScatterND, which have no IR op of their own: Einsum becomes matmuls, transposes, reshapes, multiplies
and sums; ScatterND becomes slices of a box, a `take` of known rows, or a one-hot reduction of run-time indices.

Each case is imported with no opaque node left, holds the IR ops it should, goes whole to one engine region, and its
built CPU plan matches onnxruntime on the same inputs (at two batch sizes where the batch is symbolic). The cases the
lowering cannot take run through onnxruntime, with a reason that names what they lack.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from onnx_helpers import (
    FLOAT,
    INT64,
    TOLERANCES,
    assert_matches_onnxruntime,
    make_model,
    one_engine_region,
    onnxruntime_outputs,
)

import tensorforge
from tensorforge.frontends import from_onnx
from tensorforge.frontends.onnx_ops import indexing, lookup

node = helper.make_node


def _inputs(model: onnx.ModelProto, batch: int, values: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """Random float inputs (symbolic sizes bound to `batch`), and the given values for the named ones."""
    gen = torch.Generator().manual_seed(batch)
    out = []
    for v in model.graph.input:
        if v.name in values:
            out.append(torch.from_numpy(values[v.name]))
            continue
        dims = [batch if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        out.append(torch.randn(dims, generator=gen))
    return out


def _assert_in_engine_and_matches(model: onnx.ModelProto, values: dict[str, np.ndarray] | None = None) -> None:
    """Imported with no opaque node, partitioned into one engine region, built on the CPU and run, at batch 1 and 3
    (or once, for a static model), equal to onnxruntime within the float32 tolerance."""
    graph, partitioned, config = one_engine_region(model)
    dynamic = any(d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim)
    for batch in (1, 3) if dynamic else (2,):
        inputs = _inputs(model, batch, values or {})
        assert_matches_onnxruntime(graph, model, inputs)
        module = tensorforge.build(partitioned, config, device="cpu")  # a plan per size: "N" may be no batch axis
        with torch.no_grad():
            actual = module(*inputs)
        (expected,) = onnxruntime_outputs(model, inputs)
        rtol, atol = TOLERANCES[expected.dtype]
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def _ir_ops(model: onnx.ModelProto) -> set[str]:
    return {n.op for n in from_onnx(model).nodes}


# -- Einsum ----------------------------------------------------------------------------------------


def _einsum_model(equation: str, shapes, constants: dict[int, np.ndarray]) -> onnx.ModelProto:
    names = [f"x{i}" for i in range(len(shapes))]
    inputs = [(n, FLOAT, s) for i, (n, s) in enumerate(zip(names, shapes)) if i not in constants]
    init = [(names[i], value) for i, value in constants.items()]
    return make_model([node("Einsum", names, ["y"], equation=equation)], inputs, [("y", FLOAT, None)], init)


def _weight(*shape: int) -> np.ndarray:
    return np.random.RandomState(0).randn(*shape).astype(np.float32)


# (id, equation, input shapes ("N": the symbolic batch), constant inputs by position, IR ops the import holds)
EINSUM_CASES = [
    ("batch-matmul", "bij,bjk->bik", [["N", 3, 4], ["N", 4, 5]], {}, {"matmul"}),
    # mvitv2's decomposed relative positions: the height term broadcasts the table over batch and width ...
    ("rel-pos-height", "byhwc,hkc->byhwk", [["N", 1, 6, 5, 8], None], {1: _weight(6, 3, 8)}, {"matmul"}),
    # ... the width term batches over width, which the input has inside: a transpose there is cheaper than a
    # broadcast matmul that would copy the table once per (batch, height)
    (
        "rel-pos-width",
        "byhwc,wkc->byhwk",
        [["N", 1, 6, 5, 8], None],
        {1: _weight(5, 3, 8)},
        {"transpose", "reshape", "matmul"},
    ),
    ("attention-scores", "bhqd,bhkd->bhqk", [["N", 2, 5, 4], ["N", 2, 6, 4]], {}, {"transpose", "matmul"}),
    ("constant-weight-is-a-dense-layer", "bid,hd->bih", [["N", 5, 4], None], {1: _weight(6, 4)}, {"nn.dense"}),
    ("ellipsis", "...ij,...jk->...ik", [["N", 3, 4, 5], ["N", 3, 5, 6]], {}, {"matmul"}),
    ("ellipsis-broadcasts-a-size-1", "...ij,...jk->...ik", [[2, 3, 4, 5], [1, 3, 5, 6]], {}, {"reshape", "matmul"}),
    ("implicit-output", "ij,jk", [[3, 4], [4, 5]], {}, {"matmul"}),
    ("three-operands", "ij,jk,kl->il", [[3, 4], [4, 5], [5, 2]], {}, {"matmul"}),
    ("three-operands-batched", "abc,cd,de->abe", [["N", 3, 4], [4, 5], [5, 2]], {}, {"matmul"}),
    ("outer-product", "i,j->ij", [[3], [4]], {}, {"reshape", "multiply"}),
    ("dot-product", "i,i", [[5], [5]], {}, {"multiply", "sum"}),
    ("batched-dot-product", "nchw,nchw->nc", [["N", 3, 4, 4], ["N", 3, 4, 4]], {}, {"multiply", "sum"}),
    ("hadamard", "ij,ij->ij", [[3, 4], [3, 4]], {}, {"multiply"}),
    ("transpose", "ij->ji", [[3, 4]], {}, {"transpose"}),
    ("row-sum", "ij->i", [[3, 4]], {}, {"sum"}),
    ("trace", "ii", [[4, 4]], {}, {"reshape", "strided_slice", "sum"}),
    ("batch-diagonal", "...ii->...i", [["N", 5, 5]], {}, {"reshape", "strided_slice"}),
    ("diagonal-then-matmul", "iij,jk->ik", [[3, 3, 4], [4, 2]], {}, {"reshape", "strided_slice", "matmul"}),
    ("upper-and-lower-case-labels", "Ab,bA->", [[3, 4], [4, 3]], {}, {"transpose", "multiply", "sum"}),
]


@pytest.mark.parametrize(
    "equation, shapes, constants, ops", [c[1:] for c in EINSUM_CASES], ids=[c[0] for c in EINSUM_CASES]
)
def test_einsum_lowers_into_one_engine_region(equation, shapes, constants, ops):
    model = _einsum_model(equation, shapes, constants)
    assert _ir_ops(model) == ops
    _assert_in_engine_and_matches(model)


def test_einsum_diagonal_of_a_symbolic_size_runs_through_onnxruntime():
    model = _einsum_model("bii->bi", [["N", "M", "M"]], {})
    graph = from_onnx(model)  # M stays a symbol: the diagonal's stride would depend on it
    (opaque,) = graph.opaque_nodes()
    assert opaque.op == "onnx.Einsum"
    assert opaque.attrs["reason"] == (
        "Einsum equation 'bii->bi': the repeated label 'i' spans the sizes [M, M]; a diagonal needs one size known "
        "at import"
    )
    assert_matches_onnxruntime(graph, model, [torch.randn(2, 3, 3)])
    _, config = tensorforge.partition_for_tensorforge(graph, use_implicit_batch=False)
    assert all("runs through onnxruntime" in r for r in config.report.reasons()["onnx.Einsum"])


def test_einsum_check_names_a_malformed_equation():
    check = lookup("Einsum", "", 12).check
    assert check is not None
    assert check(equation="ij,jk->ik", Inputs=[]) == "Einsum equation 'ij,jk->ik': 2 input terms for 0 inputs"
    assert "holds other than letters" in check(equation="i.j->i", Inputs=[None])
    assert "name no input axis" in check(equation="ij->k", Inputs=[None])
    assert check(equation="...ij, ...jk -> ...ik", Inputs=[None, None]) is None


# -- ScatterND -------------------------------------------------------------------------------------


def _scatter_model(data, indices: np.ndarray, updates, reduction: str = "none", run_time: bool = False):
    """ScatterND of `data` and `updates` (shapes, "N" symbolic) at `indices`: a constant, or fed at run time."""
    attrs = {} if reduction == "none" else {"reduction": reduction}
    inputs = [("data", FLOAT, data)] + ([("indices", INT64, list(indices.shape))] if run_time else [])
    return make_model(
        [node("ScatterND", ["data", "indices", "updates"], ["y"], **attrs)],
        inputs + [("updates", FLOAT, updates)],
        [("y", FLOAT, None)],
        [] if run_time else [("indices", indices)],
        opset=18,
    )


def _grid(*ranges: range) -> np.ndarray:
    """Every combination of the ranges' values: the index tuples a slice assignment writes."""
    return np.stack(np.meshgrid(*[np.array(r) for r in ranges], indexing="ij"), -1).astype(np.int64)


ROWS = np.array([[0], [2]])
ELEMENTS_1D = np.array([[4], [3], [1], [7]])
PAIRS = np.array([[0, 1], [2, 3], [1, 0]])
REPEATED_ROWS = np.array([[1], [1], [-1]])

# (id, data shape, indices, updates shape, reduction, indices fed at run time, IR ops the import holds)
SCATTER_CASES = [
    # indices that enumerate a box of slices
    ("rows-every-other-one", [4, 4, 4], ROWS, [2, 4, 4], "none", False, {"slice_scatter"}),
    (
        "box-2d",
        [5, 6, 2],
        _grid(range(1, 4), range(0, 5, 2)),
        [3, 3, 2],
        "none",
        False,
        {"strided_slice", "slice_scatter"},
    ),
    (
        "box-2d-transposed",
        [5, 6, 2],
        _grid(range(1, 4), range(0, 5, 2)).transpose(1, 0, 2).copy(),
        [3, 3, 2],
        "none",
        False,
        {"transpose", "strided_slice", "slice_scatter"},
    ),
    ("box-negative-indices", [3, 4], _grid(range(-2, 0), range(4)), [2, 4], "none", False, {"slice_scatter"}),
    ("box-rows-of-a-batch-sized-tail", [4, "N"], ROWS, [2, "N"], "none", False, {"slice_scatter"}),
    (
        "box-add",
        [5, 6, 2],
        _grid(range(1, 4), range(0, 5, 2)),
        [3, 3, 2],
        "add",
        False,
        {"strided_slice", "add", "slice_scatter"},
    ),
    # other indices known at import
    ("elements-1d", [8], ELEMENTS_1D, [4], "none", False, {"concatenate", "take"}),
    ("pairs-into-rank-3", [3, 4, 5], PAIRS, [3, 5], "none", False, {"reshape", "concatenate", "take"}),
    ("repeated-rows-add", [4, 4, 4], REPEATED_ROWS, [3, 4, 4], "add", False, {"concatenate", "take", "add"}),
    ("repeated-rows-max", [4, 4, 4], REPEATED_ROWS, [3, 4, 4], "max", False, {"concatenate", "take", "maximum"}),
    # indices fed at run time
    ("run-time-elements-1d", [8], ELEMENTS_1D, [4], "none", True, None),
    ("run-time-rows", [4, 4, 4], ROWS, [2, 4, 4], "none", True, None),
    ("run-time-pairs-into-rank-3", [3, 4, 5], PAIRS, [3, 5], "none", True, None),
    ("run-time-rows-of-a-batch-sized-tail", [4, "N"], ROWS, [2, "N"], "none", True, None),
    ("run-time-repeated-rows-add", [4, 4, 4], REPEATED_ROWS, [3, 4, 4], "add", True, None),
    ("run-time-repeated-rows-mul", [4, 4, 4], REPEATED_ROWS, [3, 4, 4], "mul", True, None),
    ("run-time-elements-max", [2, 2], np.array([[0, 0], [1, 1]]), [2], "max", True, None),
    ("run-time-elements-min", [2, 2], np.array([[0, 0], [1, 1], [0, 0]]), [3], "min", True, None),
]


@pytest.mark.parametrize(
    "data, indices, updates, reduction, run_time, ops",
    [c[1:] for c in SCATTER_CASES],
    ids=[c[0] for c in SCATTER_CASES],
)
def test_scatternd_lowers_into_one_engine_region(data, indices, updates, reduction, run_time, ops):
    model = _scatter_model(data, indices, updates, reduction, run_time)
    if ops is not None:
        assert _ir_ops(model) == ops
    else:  # run-time indices: the one-hot matrix of updates by rows
        assert {"equal", "where", "take" if reduction == "none" else "expand_dims"} <= _ir_ops(model)
    _assert_in_engine_and_matches(model, {"indices": indices.astype(np.int64)} if run_time else None)


class _SliceAssignment(torch.nn.Module):
    """A slice assignment into an intermediate tensor, as mvitv2 writes its attention (`attn[:, :, 1:, 1:] = ...`):
    the exporter writes a ScatterND whose indices it computes from the shape with Range, Expand and Concat."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, x, y):
        out = x * 2.0
        out[self.index] = y + 1.0
        return out


@pytest.mark.parametrize(
    "index, y_shape, ops",
    [
        (
            (slice(None), slice(None), slice(1, None), slice(None, None, 2)),
            (3, 4, 3),
            {"strided_slice", "slice_scatter"},
        ),
        ((slice(None), slice(None), slice(None), slice(None)), (3, 5, 6), set()),  # overwritten whole
    ],
    ids=["strided-box", "whole-tensor"],
)
def test_exported_slice_assignment_is_slices_and_its_index_computation_goes(index, y_shape, ops, tmp_path):
    path = tmp_path / "assign.onnx"
    x, y = torch.randn(2, 3, 5, 6), torch.randn(2, *y_shape)
    torch.onnx.export(
        _SliceAssignment(index),
        (x, y),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x", "y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
    )
    model = onnx.load(str(path))
    assert "ScatterND" in {n.op_type for n in model.graph.node}
    # the Range/Expand/Concat that computed the indices is read by nothing once they are slice attributes
    assert _ir_ops(model) - {"multiply", "add"} == ops
    _assert_in_engine_and_matches(model)


def test_scatternd_run_time_indices_over_a_symbolic_row_count_run_through_onnxruntime():
    model = _scatter_model(["N", 4], ROWS, [2, 4], run_time=True)
    graph = from_onnx(model)
    (opaque,) = graph.opaque_nodes()
    assert opaque.op == "onnx.ScatterND"
    assert opaque.attrs["reason"] == (
        "indices that are no box of slices, into data axes of sizes [batch]: those sizes must be known at import"
    )
    assert_matches_onnxruntime(graph, model, [torch.randn(3, 4), torch.from_numpy(ROWS), torch.randn(2, 4)])


def test_scatternd_one_hot_beyond_its_limit_runs_through_onnxruntime(monkeypatch):
    monkeypatch.setattr(indexing, "ONE_HOT_LIMIT", 16)
    model = _scatter_model([8], ELEMENTS_1D, [4], run_time=True)
    graph = from_onnx(model)
    (opaque,) = graph.opaque_nodes()
    assert "one-hot matrix would hold 32 elements, more than 16" in opaque.attrs["reason"]
    assert_matches_onnxruntime(graph, model, [torch.randn(8), torch.from_numpy(ELEMENTS_1D), torch.randn(4)])


def test_scatternd_check_refuses_what_no_lowering_takes():
    check = lookup("ScatterND", "", 18).check
    assert check is not None
    assert check(reduction="none") is None
    assert check(reduction="sub") == "reduction 'sub'"
