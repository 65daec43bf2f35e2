"""Serving tests: the servers and their clients run in .venv-serve (scripts/setup_serve.sh), launched as
subprocesses from the main test run, which stays in .venv. Without .venv-serve, or where its serving packages do
not import, the tests that need them skip and say why.

Fixtures are cheap: one tiny model (an MLP over a float input and integer ids, two outputs, one of them a value per
row) compiled on the CPU once per session, plans built for batch 8, saved without its regions' weights.

This file is also the client the tests run in .venv-serve (`python conftest.py client|api ...`, see `client_main`):
tritonclient over HTTP and gRPC from several threads, and `tensorforge.serve(block=False)` driven from Python.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tensorforge.serving.net import free_ports, http_ok  # noqa: F401 - the tests import them from here

REPO = Path(__file__).resolve().parents[2]
# the Python with the `serve` extra: .venv-serve, or another one named by TENSORFORGE_SERVE_PYTHON
SERVE_PYTHON = Path(os.environ.get("TENSORFORGE_SERVE_PYTHON") or REPO / ".venv-serve" / "bin" / "python")
MAX_BATCH = 8
STARTUP_TIMEOUT_S = 90
ENV_OVERRIDES = (
    "TENSORFORGE_USE_FP16",
    "TENSORFORGE_CACHE_DIR",
    "TENSORFORGE_MAX_WORKSPACE_SIZE",
    "TENSORFORGE_MULTI_ENGINE",
)


class TinyServed(torch.nn.Module):
    """x: f32[batch, 16], ids: i64[batch, 4] -> (f32[batch, 4], f32[batch]): linear layers and an embedding."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 4)
        self.emb = torch.nn.Embedding(50, 4)

    def forward(self, x, ids):
        h = self.b(torch.relu(self.a(x))) + self.emb(ids).mean(dim=1)
        return h, h.sum(dim=-1)


def example_inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, generator=g), torch.randint(0, 50, (batch, 4), generator=g)


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return TinyServed().eval()


@pytest.fixture(scope="session")
def tiny_tforge(tiny_model, tmp_path_factory) -> Path:
    import tensorforge as forge

    module = forge.compile(tiny_model, example_inputs(2), device="cpu")
    module.build_all(MAX_BATCH)
    path = tmp_path_factory.mktemp("served") / "tiny.tforge"
    module.save(path)
    return path


def serving_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES}


@pytest.fixture(scope="session")
def serve_python() -> Path:
    """.venv-serve's Python, where PyTriton, tritonclient and tensorforge import; skips the test otherwise."""
    if not SERVE_PYTHON.exists():
        pytest.skip(f"{SERVE_PYTHON} is missing: `bash scripts/setup_serve.sh` makes .venv-serve")
    check = subprocess.run(
        [str(SERVE_PYTHON), "-c", "import pytriton.triton, tritonclient.http, tritonclient.grpc, tensorforge"],
        capture_output=True,
        text=True,
        timeout=120,
        env=serving_env(),
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["(no message)"])[-1]
        pytest.skip(f"the serving packages do not import in {SERVE_PYTHON}: {last} (`bash scripts/setup_serve.sh`)")
    return SERVE_PYTHON


class Server:
    """A server process (tensorforge serve, or tritonserver) in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, http_port: int, model: str):
        self.log = log
        self.url = f"http://127.0.0.1:{http_port}"
        self.model = model
        self._out = open(log, "w")  # closed in stop()
        self.process = subprocess.Popen(
            argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not (http_ok(f"{self.url}/v2/health/ready") and http_ok(f"{self.url}/v2/models/{self.model}/ready")):
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server was not ready after {timeout_s} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, lines: int = 60) -> str:
        if not self._out.closed:
            self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM to the server itself (as a process manager sends it); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        """Whatever state it is in: the whole process group killed, the log closed."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)
        else:  # tritonserver's Python-backend stubs may outlive a server killed by a signal
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._out.closed:
            self._out.close()


def run_client(python: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """This file as a client script in .venv-serve (`client_main`): `args` start with its mode, client or api."""
    result = subprocess.run(
        [str(python), str(Path(__file__)), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=serving_env(),
    )
    assert result.returncode == 0, f"client exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


# -- the client, run in .venv-serve -----------------------------------------------------------------


def _infer(client, protocol, model: str, arrays: dict, datatypes: dict, outputs: list[str]) -> dict:
    inputs = []
    for name, array in arrays.items():
        tensor = protocol.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return {name: result.as_numpy(name) for name in outputs}


def _shared_memory_request(handle, request: dict, module) -> list[str]:
    """One request whose inputs the server reads from a system shared-memory region (serve(shared_memory=True)),
    over gRPC: its outputs against the module's; the differences found."""
    import numpy as np
    import tritonclient.grpc as tgrpc
    import tritonclient.utils.shared_memory as shm

    specs = handle.signature.inputs
    arrays = [np.ascontiguousarray(request[s.name]) for s in specs]
    name, key, size = "api_inputs", f"/api_inputs_{os.getpid()}", sum(a.nbytes for a in arrays)
    region = shm.create_shared_memory_region(name, key, size)
    client = tgrpc.InferenceServerClient(handle.grpc_url)
    try:
        client.register_system_shared_memory(name, key, size)
        inputs, offset = [], 0
        for spec, array in zip(specs, arrays):
            shm.set_shared_memory_region(region, [array], offset=offset)
            tensor = tgrpc.InferInput(spec.name, list(array.shape), spec.triton_dtype)
            tensor.set_shared_memory(name, array.nbytes, offset=offset)
            inputs.append(tensor)
            offset += array.nbytes
        result = client.infer("api", inputs)
        client.unregister_system_shared_memory(name)
        with torch.no_grad():
            want = module(*(torch.from_numpy(a) for a in arrays))
        errors = []
        for spec, w in zip(handle.signature.outputs, want):
            w = w.cpu()
            got = result.as_numpy(spec.name).reshape(w.shape)
            if not np.allclose(got, w.numpy(), rtol=1e-6, atol=1e-6):
                errors.append(f"{spec.name}: {np.abs(got - w.numpy()).max()}")
        return errors
    except Exception as exc:  # noqa: BLE001 - the report says what failed
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        client.close()
        shm.destroy_shared_memory_region(region)


def _refused_shared_memory(url: str) -> str | None:
    """The server's answer to registering a shared-memory region (None where it accepted it)."""
    import tritonclient.grpc as tgrpc

    client = tgrpc.InferenceServerClient(url)
    try:
        client.register_system_shared_memory("refused", "/refused_region", 64)
    except Exception as exc:  # noqa: BLE001 - the refusal is the answer
        return str(exc)
    finally:
        client.close()
    return None


def _requests(path: str) -> list[dict]:
    import numpy as np

    data = np.load(path)
    out: dict[int, dict] = {}
    for key in data.files:
        index, name = key.split("/", 1)
        out.setdefault(int(index), {})[name] = data[key]
    return [out[i] for i in sorted(out)]


def client_main(argv: list[str]) -> int:
    """`client`: send every request of --requests (an .npz of `<i>/<input>` arrays) to --model, even ones over HTTP and
    odd ones over gRPC, from --threads threads at once; write the outputs (`<i>/<output>`) to --out and the model's
    config (as the server reports it) to --config-out.
    `api`: serve --tforge with tensorforge.serve(block=False), check the handle (ready, answers over HTTP and gRPC
    like the module called in-process, one context per instance, not ready once stopped); print a JSON report."""
    import argparse
    import json
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("client", "api"))
    parser.add_argument("--http")
    parser.add_argument("--grpc")
    parser.add_argument("--model")
    parser.add_argument("--requests")
    parser.add_argument("--out")
    parser.add_argument("--config-out")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--tforge")
    parser.add_argument("--ports")
    parser.add_argument("--gpus", default=None)
    args = parser.parse_args(argv)
    requests = _requests(args.requests)

    if args.mode == "api":
        import tensorforge as forge

        # with --gpus: the .tforge served on those GPUs (loaded on each), answers compared with it loaded on GPU 0
        module = forge.load(args.tforge, device="cuda:0" if args.gpus else "cpu")
        http_port, grpc_port = (int(p) for p in args.ports.split(","))
        handle = forge.serve(
            args.tforge if args.gpus else module,
            gpus=args.gpus,
            name="api",
            instances=2,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=None,
            block=False,
            shared_memory=True,
        )
        report = {"url": handle.url, "grpc_url": handle.grpc_url, "ready": handle.ready()}
        report["contexts"] = len({id(r.context) for r in handle.runners})
        report["devices"] = sorted({str(r.device) for r in handle.runners})
        names = [s.name for s in handle.signature.outputs]
        datatypes = {s.name: s.triton_dtype for s in handle.signature.inputs}
        errors = []
        with torch.no_grad():
            for protocol, url in ((thttp, handle.url.removeprefix("http://")), (tgrpc, handle.grpc_url)):
                client = protocol.InferenceServerClient(url)
                for request in requests[:4]:
                    got = _infer(client, protocol, "api", request, datatypes, names)
                    want = module(*(torch.from_numpy(request[s.name]) for s in handle.signature.inputs))
                    for name, w in zip(names, want):
                        w = w.cpu()
                        g = got[name].reshape(w.shape)
                        if not np.allclose(g, w.numpy(), rtol=1e-6, atol=1e-6):
                            errors.append(f"{protocol.__name__} {name}: {np.abs(g - w.numpy()).max()}")
                client.close()
        report["shared_memory_errors"] = _shared_memory_request(handle, requests[0], module)
        handle.stop()
        report.update(errors=errors, ready_after_stop=handle.ready(), repr=repr(handle))
        print(json.dumps(report))
        return 0

    metadata_client = thttp.InferenceServerClient(args.http)
    metadata = metadata_client.get_model_metadata(args.model)
    metadata_client.close()
    datatypes = {t["name"]: t["datatype"] for t in metadata["inputs"]}
    outputs = [t["name"] for t in metadata["outputs"]]
    local = threading.local()
    clients: list = []
    lock = threading.Lock()

    def client_for(protocol):
        key = protocol.__name__
        if not hasattr(local, key):
            client = protocol.InferenceServerClient(args.http if protocol is thttp else args.grpc)
            setattr(local, key, client)
            with lock:
                clients.append(client)
        return getattr(local, key)

    def one(i: int) -> dict:
        protocol = thttp if i % 2 == 0 else tgrpc
        return _infer(client_for(protocol), protocol, args.model, requests[i], datatypes, outputs)

    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(one, range(len(requests))))
    config_client = thttp.InferenceServerClient(args.http)
    config = config_client.get_model_config(args.model)
    for client in [*clients, config_client]:
        client.close()
    np.savez(args.out, **{f"{i}/{name}": array for i, result in enumerate(results) for name, array in result.items()})
    config["shared_memory_refused"] = _refused_shared_memory(args.grpc)  # serve's default: restricted
    with open(args.config_out, "w") as f:
        json.dump(config, f)
    print(f"{len(results)} requests answered")
    return 0


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
