"""Serving behind Triton Inference Server: `tensorforge serve` (PyTriton) and `tensorforge export-triton` (a model
repository that the tritonserver bundled with nvidia-pytriton serves), each answering HTTP and gRPC clients, and
200 requests from 8 threads, with the outputs of PyTorch eager on the same inputs. Servers and clients run in
.venv-serve (conftest.py); the signature, config.pbtxt, batching core and command-line checks run here."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.export import Dim

import tensorforge as forge
from serving.conftest import MAX_BATCH, Server, example_inputs, free_ports, http_ok, run_client, serving_env
from tensorforge.cli import main as cli_main
from tensorforge.serving import BatchRunner, config_pbtxt, signature_of
from tensorforge.serving.devices import local_gpus, parse_gpus
from tensorforge.serving.triton_backend import RequestError
from tensorforge.serving.triton_repository import MODEL_PY

N_REQUESTS = 200
ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
THREADS = 8


def make_requests(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` requests of batch 1 to 4."""
    g = torch.Generator().manual_seed(seed)
    return [example_inputs(int(torch.randint(1, 5, (1,), generator=g)), seed=seed * 1000 + i) for i in range(n)]


def save_requests(path: Path, requests, input_names: list[str]) -> Path:
    np.savez(path, **{f"{i}/{name}": t.numpy() for i, r in enumerate(requests) for name, t in zip(input_names, r)})
    return path


def assert_outputs_match_eager(model, requests, out_path: Path, output_names: list[str]) -> None:
    got = np.load(out_path)
    assert len(got.files) == len(requests) * len(output_names)  # every request answered, every output
    with torch.no_grad():
        for i, request in enumerate(requests):
            for name, want in zip(output_names, model(*request)):
                g = got[f"{i}/{name}"]
                assert g.shape[0] == want.shape[0], (i, name, g.shape, want.shape)
                np.testing.assert_allclose(g.reshape(want.shape), want.numpy(), rtol=1e-4, atol=1e-5)


def metric(text: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    assert found, f"no {name} for {model} in the metrics"
    return float(found.group(1))


def fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def tiny_signature(tiny_tforge):
    return signature_of(forge.load(tiny_tforge, device="cpu"))


# -- the signature and the repository, here ---------------------------------------------------------


def test_signature_of_the_tiny_model(tiny_signature):
    sig = tiny_signature
    assert sig.batching and sig.max_batch_size == MAX_BATCH and sig.preferred_batch_sizes == (MAX_BATCH,)
    assert [(s.name, s.triton_dtype, s.dims) for s in sig.inputs] == [("x", "FP32", (16,)), ("ids", "INT64", (4,))]
    assert [(s.triton_dtype, s.dims, s.unit_dim) for s in sig.outputs] == [("FP32", (4,), False), ("FP32", (1,), True)]


def test_signature_dynamic_dims_unbatched_models_and_limits(tiny_tforge):
    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(8, 4)

        def forward(self, x):
            h = self.a(x)
            return h, h.mean(dim=1)

    dims = {"x": {0: Dim("batch", min=1, max=16), 1: Dim("seq", min=2, max=64)}}
    seq = forge.compile(Seq().eval(), (torch.randn(2, 6, 8),), device="cpu", dynamic_shapes=dims)
    sig = signature_of(seq)
    assert [s.dims for s in sig.inputs] == [(-1, 8)] and [s.dims for s in sig.outputs] == [(-1, 4), (4,)]
    assert sig.max_batch_size == 16  # the batch range the model declared
    with pytest.raises(ValueError, match="declares batch sizes up to 16"):
        signature_of(seq, max_batch_size=32)
    text = config_pbtxt("seq", sig)
    assert "dims: [ -1, 8 ]" in text and "max_batch_size: 16" in text
    assert "preferred_batch_size" not in text  # no plan built yet: no batch size to prefer

    class Total(torch.nn.Module):
        def forward(self, x):
            return (x * 2).sum()

    total = signature_of(forge.compile(Total(), (torch.randn(2, 3),), device="cpu"))
    assert not total.batching and total.max_batch_size == 0
    assert total.inputs[0].dims == (-1, 3) and total.outputs[0].dims == (1,)
    text = config_pbtxt("total", total, kind="cpu")
    assert "max_batch_size: 0" in text and "dynamic_batching" not in text and "dims: [ -1, 3 ]" in text

    loaded = forge.load(tiny_tforge, device="cpu")  # saved without its regions' weights: no plan above 8
    with pytest.raises(ValueError, match="rebuildable=True"):
        signature_of(loaded, max_batch_size=MAX_BATCH * 2)
    assert signature_of(loaded, max_batch_size=4).preferred_batch_sizes == ()  # the plan's 8 is above 4


def test_export_triton_writes_a_repository(tiny_tforge, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert cli_main(["export-triton", str(tiny_tforge), str(repo), "--instances", "3"]) == 0
    assert "tritonserver --model-repository" in capsys.readouterr().out
    config = (repo / "tiny" / "config.pbtxt").read_text()
    for line in (
        'name: "tiny"',
        'backend: "python"',
        f"max_batch_size: {MAX_BATCH}",
        'name: "x"',
        "data_type: TYPE_FP32",
        "dims: [ 16 ]",
        'name: "ids"',
        "data_type: TYPE_INT64",
        "dims: [ 4 ]",
        "dynamic_batching {",
        f"preferred_batch_size: [ {MAX_BATCH} ]",
        "max_queue_delay_microseconds: 100",
        "count: 3",
        "kind: KIND_GPU",
        'key: "FORCE_CPU_ONLY_INPUT_TENSORS"',
        'value: { string_value: "no" }',
    ):
        assert line in config, line
    assert (repo / "tiny" / "1" / "model.tforge").read_bytes() == tiny_tforge.read_bytes()
    model_py = (repo / "tiny" / "1" / "model.py").read_text()
    assert model_py == MODEL_PY and "triton_backend.load_model" in model_py
    assert not re.search(r"\b(eval|exec|pickle|__import__)\b", model_py)

    assert cli_main(["export-triton", str(tiny_tforge), str(repo), "--kind", "cpu", "--name", "cpu_model"]) == 0
    config = (repo / "cpu_model" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in config and "count: 1" in config and "FORCE_CPU_ONLY_INPUT_TENSORS" not in config
    assert (repo / "tiny" / "config.pbtxt").exists()  # other models of the repository left alone

    # several GPUs: count instances on each GPU listed (no list: Triton's default, every GPU it sees)
    assert "gpus:" not in (repo / "tiny" / "config.pbtxt").read_text()
    assert (
        cli_main(["export-triton", str(tiny_tforge), str(repo), "--gpus", "1,0", "--name", "two", "--instances", "2"])
        == 0
    )
    config = (repo / "two" / "config.pbtxt").read_text()
    assert "count: 2" in config and "gpus: [ 0, 1 ]" in config and "kind: KIND_GPU" in config
    assert cli_main(["export-triton", str(tiny_tforge), str(repo), "--gpus", "all", "--name", "every"]) == 0
    assert "gpus:" not in (repo / "every" / "config.pbtxt").read_text()


def test_gpu_lists():
    assert parse_gpus(None) is None and parse_gpus("all") == parse_gpus(" ALL ") == "all"
    assert parse_gpus("2, 0,1") == parse_gpus([1, 2, 0]) == (0, 1, 2)
    for bad, message in [
        ("", "expected 'all' or comma-separated GPU indices"),
        ("0,x", "expected 'all' or comma-separated GPU indices"),
        ("-1", "expected 'all' or comma-separated GPU indices"),
        ("0,0", "listed twice"),
        ([], "expected GPU indices"),
        ([True], "expected GPU indices"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_gpus(bad)
    assert local_gpus(None) is None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="this machine has no CUDA GPU"):
            local_gpus("all")
    else:
        assert local_gpus("all") == tuple(range(torch.cuda.device_count()))
        with pytest.raises(ValueError, match=f"GPU {torch.cuda.device_count()} does not exist here"):
            local_gpus([torch.cuda.device_count()])


def test_batch_runner_pads_to_powers_of_two(tiny_model, tiny_tforge):
    """Padding (on by default on CUDA) runs the module at a few batch sizes, so CUDA graphs are captured once, at
    warm-up: 3 requests' rows run as one batch of the next power of two, each request answered with its own rows."""
    module = forge.load(tiny_tforge, device="cpu")
    runner = BatchRunner(module, pad_batches=True)
    assert not BatchRunner(module).pad_batches  # the CPU default
    limit = runner.signature.max_batch_size
    assert runner.warmup() == sorted({min(1 << (n - 1).bit_length(), limit) for n in range(1, limit + 1)})
    ran = []
    context = runner.context
    runner.context = lambda *xs: (ran.append(xs[0].shape[0]), context(*xs))[1]
    requests = make_requests(3)  # batches of 1 to 4 rows each
    sizes = [x.shape[0] for x, _ in requests]
    results = runner.run([{"x": x, "ids": ids} for x, ids in requests])
    assert ran == [min(1 << (sum(sizes) - 1).bit_length(), limit)]
    with torch.no_grad():
        for (x, ids), outs in zip(requests, results):
            assert not isinstance(outs, RequestError)
            want = tiny_model(x, ids)
            torch.testing.assert_close(outs[0], want[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(outs[1][:, 0], want[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_GPU)])
def test_batch_runner_host_outputs(tiny_model, tiny_tforge, device):
    """host_outputs (what every server asks for): each output of a run comes to host memory in one copy and is
    split there, every request still answered with its own rows, from a GPU as from the CPU."""
    module = forge.load(tiny_tforge, device=device)
    runner = BatchRunner(module, host_outputs=True)
    requests = make_requests(4, seed=3)
    results = runner.run([{"x": x.to(device), "ids": ids.to(device)} for x, ids in requests])
    direct = BatchRunner(module).run([{"x": x.to(device), "ids": ids.to(device)} for x, ids in requests])
    with torch.no_grad():
        for (x, ids), outs, same in zip(requests, results, direct):
            assert not isinstance(outs, RequestError) and not isinstance(same, RequestError)
            assert all(t.device.type == "cpu" for t in outs)
            assert [t.device.type for t in same] == [device] * len(same)  # without it, outputs stay where they are
            want = tiny_model(x, ids)
            torch.testing.assert_close(outs[0], want[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(outs[1][:, 0], want[1], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(outs[0], same[0].cpu(), rtol=0, atol=0)


def test_batch_runner_batches_splits_and_isolates_errors(tiny_model, tiny_tforge):
    module = forge.load(tiny_tforge, device="cpu")
    runner = BatchRunner(module)
    requests = make_requests(5)
    sig = runner.signature
    as_triton = [{"x": x, "ids": ids} for x, ids in requests]
    bad = {"x": torch.randn(2, 16), "ids": torch.zeros(3, 4, dtype=torch.int64)}  # batches disagree
    missing = {"x": torch.randn(1, 16)}
    results = runner.run([*as_triton[:2], bad, *as_triton[2:], missing])
    assert isinstance(results[2], RequestError) and "batch 3" in str(results[2])
    assert isinstance(results[-1], RequestError) and "no input 'ids'" in str(results[-1])
    answered = [r for i, r in enumerate(results) if i not in (2, len(results) - 1)]
    with torch.no_grad():
        for (x, ids), outs in zip(requests, answered):
            assert not isinstance(outs, RequestError)
            want = tiny_model(x, ids)
            torch.testing.assert_close(outs[0], want[0], rtol=1e-4, atol=1e-5)
            assert outs[1].shape == (x.shape[0], 1)  # Triton's trailing dim of 1
            torch.testing.assert_close(outs[1][:, 0], want[1], rtol=1e-4, atol=1e-5)
    assert [s.name for s in sig.inputs] == ["x", "ids"]

    # a batch the module refuses (above its saved plans) fails alone; the request batched with it is answered
    big = {"x": torch.randn(MAX_BATCH + 1, 16), "ids": torch.zeros(MAX_BATCH + 1, 4, dtype=torch.int64)}
    small = as_triton[0]
    first, second = runner.run([small, big])
    assert not isinstance(first, RequestError)
    assert isinstance(second, RequestError) and "batch" in str(second)


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def is_cpu(self):
        return True

    def as_numpy(self):
        view = self.array.view()
        view.flags.writeable = False  # as Triton's shared memory is
        return view


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def fake_pb_utils():
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = FakeTensor
    pb.InferenceResponse = FakeResponse
    pb.TritonError = lambda message: message
    pb.get_input_tensor_by_name = lambda request, name: request.get(name)
    return pb


def test_generated_model_py_runs_with_a_stand_in_python_backend(tiny_model, tiny_tforge, tmp_path, monkeypatch):
    target = forge.export_triton(tiny_tforge, tmp_path, name="tiny", kind="cpu")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("exported_model", target / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    model = exported.TritonPythonModel()
    config = {
        "max_batch_size": MAX_BATCH,
        "input": [{"name": "x"}, {"name": "ids"}],
        "output": [{"name": s.name} for s in signature_of(forge.load(tiny_tforge, device="cpu")).outputs],
        "parameters": {"TFORGE_FILE": {"string_value": "model.tforge"}},
    }
    model.initialize({"model_config": json.dumps(config), "model_instance_kind": "CPU"})
    requests = make_requests(3)
    responses = model.execute(
        [{"x": FakeTensor("x", x.numpy()), "ids": FakeTensor("ids", ids.numpy())} for x, ids in requests]
        + [{"x": FakeTensor("x", np.zeros((1, 16), np.float32))}]
    )
    with torch.no_grad():
        for (x, ids), response in zip(requests, responses):
            assert response.error is None
            want = tiny_model(x, ids)
            np.testing.assert_allclose(response.output_tensors[0].array, want[0].numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(response.output_tensors[1].array[:, 0], want[1].numpy(), rtol=1e-4, atol=1e-5)
    assert "no input 'ids'" in responses[-1].error
    model.finalize()

    config["parameters"]["TFORGE_FILE"]["string_value"] = "../elsewhere.tforge"  # a file name, never a path
    with pytest.raises(ValueError, match="file name beside model.py"):
        exported.TritonPythonModel().initialize({"model_config": json.dumps(config), "model_instance_kind": "CPU"})


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = cli_main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_argument_errors_are_clear(tiny_tforge, tmp_path, capsys):
    plan, repo = str(tiny_tforge), str(tmp_path / "repo")
    code, err = run_cli(capsys, "export-triton", plan, repo, "--kind", "tpu")
    assert code == 2 and "invalid choice: 'tpu'" in err
    code, err = run_cli(capsys, "export-triton", plan, repo, "--instances", "0")
    assert code == 2 and "--instances: must be >= 1, got 0" in err
    code, err = run_cli(capsys, "export-triton", plan, repo, "--max-batch-size", "64")
    assert code == 1 and "max_batch_size 64 is above what this module can run" in err and "rebuildable" in err
    code, err = run_cli(capsys, "export-triton", plan, repo, "--name", "a/b")
    assert code == 1 and "model name 'a/b'" in err
    assert run_cli(capsys, "export-triton", plan, repo)[0] == 0
    code, err = run_cli(capsys, "export-triton", plan, repo)
    assert code == 1 and "exists" in err and "--force" in err
    assert run_cli(capsys, "export-triton", plan, repo, "--force")[0] == 0
    code, err = run_cli(capsys, "export-triton", str(tmp_path / "missing.tforge"), repo)
    assert code == 1 and "no such file" in err
    code, err = run_cli(capsys, "serve", plan, "--http-port", "0")
    assert code == 2 and "--http-port: must be from 1 to 65535, got 0" in err
    code, err = run_cli(capsys, "serve", plan, "--http-port", "9000", "--grpc-port", "9000")
    assert code == 1 and "must differ" in err
    code, err = run_cli(capsys, "serve", str(tmp_path / "missing.tforge"))
    assert code == 1 and "no such file" in err
    code, err = run_cli(capsys, "serve", plan, "--gpus", "0,,1")
    assert code == 2 and "--gpus: GPUs '0,,1': expected 'all' or comma-separated GPU indices" in err
    code, err = run_cli(capsys, "serve", plan, "--gpus", "0", "--device", "cpu")
    assert code == 1 and "give one" in err
    code, err = run_cli(capsys, "export-triton", plan, repo, "--gpus", "0", "--kind", "cpu", "--force")
    assert code == 1 and "go with instance kind gpu, not cpu" in err
    if not torch.cuda.is_available():
        code, err = run_cli(capsys, "serve", plan, "--gpus", "all")
        assert code == 1 and "no CUDA GPU" in err
    for line in err.splitlines():
        assert line.startswith("tensorforge: error: ")


def test_tensorforge_imports_without_the_serving_packages():
    """`import tensorforge` (and tensorforge.serving) never imports PyTriton or tritonclient; serving without them
    says what to install."""
    code = (
        "import sys, tensorforge, tensorforge.serving\n"
        "assert callable(tensorforge.serve) and callable(tensorforge.export_triton)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytriton', 'tritonclient', 'ray')))\n"
        "try:\n"
        "    import pytriton\n"
        "except ImportError:\n"
        "    try:\n"
        "        tensorforge.serve(None)\n"
        "    except RuntimeError as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    if len(lines) > 1:  # this Python has no PyTriton
        assert "nvidia-pytriton" in lines[1] and "setup_serve.sh" in lines[1]


# -- tensorforge serve (PyTriton or tritonserver), in .venv-serve ---------------------------------------------------


@pytest.fixture(scope="module", params=["pytriton", "tritonserver"])
def cli_server(request, serve_python, tiny_tforge, tmp_path_factory):
    """`tensorforge serve` through PyTriton, and with --server tritonserver (the plan exported to a repository and
    served by the bundled tritonserver): the same tests hold for both."""
    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    argv = [str(serve_python), "-m", "tensorforge", "serve", str(tiny_tforge), "--instances", "2"]
    argv += ["--server", request.param]
    argv += ["--max-queue-delay-us", "2000", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    argv += ["--metrics-port", str(metrics_port)]
    server = Server(argv, serving_env(), log, http_port, "tiny")
    server.grpc = f"127.0.0.1:{grpc_port}"
    server.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_serve_answers_http_and_grpc_like_eager(cli_server, serve_python, tiny_model, tiny_signature, tmp_path):
    """200 requests of batch 1-4 from 8 threads, half over HTTP and half over gRPC: every one answered, as eager."""
    requests = make_requests(N_REQUESTS)
    inputs = save_requests(tmp_path / "requests.npz", requests, ["x", "ids"])
    out, config_out = tmp_path / "out.npz", tmp_path / "config.json"
    args = ["client", "--http", cli_server.url.removeprefix("http://"), "--grpc", cli_server.grpc, "--model", "tiny"]
    args += ["--requests", str(inputs), "--out", str(out), "--config-out", str(config_out), "--threads", str(THREADS)]
    run_client(serve_python, *args)
    assert_outputs_match_eager(tiny_model, requests, out, [s.name for s in tiny_signature.outputs])

    config = json.loads(config_out.read_text())
    assert config["max_batch_size"] == MAX_BATCH
    assert config["dynamic_batching"]["preferred_batch_size"] == [MAX_BATCH]
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    assert sum(group["count"] for group in config["instance_group"]) == 2
    assert "restricted" in config["shared_memory_refused"]  # without --shared-memory
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("x", "TYPE_FP32", [16]),
        ("ids", "TYPE_INT64", [4]),
    ]
    metrics = fetch(cli_server.metrics)
    requests_done = metric(metrics, "nv_inference_request_success", "tiny")
    executions = metric(metrics, "nv_inference_exec_count", "tiny")
    assert requests_done >= N_REQUESTS
    assert executions < requests_done  # the dynamic batcher ran several requests together


def test_serve_stops_cleanly_on_sigterm(cli_server):
    assert "serving 'tiny' at" in cli_server.tail()
    start = time.monotonic()
    assert cli_server.terminate() == 0, cli_server.tail()
    assert time.monotonic() - start < 30
    assert "stopped" in cli_server.tail(5)
    assert not http_ok(f"{cli_server.url}/v2/health/live")


def test_serve_api_handle(serve_python, tiny_tforge, tmp_path):
    """tensorforge.serve(module, block=False, shared_memory=True): a handle that is ready, answers over HTTP and
    gRPC as the module does in-process (also from a system shared-memory region), has a context per instance, and
    is no longer ready once stopped."""
    inputs = save_requests(tmp_path / "requests.npz", make_requests(4), ["x", "ids"])
    http_port, grpc_port = free_ports(2)
    args = ["api", "--tforge", str(tiny_tforge), "--requests", str(inputs), "--ports", f"{http_port},{grpc_port}"]
    report = json.loads(run_client(serve_python, *args).stdout.strip().splitlines()[-1])
    assert report["ready"] and report["url"] == f"http://127.0.0.1:{http_port}"
    assert report["grpc_url"] == f"127.0.0.1:{grpc_port}"
    assert report["contexts"] == 2
    assert report["errors"] == []
    assert report["shared_memory_errors"] == []  # serve(shared_memory=True): inputs read from a region
    assert report["ready_after_stop"] is False and "stopped" in report["repr"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_serve_on_every_gpu(serve_python, tiny_model, tmp_path):
    """serve(path, gpus="all"): two instances on each GPU, each with a context of the module loaded on its GPU, every
    answer (HTTP, gRPC, shared memory) equal to the plan's own on GPU 0 (a plan serves identical GPUs unchanged)."""
    module = forge.compile(tiny_model, example_inputs(2), device="cuda", precision="fp32-strict")
    module.build_all(MAX_BATCH)
    plan = tmp_path / "tiny_gpu.tforge"
    module.save(plan)
    inputs = save_requests(tmp_path / "requests.npz", make_requests(4), ["x", "ids"])
    http_port, grpc_port = free_ports(2)
    args = ["api", "--tforge", str(plan), "--requests", str(inputs), "--ports", f"{http_port},{grpc_port}"]
    report = json.loads(run_client(serve_python, *args, "--gpus", "all").stdout.strip().splitlines()[-1])
    gpus = torch.cuda.device_count()
    assert report["devices"] == [f"cuda:{i}" for i in range(gpus)]
    assert report["contexts"] == 2 * gpus
    assert report["errors"] == [] and report["shared_memory_errors"] == []


# -- export-triton, served by the bundled tritonserver ----------------------------------------------


@pytest.fixture(scope="module", params=["cpu", pytest.param("gpu", marks=ON_GPU)])
def exported_server(request, serve_python, tiny_model, tiny_tforge, tmp_path_factory):
    """The exported repository in the bundled tritonserver: KIND_CPU instances, or on a GPU KIND_GPU ones (each
    instance loads the plans on its GPU; the tiny plans were built on the CPU, so it is exported rebuildable)."""
    kind = request.param
    root = tmp_path_factory.mktemp("triton")
    repo = root / "repo"
    plan = tiny_tforge
    if kind == "gpu":
        module = forge.compile(tiny_model, example_inputs(2), device="cuda", precision="fp32-strict")
        module.build_all(MAX_BATCH)
        plan = root / "tiny.tforge"
        module.save(plan)
    assert cli_main(["export-triton", str(plan), str(repo), "--kind", kind, "--instances", "2"]) == 0
    http_port, grpc_port, metrics_port = free_ports(3)
    code = (
        "import json, sys\n"
        "from tensorforge.serving import bundled_tritonserver\n"
        f"argv, env = bundled_tritonserver({str(repo)!r}, {str(root)!r}, http_port={http_port}, "
        f"grpc_port={grpc_port}, metrics_port={metrics_port}, extra_args=('--exit-timeout-secs=10',))\n"
        "print(json.dumps([argv, env]))\n"
    )
    result = subprocess.run(
        [str(serve_python), "-c", code], capture_output=True, text=True, timeout=120, env=serving_env()
    )
    assert result.returncode == 0, result.stderr
    argv, env = json.loads(result.stdout)
    server = Server(argv, env, root / "tritonserver.log", http_port, "tiny")
    server.grpc = f"127.0.0.1:{grpc_port}"
    server.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    server.kind = kind
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_exported_repository_serves_in_bundled_tritonserver(
    exported_server, serve_python, tiny_model, tiny_signature, tmp_path
):
    requests = make_requests(N_REQUESTS, seed=2)
    inputs = save_requests(tmp_path / "requests.npz", requests, ["x", "ids"])
    out, config_out = tmp_path / "out.npz", tmp_path / "config.json"
    args = ["client", "--http", exported_server.url.removeprefix("http://"), "--grpc", exported_server.grpc]
    args += ["--model", "tiny", "--requests", str(inputs), "--out", str(out), "--config-out", str(config_out)]
    run_client(serve_python, *args, "--threads", str(THREADS))
    assert_outputs_match_eager(tiny_model, requests, out, [s.name for s in tiny_signature.outputs])
    config = json.loads(config_out.read_text())
    assert config["backend"] == "python" and config["max_batch_size"] == MAX_BATCH
    group = config["instance_group"][0]
    assert group["kind"] == f"KIND_{exported_server.kind.upper()}" and group["count"] == 2
    assert config["dynamic_batching"]["preferred_batch_size"] == [MAX_BATCH]
    metrics = fetch(exported_server.metrics)
    assert metric(metrics, "nv_inference_request_success", "tiny") >= N_REQUESTS
    assert metric(metrics, "nv_inference_request_failure", "tiny") == 0
    assert exported_server.terminate() == 0, exported_server.tail()
