"""`tensorforge export-triton`: a Triton model repository that a stock `tritonserver --model-repository DIR` serves.

    DIR/<name>/config.pbtxt      backend "python", the tensors, max_batch_size, dynamic_batching, instance_group
    DIR/<name>/1/model.py        a fixed template: it imports tensorforge and hands every call to
                                 tensorforge.serving.triton_backend (loading, batching, splitting, errors)
    DIR/<name>/1/model.tforge    the compiled model, a copy of the file exported

model.py treats the .tforge as data: `tensorforge.load` reads it (see the README's security model); nothing from
a file is imported or evaluated. The Python backend runs model.py in a stub process per instance, with the Python
whose `python3` comes first on tritonserver's PATH: that environment needs tensorforge and torch (as the one made
by scripts/setup_serve.sh has).

With instance kind GPU (the default) each instance runs on its GPU and takes its inputs where Triton has them
(`FORCE_CPU_ONLY_INPUT_TENSORS: no`: a GPU input stays on the GPU); with kind CPU it runs on the CPU.

`bundled_tritonserver` prepares the tritonserver binary that nvidia-pytriton ships to serve such a repository
(the binary, its Python backend with the stub for this Python, the libraries, PATH and LD_LIBRARY_PATH), for a
machine without Triton's container; `TritonServerProcess` runs it (`tensorforge serve --server tritonserver`), with
Triton's admin endpoints behind an access token as PyTriton keeps them.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from .devices import GpuSpec, parse_gpus
from .net import http_ok
from .signature import TensorSpec, TritonSignature, check_model_name, model_name_of, signature_of
from .triton_backend import DEFAULT_TFORGE_FILE, TFORGE_FILE_PARAMETER

INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
DEFAULT_QUEUE_DELAY_US = 100
# Triton's admin endpoints, behind an access token (PyTriton's defaults; shared memory opens on request)
ADMIN_ENDPOINTS = ("shared-memory", "model-repository", "statistics", "trace", "logging")
ACCESS_HEADER = "triton-access-token"  # gRPC clients send it as "triton-grpc-protocol-" + this

MODEL_PY = '''\
"""Triton Python-backend model written by `tensorforge export-triton`: it serves the .tforge file beside it.

The .tforge file is data (tensorforge.load reads it; no code in it runs). Loading, batching the requests and
splitting the outputs back live in tensorforge.serving.triton_backend: export again rather than edit this file.
"""

import triton_python_backend_utils as pb_utils

from tensorforge.serving import triton_backend


class TritonPythonModel:
    def initialize(self, args):
        self.model = triton_backend.load_model(args, pb_utils, __file__)

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model.finalize()
'''


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(spec: TensorSpec) -> str:
    return (
        "  {\n"
        f"    name: {_quote(spec.name)}\n"
        f"    data_type: {spec.config_dtype}\n"
        f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]\n"
        "  }"
    )


def config_pbtxt(
    name: str,
    signature: TritonSignature,
    *,
    instances: int = 1,
    kind: str = "gpu",
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    tforge_file: str = DEFAULT_TFORGE_FILE,
    source: str | None = None,
    gpus: GpuSpec | None = None,
) -> str:
    """The config.pbtxt (protobuf text) of a model served by the Python backend with the given signature. With kind
    gpu, Triton places `instances` instances on every GPU it sees (`gpus` None or "all") or on each GPU of `gpus`."""
    check_model_name(name)
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind {kind!r}: expected one of {', '.join(INSTANCE_KINDS)}")
    listed = parse_gpus(gpus)
    if listed is not None and kind != "gpu":
        raise ValueError(f"GPUs {gpus!r} go with instance kind gpu, not {kind}")
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    lines = [f"# written by tensorforge export-triton{f' from {source}' if source else ''}: {signature.describe()}"]
    lines += [f"name: {_quote(name)}", 'backend: "python"', f"max_batch_size: {signature.max_batch_size}"]
    lines += ["input [", ",\n".join(_tensor_block(s) for s in signature.inputs), "]"]
    lines += ["output [", ",\n".join(_tensor_block(s) for s in signature.outputs), "]"]
    if signature.batching:
        lines.append("dynamic_batching {")
        if signature.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, signature.preferred_batch_sizes))} ]")
        lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    group = [f"    count: {instances}", f"    kind: {INSTANCE_KINDS[kind]}"]
    if isinstance(listed, tuple):  # "all" is Triton's default: count instances on each GPU
        group.append(f"    gpus: [ {', '.join(map(str, listed))} ]")
    lines += ["instance_group [", "  {", *group, "  }", "]"]
    parameters = {TFORGE_FILE_PARAMETER: tforge_file}
    if kind == "gpu":
        parameters["FORCE_CPU_ONLY_INPUT_TENSORS"] = "no"  # GPU inputs reach the model on the GPU
    for key, value in parameters.items():
        lines += ["parameters: {", f"  key: {_quote(key)}", f"  value: {{ string_value: {_quote(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def export_triton(
    model: Any,
    repo_dir: str | os.PathLike,
    *,
    name: str | None = None,
    max_batch_size: int | None = None,
    instances: int = 1,
    kind: str = "gpu",
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    device: Any = None,
    overwrite: bool = False,
    gpus: GpuSpec | None = None,
) -> Path:
    """Write `<repo_dir>/<name>/` (config.pbtxt, 1/model.py, 1/model.tforge) for a compiled model: a `.tforge`
    path (read on `device`: cpu for kind cpu, else cuda where there is one) or a loaded `Module` (saved into the
    repository). `gpus` ("all", the default for kind gpu, or indices) are the serving machine's GPUs that get
    `instances` instances each. Returns the model's directory. Other models in `repo_dir` are left alone; an
    existing `<name>` is replaced only with `overwrite=True`."""
    from .. import api
    from ..runtime import Module

    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind {kind!r}: expected one of {', '.join(INSTANCE_KINDS)}")
    if parse_gpus(gpus) is not None and kind != "gpu":  # (config_pbtxt checks it too; here before any loading)
        raise ValueError(f"GPUs {gpus!r} go with instance kind gpu, not {kind}")
    source: Path | None = None
    if isinstance(model, Module):
        module = model
    else:
        source = Path(model)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such .tforge file")
        if device is None:
            import torch

            device = "cuda" if kind == "gpu" and torch.cuda.is_available() else "cpu"
        module = api.load(source, device=device)
    if name is None:
        name = model_name_of(source) if source is not None else "model"
    check_model_name(name)
    signature = signature_of(module, max_batch_size=max_batch_size)
    text = config_pbtxt(
        name,
        signature,
        instances=instances,
        kind=kind,
        max_queue_delay_us=max_queue_delay_us,
        source=source.name if source is not None else None,
        gpus=gpus,
    )
    target = Path(repo_dir) / name
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists: choose another --name, or replace it with --force")
        shutil.rmtree(target)
    version = target / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL_PY)
    if source is not None:
        shutil.copyfile(source, version / DEFAULT_TFORGE_FILE)
    else:
        module.save(version / DEFAULT_TFORGE_FILE)
    (target / "config.pbtxt").write_text(text)
    return target


# -- the tritonserver that nvidia-pytriton ships ------------------------------------------------------


def bundled_tritonserver(
    repo_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int | None = 8002,
    extra_args: tuple[str, ...] = (),
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run nvidia-pytriton's bundled tritonserver on `repo_dir`.

    pytriton ships the binary and its Python backend but keeps one backend stub per Python version apart: the
    backends are copied into `work_dir` with the stub of this Python. This Python's directory goes first on PATH,
    so the stub's embedded interpreter finds this environment (and tensorforge in it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "nvidia-pytriton is not installed in this Python: install tensorforge[serve] (scripts/setup_serve.sh)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version} ({stub})")
    backends = Path(work_dir) / "backends"
    if backends.exists():
        shutil.rmtree(backends)
    shutil.copytree(dist / "backends", backends)
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    env = dict(os.environ)
    libs = [str(package.parent / "nvidia_pytriton.libs"), str(dist / "external_libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*(p for p in libs if os.path.isdir(p)), env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    argv = [
        str(dist / "bin" / "tritonserver"),
        f"--model-repository={Path(repo_dir).resolve()}",
        f"--backend-directory={backends.resolve()}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}" if metrics_port is not None else "--allow-metrics=false",
        *extra_args,
    ]
    return argv, env


class TritonServerProcess:
    """The bundled tritonserver serving a model repository, in a process group of its own (its Python-backend
    stubs with it): `url` (HTTP), `grpc_url`, `metrics_url`, `access_token` (the admin endpoints' header value:
    statistics, model control, shared memory unless `shared_memory`), `ready()`, `wait_ready()`, `stop()`,
    `wait()`."""

    def __init__(
        self,
        repo_dir: str | os.PathLike,
        work_dir: str | os.PathLike,
        model_name: str,
        *,
        host: str = "0.0.0.0",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int | None = 8002,
        shared_memory: bool = False,
        exit_timeout_s: int = 5,
        log_file: str | os.PathLike | None = None,
    ):
        self.model_name = model_name
        self.access_token = secrets.token_urlsafe(32)
        restricted = [e for e in ADMIN_ENDPOINTS if not (shared_memory and e == "shared-memory")]
        rule = f"{','.join(restricted)}:{ACCESS_HEADER}={self.access_token}"
        extra = [f"--http-address={host}", f"--grpc-address={host}", f"--exit-timeout-secs={exit_timeout_s}"]
        extra += ["--strict-readiness=true", f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]
        if metrics_port is not None:
            extra.append(f"--metrics-address={host}")
        argv, env = bundled_tritonserver(
            repo_dir, work_dir, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
            extra_args=tuple(extra),
        )  # fmt: skip
        client_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.url = f"http://{client_host}:{http_port}"
        self.grpc_url = f"{client_host}:{grpc_port}"
        self.metrics_url = f"http://{client_host}:{metrics_port}/metrics" if metrics_port is not None else None
        self._log: IO[str] | None = open(log_file, "w") if log_file is not None else None  # closed in stop
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a signal to this process group reaches the backend stubs too
        )

    def ready(self, timeout_s: float = 2.0) -> bool:
        return http_ok(f"{self.url}/v2/health/ready", timeout_s) and http_ok(
            f"{self.url}/v2/models/{self.model_name}/ready", timeout_s
        )

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"tritonserver exited with {code} while starting (its log says why)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"tritonserver at {self.url} was not ready after {timeout_s:g} s")
            time.sleep(0.2)

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        return self.process.wait()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (Triton finishes the requests in flight and unloads), then the whole process group; the exit
        status, None where it had to be killed."""
        code = self.process.poll()
        if code is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                code = None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stubs that outlive their server
        except (ProcessLookupError, PermissionError):
            pass
        if code is None:
            self.process.wait(30)
        if self._log is not None and not self._log.closed:
            self._log.close()
        return code
