"""tensorforge.serving.ray_serve: a replica's request handling (here, without Ray), and the deployment itself on a
local Ray instance, run by .venv-serve's Python (tests/serving/ray_serve_check.py; skipped without it or Ray).

The model is conftest.py's tiny one (a float input and integer ids, two outputs, one a value per row; plans for batch
8, saved without the regions' weights); the requests' shapes are read from its signature."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tensorforge
from tensorforge.serving.ray_serve import Runner, request_sizes

CHECK = Path(__file__).with_name("ray_serve_check.py")
SIZES = (1, 3, 2, 5, 1, 4, 11, 2, 7, 1)  # requests' batch sizes; 11 is above the file's batch (8)
MAX_ID = 10  # integer inputs are ids below this (the tiny model embeds 50)


@pytest.fixture(scope="module")
def module(tiny_tforge):
    return tensorforge.load(tiny_tforge, device="cpu")


def make_inputs(runner: Runner, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random inputs of `batch` rows in the module's shapes: floats from a normal, integers as ids."""
    arrays = []
    for spec in runner.inputs:
        shape = (batch, *([] if spec.unit_dim else spec.dims))
        if spec.numpy_dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(spec.numpy_dtype))
        else:
            arrays.append(rng.integers(0, MAX_ID, shape).astype(spec.numpy_dtype))
    return tuple(arrays)


def make_requests(runner: Runner, seed: int = 1, sizes=SIZES) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    return [make_inputs(runner, n, rng) for n in sizes]


def expected(module, inputs, step: int = 8) -> tuple[np.ndarray, ...]:
    """The module's outputs, run directly in slices of at most `step` rows (its plans' batch)."""
    parts = []
    for start in range(0, inputs[0].shape[0], step):
        outs = module(*(torch.from_numpy(a[start : start + step]) for a in inputs))
        parts.append([o.numpy() for o in (outs if isinstance(outs, tuple) else (outs,))])
    return tuple(np.concatenate(p) for p in zip(*parts))


def assert_outputs(got, want) -> None:
    # a request run in a batch of others gives what it gives alone, up to float32 rounding (the GEMM blocks differ)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_runner_batches_requests_and_splits_outputs(module):
    runner = Runner(module)
    assert runner.batchable and runner.max_batch_size == 8  # the saved plans' batch
    requests = [runner.request(r) for r in make_requests(runner) if r[0].shape[0] <= 8]
    results = runner.run_batch(requests)
    for request, result in zip(requests, results):
        assert not isinstance(result, Exception)
        assert_outputs(result, expected(module, request.inputs))
    # runs of at most 8 samples, several requests each
    assert runner.stats["max_samples_per_run"] <= 8 < request_sizes(requests)
    assert runner.stats["max_requests_per_run"] > 1
    assert runner.stats["runs"] < len(requests)


def test_runner_cuts_large_requests(module):
    runner = Runner(module)
    (inputs,) = make_requests(runner, seed=2, sizes=(37,))
    pieces = runner.split(runner.request(inputs))
    assert [p.size for p in pieces] == [8, 8, 8, 8, 5]
    got = tuple(np.concatenate(parts) for parts in zip(*(runner.run([p])[0] for p in pieces)))
    assert_outputs(got, expected(module, inputs))


def test_runner_pads_runs_to_powers_of_two(module):
    runner = Runner(module, pad_batches=True)
    assert runner.warmup() == [1, 2, 4, 8]
    inputs = make_requests(runner)[3]  # 5 samples run as 8
    (result,) = runner.run([runner.request(inputs)])
    assert_outputs(result, expected(module, inputs))


def test_runner_reads_inputs_by_name_and_json(module):
    runner = Runner(module)
    inputs = make_requests(runner)[1]
    names = [s.name for s in runner.inputs]
    by_name = runner.request((), dict(zip(reversed(names), reversed([a.tolist() for a in inputs]))))
    from_json = runner.request_from_json({"inputs": {n: a.tolist() for n, a in zip(names, inputs)}})
    assert by_name.size == from_json.size == 3
    assert [a.dtype for a in from_json.inputs] == [s.numpy_dtype for s in runner.inputs]
    reply = runner.reply_json(runner.run([from_json])[0])
    assert list(reply["outputs"]) == [s.name for s in runner.outputs]
    got = tuple(np.asarray(v, s.numpy_dtype) for v, s in zip(reply["outputs"].values(), runner.outputs))
    assert_outputs(got, expected(module, inputs))


def test_runner_names_the_wrong_input(module):
    runner = Runner(module)
    x, ids = make_requests(runner)[1]  # x: float rows, ids: integer rows, 3 of each
    names = [s.name for s in runner.inputs]
    width = runner.inputs[0].dims[0]
    cases = [
        ((x,), {}, "takes 2 input"),
        ((x, ids[:2]), {}, "batch sizes differ"),
        ((np.zeros((3, width + 1)), ids), {}, f"dimension 1 must be {width}"),
        ((x, ids + 0.5), {}, "cannot be cast"),
        ((x[0], ids[0]), {}, "has 2 dimensions"),
        ((), {names[0]: x, "mask": ids}, f"unknown: ['mask']; missing: ['{names[1]}']"),
        ((x, [[1, 2], [3]]), {}, "not a rectangular array"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            runner.request(args, kwargs)


def test_a_failing_request_fails_alone(module):
    runner = Runner(module)
    good = [runner.request(r) for r in make_requests(runner)[:3]]
    x, ids = make_requests(runner, seed=3, sizes=(2,))[0]
    bad = runner.request((x, ids + 10**6))  # ids outside the embedding: the run fails
    results = runner.run_batch([good[0], bad, good[1], good[2]])
    assert isinstance(results[1], Exception)
    for request, result in zip(good, [results[0], results[2], results[3]]):
        assert_outputs(result, expected(module, request.inputs))


@pytest.fixture(scope="module")
def ray_python(serve_python) -> Path:
    """.venv-serve's Python where Ray Serve imports too (conftest's serve_python checks the Triton side)."""
    probe = subprocess.run([str(serve_python), "-c", "import ray.serve"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        pytest.skip(f"ray[serve] does not import in .venv-serve: {last} (run `bash scripts/setup_serve.sh`)")
    return serve_python


def test_ray_serve_deployment_answers_like_the_module(ray_python, tiny_tforge, module, tmp_path):
    runner = Runner(module)
    requests = make_requests(runner)
    np.savez(tmp_path / "requests.npz", **{f"r{i}_{k}": a for i, r in enumerate(requests) for k, a in enumerate(r)})
    # the file decides the model: no TENSORFORGE_* override of this shell, no PYTHONPATH of .venv's
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORFORGE_") and k != "PYTHONPATH"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    argv = [str(ray_python), str(CHECK), str(tiny_tforge), str(tmp_path / "requests.npz"), str(tmp_path / "out.npz")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    replies = np.load(tmp_path / "out.npz")
    for i, inputs in enumerate(requests):
        want = expected(module, inputs)
        for route in ("handle", "http"):
            got = tuple(replies[f"{route}{i}_{k}"].astype(s.numpy_dtype) for k, s in enumerate(runner.outputs))
            assert_outputs(got, want)
    summary = json.loads((tmp_path / "summary.json").read_text())
    signature = summary["signature"]
    assert signature["max_batch_size"] == 8 and signature["device"] == "cpu"
    assert signature["inputs"] == runner.describe()["inputs"]
    assert summary["http_signature"]["inputs"] == signature["inputs"]
    # the requests were batched: some run served several requests, none more than 8 samples (11 was cut in two)
    assert signature["max_requests_per_run"] > 1
    assert signature["max_samples_per_run"] <= 8
    assert "dimension 1 must be" in summary["wrong_handle"]
    status, body = summary["wrong_http"]
    assert status == 400 and "missing: [" in body["error"]
    print(f"ray: started in {summary['startup_s']} s, answered in {summary['requests_s']} s", file=sys.stderr)
