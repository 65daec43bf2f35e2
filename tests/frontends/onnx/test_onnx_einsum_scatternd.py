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
from onnx_helpers import FLOAT, TOLERANCES, assert_matches_onnxruntime, make_model, onnxruntime_outputs

import tensorforge
from tensorforge.frontends import from_onnx
from tensorforge.frontends.onnx_ops import lookup

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
    graph = from_onnx(model, strict=True)
    assert graph.opaque_nodes() == [], str(graph)
    partitioned, config = tensorforge.partition_for_tensorforge(graph, use_implicit_batch=False)
    assert config.report.offloaded_nodes == config.report.total_nodes, str(config.report)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
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
