"""`tensorforge inspect` of quantized modules: each layer's precision, and for quantize / dequantize layers their scale
(per tensor the value, per channel the count and min..max), in the table and in --json."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import tensorforge as forge
from cli.conftest import assert_ok, tforge
from tensorforge import ir
from tensorforge.ir.types import BATCH


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def int8_module(tmp_path_factory) -> str:
    """ConvNet calibrated to int8 by `tensorforge build --int8 --calib` (its second conv's input is quantized: the
    plan holds that quantize and the 8-bit conv it feeds, the Q/DQ pair's dequantize fused into it)."""
    d = tmp_path_factory.mktemp("quant_inspect")
    torch.manual_seed(0)
    onnx_path = d / "convnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ConvNet().eval(),
            (torch.randn(2, 3, 8, 8),),
            str(onnx_path),
            input_names=["image"],
            output_names=["out"],
            dynamic_axes={"image": {0: "N"}, "out": {0: "N"}},
            dynamo=False,
        )
    calib = d / "calib.npz"
    np.savez(calib, image=np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    out = d / "q.tforge"
    assert_ok(tforge("build", onnx_path, "-o", out, "--int8", "--calib", calib, "--device", "cpu", "-q"))
    return str(out)


def _scales(module, op: str) -> list[torch.Tensor]:
    """The scale constants of the `op` nodes of the module's plans (its saved regions hold no weights), in order."""
    graphs = [plan.graph for plans in module.plans().values() for plan in plans]
    return [n.inputs[1].tensor for g in graphs for n in g.nodes if n.op == op]


def test_inspect_json_gives_each_quantize_layer_its_scale(int8_module):
    result = tforge("inspect", int8_module, "--json", "--device", "cpu")
    assert_ok(result)
    layers = [x for r in json.loads(result.stdout)["regions"] for p in r["plans"] for x in p["layers"]]
    module = forge.load(int8_module, device="cpu")
    shown = [x for x in layers if x["op"] == "quantize"]
    expected = _scales(module, "quantize")
    assert shown and len(shown) == len(expected)
    for layer, scale in zip(shown, expected):
        assert layer["precision"] == "int8"
        assert layer["scale"] == {"value": pytest.approx(scale.item(), rel=1e-7)}
        assert 0 < layer["scale"]["value"] < 1
    (conv,) = [x for x in layers if x["op"] == "engine.qconv"]  # conv2, 8 output channels
    assert conv["precision"] == "int8"
    assert (
        conv["scale"]["axis"] == 1 and conv["scale"]["count"] == 8 and 0 < conv["scale"]["min"] <= conv["scale"]["max"]
    )
    assert all("scale" not in x for x in layers if x["op"] not in ("quantize", "dequantize", "engine.qconv"))
    assert {x["precision"] for x in layers} >= {"int8", "float32"}


def test_inspect_table_shows_the_scale_after_the_precision(int8_module):
    result = tforge("inspect", int8_module, "--device", "cpu")
    assert_ok(result)
    scale = _scales(forge.load(int8_module, device="cpu"), "quantize")[0].item()
    rows = [line.split() for line in result.stdout.splitlines() if " quantize " in line]
    assert rows and rows[0][1:4] == ["quantize", "reference", "int8"]
    assert rows[0][-2:] == ["scale", f"{scale:.6g}"]


def test_inspect_per_channel_scales_give_count_and_range(tmp_path):
    """A per-channel Q/DQ pair on an activation (channels along axis 1): count, axis and min..max of its scales."""
    graph = ir.Graph("per_channel")
    x = graph.add_input("x", ir.TensorType("float32", (ir.Sym(BATCH), 4)))
    scales = graph.add_constant(torch.tensor([0.5, 0.02, 0.125, 0.25]), "scales")
    q = graph.call("quantize", x, scales, axis=1, dtype="int8")
    graph.set_outputs([graph.call("nn.relu", graph.call("dequantize", q, scales, axis=1, dtype="float32"))])
    partitioned, config = forge.partition_for_tensorforge(graph.verify())
    module = forge.build(partitioned, config, device="cpu")
    x_in = torch.tensor([[1.3, 0.031, -0.2, 40.0], [-3.0, 0.5, 0.07, 0.1]])
    expected = torch.relu(torch.clamp(torch.round(x_in / scales.tensor), -128, 127) * scales.tensor)
    assert torch.equal(module(x_in), expected)
    path = tmp_path / "pc.tforge"
    module.save(path)

    result = tforge("inspect", path, "--json", "--device", "cpu")
    assert_ok(result)
    layers = {x["op"]: x for r in json.loads(result.stdout)["regions"] for p in r["plans"] for x in p["layers"]}
    want = {"axis": 1, "count": 4, "min": pytest.approx(0.02), "max": pytest.approx(0.5)}
    assert layers["quantize"]["scale"] == want and layers["dequantize"]["scale"] == want
    text = tforge("inspect", path, "--device", "cpu")
    assert_ok(text)
    assert "scales 4 along axis 1, 0.02..0.5" in text.stdout


def test_compare_per_layer_lists_sensitivity_worst_first(int8_module, tmp_path):
    """`compare --int8 --calib X --per-layer`: the quantized module against the float model, then each quantizable
    layer's error when quantized alone, sorted worst first, as `quantization.sensitivity` computes it."""
    onnx_path = str(int8_module).replace("q.tforge", "convnet.onnx")
    calib = str(int8_module).replace("q.tforge", "calib.npz")
    args = ("compare", onnx_path, "--int8", "--calib", calib, "--per-layer", "--batch", 2, "--device", "cpu", "-q")
    result = tforge(*args, "--json")
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert doc["precision"] == "int8" and doc["ok"]
    rows = doc["per_layer"]
    assert {r["op"] for r in rows} == {"nn.conv2d", "nn.dense"} and len(rows) == 3
    errors = [r["relative_error"] for r in rows]
    assert errors == sorted(errors, reverse=True) and all(0 < e < 0.1 for e in errors)
    text = tforge(*args)
    assert_ok(text)
    assert "worst first" in text.stdout and rows[0]["layer"] in text.stdout.split("worst first")[1]
    misuse = tforge("compare", onnx_path, "--per-layer", "--device", "cpu", "-q")
    assert misuse.returncode != 0 and "--per-layer goes with --int8 or --fp8" in misuse.stderr
