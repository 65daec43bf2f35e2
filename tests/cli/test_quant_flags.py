"""`tensorforge build --int8/--fp8 --calib DIR_OR_NPZ [--calib-cache FILE]` on an ONNX model: the saved module holds
the Q/DQ graph, the cache is written and reused without --calib, and every misuse is one line naming the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import tensorforge as forge
from cli.conftest import assert_ok, assert_one_line_error, tforge


class ConvNet(torch.nn.Module):
    """Two convs and a classifier: under --int8 the second conv is quantized (the first and the classifier stay)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    model = ConvNet().eval()
    path = d / "convnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, 3, 8, 8),),
            str(path),
            input_names=["image"],
            output_names=["out"],
            dynamic_axes={"image": {0: "N"}, "out": {0: "N"}},
            dynamo=False,
        )
    calib = d / "calib"
    calib.mkdir()
    for i in range(3):
        np.savez(calib / f"batch{i}.npz", image=np.random.randn(4, 3, 8, 8).astype(np.float32))
    return model, str(path), calib


def _qdq_ops(module) -> int:
    return sum(g.op_counts()["dequantize"] for g in [module.graph, *module.graph.subgraphs.values()])


@pytest.mark.parametrize("flag", ["--int8", "--fp8"])
def test_build_quantized_with_a_calibration_directory_then_the_cache(model_and_data, tmp_path, flag):
    model, onnx_path, calib = model_and_data
    out, cache = tmp_path / "q.tforge", tmp_path / "q.calib"
    result = tforge(
        "build",
        onnx_path,
        "-o",
        out,
        flag,
        "--calib",
        calib,
        "--calib-cache",
        cache,
        "--batch",
        4,
        "--device",
        "cpu",
        "-q",
    )
    assert_ok(result)
    assert f"precision {flag[2:]}" in result.stdout
    assert cache.read_text().startswith(f"# tensorforge calibration cache v1 precision={flag[2:]}")
    module = forge.load(out, device="cpu")
    assert _qdq_ops(module) > 0
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        got, want = module(x), model(x)
    assert 0 < ((got - want).norm() / want.norm()).item() < 0.05
    # the cache alone is enough, and one .npz file is a calibration set of one batch
    assert_ok(
        tforge(
            "build", onnx_path, "-o", tmp_path / "again.tforge", flag, "--calib-cache", cache, "--device", "cpu", "-q"
        )
    )
    one = tmp_path / "one.tforge"
    assert_ok(tforge("build", onnx_path, "-o", one, flag, "--calib", calib / "batch0.npz", "--device", "cpu", "-q"))


def test_error_budget_keeps_layers_in_floating_point(model_and_data, tmp_path):
    """--error-budget 0 leaves no layer quantized (every one costs some error); a loose budget keeps the Q/DQ graph."""
    model, onnx_path, calib = model_and_data
    exact, loose = tmp_path / "exact.tforge", tmp_path / "loose.tforge"
    common = ("--int8", "--calib", calib, "--batch", 2, "--device", "cpu", "-q")
    assert_ok(tforge("build", onnx_path, "-o", exact, *common, "--error-budget", "0"))
    assert_ok(tforge("build", onnx_path, "-o", loose, *common, "--error-budget", "10"))
    assert _qdq_ops(forge.load(exact, device="cpu")) == 0
    assert _qdq_ops(forge.load(loose, device="cpu")) > 0
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the layers --int8 leaves unquantized may run in fp16: fp16's tolerance
        torch.testing.assert_close(forge.load(exact, device="cpu")(x), model(x), rtol=2e-3, atol=1e-3)


def test_quantization_flag_errors(model_and_data, tmp_path):
    _, onnx_path, calib = model_and_data
    out = tmp_path / "q.tforge"
    assert_one_line_error(
        tforge("build", onnx_path, "-o", out, "--int8", "--device", "cpu", "-q"), "--calib DIR_OR_NPZ"
    )
    assert_one_line_error(
        tforge("build", onnx_path, "-o", out, "--calib", calib, "--device", "cpu", "-q"), "go with --int8 or --fp8"
    )
    assert_one_line_error(
        tforge("build", onnx_path, "-o", out, "--error-budget", "0.05", "--device", "cpu", "-q"),
        "go with --int8 or --fp8",
    )
    assert_one_line_error(
        tforge(
            "build", onnx_path, "-o", out, "--int8", "--calib", calib, "--error-budget", -1, "--device", "cpu", "-q"
        ),
        "error_budget is a relative output error >= 0",
    )
    assert_one_line_error(
        tforge("build", onnx_path, "-o", out, "--int8", "--calib", tmp_path / "none", "--device", "cpu", "-q"),
        "no such calibration file or directory",
    )
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    np.savez(wrong / "b.npz", pixels=np.zeros((2, 3, 8, 8), np.float32))
    assert_one_line_error(
        tforge("build", onnx_path, "-o", out, "--int8", "--calib", wrong, "--device", "cpu", "-q"),
        "calibration batch 0",
        "missing ['image']",
    )
    np.savez(wrong / "b.npz", image=np.zeros((2, 3, 9, 8), np.float32))
    assert_one_line_error(
        tforge("build", onnx_path, "-o", out, "--int8", "--calib", wrong, "--device", "cpu", "-q"),
        "calibration batch 0: input 'image'",
    )
    result = tforge("build", onnx_path, "-o", out, "--int8", "--fp8", "--calib", calib)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
