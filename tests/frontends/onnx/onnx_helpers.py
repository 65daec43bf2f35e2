"""Small ONNX models built by hand, and one way to check an import: against onnxruntime on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

import tensorforge
from tensorforge import ir
from tensorforge.frontends import from_onnx

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64

# (rtol, atol) per dtype for tensorforge against onnxruntime; integers and bool exactly
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.float64: (1e-7, 1e-7)}


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, extra_opsets=(), functions=()):
    """A checked ModelProto: inputs/outputs are (name, element type, shape) with None for an unknown shape."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in initializers],
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    # IR version 8 is what onnxruntime reads for any opset these tests use
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=8 if opset <= 17 else 10, functions=list(functions)
    )


def onnxruntime_outputs(model: onnx.ModelProto, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {v.name: t.numpy() for v, t in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(r) for r in session.run(None, feeds)]


def assert_matches_onnxruntime(graph: ir.Graph, model: onnx.ModelProto, inputs: Sequence[torch.Tensor]) -> None:
    """ir.execute(graph) equals onnxruntime's run of the source model: dtype, shape and values."""
    actual = ir.execute(graph, *inputs)
    expected = onnxruntime_outputs(model, inputs)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        if a.dtype in TOLERANCES:
            rtol, atol = TOLERANCES[a.dtype]
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
        else:
            assert torch.equal(a, e)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def one_engine_region(model: onnx.ModelProto):
    """(graph, partitioned graph, config) of `model` imported strictly with no opaque node and partitioned into one
    engine region that takes every node (what a converter's test asserts before it compares numbers)."""
    graph = from_onnx(model, strict=True)
    assert graph.opaque_nodes() == [], str(graph)
    partitioned, config = tensorforge.partition_for_tensorforge(graph, use_implicit_batch=False)
    assert config.report.offloaded_nodes == config.report.total_nodes, str(config.report)
    assert [n.op for n in partitioned.nodes] == ["subgraph"], str(config.report)
    return graph, partitioned, config
