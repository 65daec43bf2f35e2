"""The command line on a zoo model, through subprocesses: build -> inspect -> run -> bench, and compare.

bert-tiny at sequence length 8 keeps every command to a few seconds; resnet18 at 32x32 covers the vision side.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from cli.conftest import assert_ok, tforge

pytest.importorskip("transformers")
pytest.importorskip("torchvision")

SEQ_LEN = 8


@pytest.fixture(scope="module")
def bert_plan(tmp_path_factory):
    """`tensorforge build bert-tiny ... --json` once for the module: (path of the .tforge, the JSON summary). Saved
    --rebuildable: `run` then meets a batch above the plan's and builds a larger one from the regions' weights."""
    path = tmp_path_factory.mktemp("bert") / "bert-tiny.tforge"
    result = tforge(
        "build",
        "bert-tiny",
        "--seq-len",
        SEQ_LEN,
        "--batch",
        2,
        "--device",
        "cpu",
        "-o",
        path,
        "--json",
        "--rebuildable",
    )
    assert_ok(result)
    return str(path), json.loads(result.stdout)


def test_build_writes_the_module_and_summarizes_it(bert_plan):
    path, summary = bert_plan
    assert summary["output"] == path and summary["file_bytes"] > 0
    assert summary["model"] == "bert-tiny" and summary["batch"] == 2 and summary["precision"] == "fp32"
    assert summary["regions"] >= 1 and summary["fallback_nodes"] == 0  # BERT goes to the engine whole
    assert summary["offloaded_nodes"] == summary["total_nodes"]
    plan = summary["plans"][0]
    assert plan["max_batch"] == 2 and plan["layers"] > 10 and plan["arena_bytes"] > 0


def test_inspect_json_lists_regions_plans_and_layers(bert_plan):
    path, summary = bert_plan
    result = tforge("inspect", path, "--json", "--device", "cpu")
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert [i["name"] for i in doc["inputs"]] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in doc["outputs"]] == ["last_hidden_state", "pooler_output"]
    assert doc["batch"] == 2 and doc["macs"] > 0 and doc["flops"] == 2 * doc["macs"]
    assert doc["fallback"] == {} and doc["fallback_nodes"] == 0
    (region,) = doc["regions"]
    assert region["nodes"] == summary["total_nodes"] and region["macs"] > 0
    (plan,) = region["plans"]
    assert plan["max_batch"] == 2 and plan["arena_bytes"] == summary["plans"][0]["arena_bytes"]
    assert plan["layers_count"] == len(plan["layers"]) == summary["plans"][0]["layers"]
    assert plan["macs"] == sum(layer["macs"] for layer in plan["layers"]) > 0
    assert all(layer["tactic"] and layer["precision"] for layer in plan["layers"])
    assert {"engine.dense", "nn.scaled_dot_product_attention"} <= {layer["op"] for layer in plan["layers"]}


def test_inspect_text(bert_plan):
    path, _ = bert_plan
    result = tforge("inspect", path, "--layers", 3, "--device", "cpu")
    assert_ok(result)
    out = result.stdout
    assert "regions (1):" in out and "plan: max batch 2, fp32" in out and "arena" in out
    assert "layer" in out and "tactic" in out and "precision" in out and "more layers" in out
    assert "stayed in PyTorch: nothing" in out


def test_run_npz_writes_outputs_that_match_eager(bert_plan, tmp_path):
    from tensorforge import models

    path, _ = bert_plan
    zoo = models.get("bert-tiny", seq_len=SEQ_LEN)
    ids, mask = zoo.inputs(3)  # batch 3: beyond the plan's 2, so the module builds a larger plan
    np.savez(tmp_path / "in.npz", input_ids=ids.numpy(), attention_mask=mask.numpy().astype(np.int32))
    result = tforge("run", path, "--input", tmp_path / "in.npz", "--output", tmp_path / "out.npz", "--device", "cpu")
    assert_ok(result)
    assert "last_hidden_state: float32 (3, 8, 128)" in result.stdout and "std" in result.stdout
    with np.load(tmp_path / "out.npz") as out, torch.no_grad():
        assert sorted(out.files) == ["last_hidden_state", "pooler_output"]
        expected = zoo.model(ids, mask)  # same seed, same weights as the process that built the plan
        for name in out.files:
            actual, want = torch.from_numpy(out[name]), expected[name]
            assert actual.shape == want.shape
            assert (actual - want).abs().max() / want.abs().max() <= 1e-4
    again = tforge("run", path, "--input", tmp_path / "in.npz", "--json", "--device", "cpu")
    assert_ok(again)
    stats = json.loads(again.stdout)["outputs"]
    with np.load(tmp_path / "out.npz") as out:
        for name, row in stats.items():
            assert row["shape"] == list(out[name].shape)
            assert row["mean"] == pytest.approx(float(out[name].astype(np.float64).mean()), abs=1e-6)


def test_bench_plan_json(bert_plan):
    path, _ = bert_plan
    result = tforge("bench", path, "--batch", 2, "--iters", 5, "--warmup", 1, "--json", "--device", "cpu")
    assert_ok(result)
    doc = json.loads(result.stdout)
    row = doc["methods"]["tensorforge"]
    assert doc["batch"] == 2 and doc["timer"] == "perf_counter" and doc["peak_memory"] == "n/a"
    assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["throughput_per_s"] == pytest.approx(2 * 1e3 / row["p50_ms"])
    assert row["peak_memory_bytes"] is None and row["load_s"] > 0 and doc["speedup"] == {}


def test_compare_zoo_model_with_eager():
    result = tforge("compare", "bert-tiny", "--seq-len", SEQ_LEN, "--batch", 2, "--json", "--device", "cpu", "-q")
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["tolerance"] == 1e-4 and doc["reference"].startswith("pytorch eager")
    assert set(doc["outputs"]) == {"last_hidden_state", "pooler_output"}
    for row in doc["outputs"].values():
        assert row["max_rel"] <= 1e-4 and row["cosine"] > 0.9999 and row["ok"]


def test_bench_model_against_eager_vision():
    result = tforge(
        "bench",
        "resnet18",
        "--image-size",
        32,
        "--batch",
        2,
        "--iters",
        3,
        "--warmup",
        1,
        "--compare",
        "eager",
        "--json",
        "--device",
        "cpu",
        "-q",
    )
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert set(doc["methods"]) == {"tensorforge", "eager"}
    assert doc["methods"]["tensorforge"]["build_s"] > 0
    assert doc["speedup"]["eager"] == pytest.approx(
        doc["methods"]["eager"]["p50_ms"] / doc["methods"]["tensorforge"]["p50_ms"]
    )


def test_models_lists_the_zoo():
    result = tforge("models", "--json")
    assert_ok(result)
    names = [m["name"] for m in json.loads(result.stdout)]
    assert {"resnet50", "mobilenet_v2", "vit_b_16", "bert-base", "bert-tiny"} <= set(names)


def test_console_script_is_installed():
    """`pip install` puts a `tensorforge` command beside the interpreter ([project.scripts])."""
    script = pathlib.Path(sys.executable).parent / "tensorforge"
    assert script.exists(), f"{script} missing: reinstall tensorforge (pip install -e .)"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert_ok(result)
    assert result.stdout.startswith("tensorforge ")
