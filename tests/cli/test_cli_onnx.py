"""The command line on ONNX files exported from small torch models: build -> run, compare with onnxruntime,
bench against onnxruntime, inspect; a token model whose sequence axis is symbolic takes its size from --seq-len."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cli.conftest import TinyNet, assert_ok, assert_one_line_error, tforge


class TokenNet(torch.nn.Module):
    """Embedding -> dense -> gelu -> mean over tokens: an int64 input (batch, sequence)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.proj = torch.nn.Linear(16, 8)

    def forward(self, ids):
        return torch.nn.functional.gelu(self.proj(self.embed(ids))).mean(dim=1)


def export(model, example, path, input_name, axes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["out"],
            dynamic_axes={input_name: axes, "out": {0: "N"}},
            dynamo=False,
        )
    return str(path)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    tiny, tokens = TinyNet().eval(), TokenNet().eval()
    return {
        "dir": d,
        "tiny": export(tiny, torch.randn(2, 3, 8, 8), d / "tiny.onnx", "image", {0: "N"}),
        "tokens": export(tokens, torch.randint(0, 50, (2, 6)), d / "tokens.onnx", "ids", {0: "N", 1: "S"}),
    }


def onnxruntime_outputs(path, feed):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)


def test_build_then_run_matches_onnxruntime(onnx_files, tmp_path):
    plan = tmp_path / "tiny.tforge"
    result = tforge("build", onnx_files["tiny"], "-o", plan, "--batch", 4, "--device", "cpu")
    assert_ok(result)
    assert f"built {onnx_files['tiny']} -> {plan}" in result.stdout and "fallback nodes: 0" in result.stdout
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    assert_ok(tforge("run", plan, "--input", tmp_path / "in.npz", "--output", tmp_path / "out.npz", "--device", "cpu"))
    (expected,) = onnxruntime_outputs(onnx_files["tiny"], {"image": x})
    with np.load(tmp_path / "out.npz") as out:
        assert out.files == ["out"]
        np.testing.assert_allclose(out["out"], expected, rtol=1e-4, atol=1e-6)


def test_compare_with_onnxruntime(onnx_files):
    result = tforge("compare", onnx_files["tiny"], "--batch", 3, "--json", "--device", "cpu", "-q")
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert doc["reference"] == "onnxruntime" and doc["ok"]
    assert doc["outputs"]["out"]["shape"] == [3, 5] and doc["outputs"]["out"]["max_rel"] <= 1e-4


def test_compare_fp16_beyond_a_tight_tolerance_fails(onnx_files):
    result = tforge("compare", onnx_files["tiny"], "--fp16", "--rtol", "1e-9", "--device", "cpu", "-q")
    assert_one_line_error(result, "max rel error beyond the tolerance 1e-09 (fp16): out (", code=3)
    assert "MISMATCH" in result.stdout


def test_symbolic_sequence_axis_takes_seq_len(onnx_files, tmp_path):
    plan = tmp_path / "tokens.tforge"
    assert_ok(tforge("build", onnx_files["tokens"], "-o", plan, "--seq-len", 5, "--batch", 2, "--device", "cpu", "-q"))
    inspected = tforge("inspect", plan, "--json", "--device", "cpu")
    assert_ok(inspected)
    assert json.loads(inspected.stdout)["inputs"] == [{"name": "ids", "type": "i64[batch,5]"}]
    ids = np.random.default_rng(0).integers(0, 50, (2, 5))
    np.save(tmp_path / "ids.npy", ids)
    result = tforge("run", plan, "--input", tmp_path / "ids.npy", "--output", tmp_path / "out.npy", "--device", "cpu")
    assert_ok(result)
    (expected,) = onnxruntime_outputs(onnx_files["tokens"], {"ids": ids})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-6)


def test_bench_against_onnxruntime(onnx_files):
    result = tforge(
        "bench",
        onnx_files["tiny"],
        "--batch",
        2,
        "--iters",
        5,
        "--warmup",
        1,
        "--compare",
        "onnxruntime",
        "--json",
        "--device",
        "cpu",
        "-q",
    )
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert set(doc["methods"]) == {"tensorforge", "onnxruntime"}
    assert doc["methods"]["onnxruntime"]["provider"] == "CPUExecutionProvider"
    assert doc["speedup"]["onnxruntime"] > 0


def test_onnx_model_refuses_eager_comparison(onnx_files, capsys):
    from tensorforge.cli import main

    assert main(["bench", onnx_files["tiny"], "--compare", "eager"]) == 1
    assert capsys.readouterr().err == (
        "tensorforge: error: --compare eager: an .onnx file has no PyTorch model; compare it with onnxruntime\n"
    )


def test_build_over_a_shape_range_runs_every_shape_inside_it(onnx_files, tmp_path):
    """trtexec's --min/--opt/--max-shapes over an ONNX model whose batch and sequence are dim_params: one plan, its
    profile in the summary and in inspect, and a run at a shape inside the range matching onnxruntime."""
    plan = tmp_path / "tokens.tforge"
    ranges = ["--min-shapes", "ids:1x2", "--opt-shapes", "ids:2x6", "--max-shapes", "ids:4x16"]
    result = tforge("build", onnx_files["tokens"], "-o", plan, *ranges, "--device", "cpu")
    assert_ok(result)
    assert "profile S 2..16 (opt 6), batch 1..4 (opt 2)" in result.stdout, result.stdout
    inspected = tforge("inspect", plan, "--device", "cpu")
    assert_ok(inspected)
    assert "plan: profile S 2..16 (opt 6), batch 1..4 (opt 2)" in inspected.stdout, inspected.stdout
    ids = np.random.default_rng(1).integers(0, 50, (3, 11)).astype(np.int64)
    np.savez(tmp_path / "in.npz", ids=ids)
    assert_ok(tforge("run", plan, "--input", tmp_path / "in.npz", "--output", tmp_path / "out.npz", "--device", "cpu"))
    (expected,) = onnxruntime_outputs(onnx_files["tokens"], {"ids": ids})
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["out"], expected, rtol=1e-4, atol=1e-6)
