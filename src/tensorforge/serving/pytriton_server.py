"""`tensorforge.serve` / `tensorforge serve model.tforge`: a compiled model behind Triton Inference Server, run by
PyTriton in this process.

- **The model**: bound under its name with the module's signature (signature.py): inputs and outputs by name,
  numpy dtypes, dims with -1 for dynamic sizes, the batch as Triton's batch. Triton's dynamic batcher is on
  (`max_batch_size`, `max_queue_delay_us`, preferred batch sizes = the plans' batch sizes).
- **Instances**: `instances=K` binds K infer callables. PyTriton runs each in a thread of its own, and each holds
  its own `BatchRunner`, hence its own execution context (`module.create_context()`: arenas and, on CUDA, CUDA
  graphs of its own; README "Threading model"). The weights and plans are shared. An instance runs one batch at a
  time: the requests Triton batched are concatenated along the batch, run once, and split back (triton_backend.py).
  A failure inside a batch is retried request by request; PyTriton answers a call with one error for all its
  requests, so a request that still fails fails the call, with its message.
- **Ports**: HTTP, gRPC and metrics on `host` (`metrics_port=None`: no metrics endpoint); Triton cannot bind port
  0, so pick free ports. `exit_timeout_s` bounds how long a stop waits for requests in flight.
- **Readiness**: `serve` returns (or starts blocking) once Triton says the server and the model are ready, or
  raises after `startup_timeout_s`. `handle.ready()` asks again: GET /v2/health/ready and /v2/models/NAME/ready.
- **Shutdown**: `block=True` serves until SIGTERM or SIGINT (or until Triton dies, an error), then stops Triton
  and the instances and returns; `block=False` returns a `TritonServerHandle` (`.url`, `.grpc_url`,
  `.metrics_url`, `.ready()`, `.stop()`, a context manager).

Warm-up: before the server opens, each instance runs one batch of zeros (where every input's size is fixed but the
batch), so the first requests find its context and plans ready.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .devices import GpuSpec, local_gpus
from .net import http_ok
from .signature import TritonSignature, check_model_name, model_name_of, signature_of
from .triton_backend import BatchRunner, RequestError, numpy_to_torch, torch_to_numpy, warm_up

logger = logging.getLogger("tensorforge")

DEFAULT_QUEUE_DELAY_US = 100


def _import_pytriton() -> dict[str, Any]:
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    except ImportError as exc:
        raise RuntimeError(
            f"serving needs nvidia-pytriton ({exc}): install tensorforge[serve] in a Python with a shared libpython "
            f"and numpy < 2 (scripts/setup_serve.sh makes .venv-serve)"
        ) from None
    return {
        "DynamicBatcher": DynamicBatcher,
        "ModelConfig": ModelConfig,
        "Tensor": Tensor,
        "Triton": Triton,
        "TritonConfig": TritonConfig,
        "TritonSecurityConfig": TritonSecurityConfig,
    }


def security_config(shared_memory: bool) -> Any:
    """PyTriton's TritonSecurityConfig: its defaults (the admin endpoints behind a generated access token), with the
    shared-memory endpoints opened where `shared_memory` (clients on the host may register regions)."""
    config = _import_pytriton()["TritonSecurityConfig"]
    security = config()
    if not shared_memory:
        return security
    return config(restricted_endpoints=[e for e in security.restricted_endpoints if e != "shared-memory"])


def _check_port(port: int | None, what: str) -> None:
    if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
        raise ValueError(f"{what} must be a port from 1 to 65535, got {port!r} (Triton cannot bind port 0)")


def infer_function(runner: BatchRunner) -> Callable[[Sequence[Any]], list[dict[str, Any]]]:
    """The PyTriton infer callable of one instance: PyTriton's requests (name -> numpy array) to the runner, its
    outputs back as numpy arrays."""
    signature = runner.signature
    device = runner.device

    def infer(requests: Sequence[Any]) -> list[dict[str, Any]]:
        batch = [{name: numpy_to_torch(request[name], device=device) for name in request} for request in requests]
        results = runner.run(batch)
        errors = list(dict.fromkeys(str(r) for r in results if isinstance(r, RequestError)))
        if errors:
            raise RequestError("; ".join(errors))
        return [
            {spec.name: torch_to_numpy(t) for spec, t in zip(signature.outputs, outs)}
            for outs in results
            if not isinstance(outs, RequestError)
        ]

    return infer


def _modules_on_gpus(model: Any, first: Any, gpus: Sequence[int]) -> list[Any]:
    """The module on each GPU of `gpus`: `first` (already on gpus[0]) and a copy loaded on each other one, from the
    .tforge path `model` or, for a module given in memory, from a copy saved to a temporary file."""
    import tempfile

    from .. import api
    from ..runtime import Module

    if len(gpus) == 1 and first.device == torch.device("cuda", gpus[0]):
        return [first]
    with tempfile.TemporaryDirectory(prefix="tforge_gpus_") as tmp:
        path = model
        if isinstance(model, Module):
            path = Path(tmp) / "model.tforge"
            model.save(path, rebuildable=True)  # a GPU of another model can rebuild from it
        return [first if first.device == torch.device("cuda", i) else api.load(path, device=f"cuda:{i}") for i in gpus]


class TritonServerHandle:
    """A running server (see the module docstring): `url` (HTTP), `grpc_url`, `metrics_url`, `ready()`, `stop()`,
    and `access_token`, which Triton's admin endpoints (statistics among them) ask of a client in a header."""

    def __init__(
        self,
        triton: Any,
        name: str,
        signature: TritonSignature,
        runners: list[BatchRunner],
        host: str,
        http_port: int,
        grpc_port: int,
        metrics_port: int | None,
        access_token: str | None = None,
    ):
        self._triton = triton
        # the token of the admin endpoints (statistics, model control, ...): for the process that started the server
        self.access_token = access_token
        self.model_name = name
        self.signature = signature
        self.runners = runners
        client_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.url = f"http://{client_host}:{http_port}"
        self.grpc_url = f"{client_host}:{grpc_port}"
        self.metrics_url = f"http://{client_host}:{metrics_port}/metrics" if metrics_port is not None else None
        self._stopped = False
        self._lock = threading.Lock()

    def ready(self, timeout_s: float = 2.0) -> bool:
        """Whether the server and the model answer ready (HTTP /v2/health/ready and /v2/models/NAME/ready)."""
        if self._stopped:
            return False
        return http_ok(f"{self.url}/v2/health/ready", timeout_s) and http_ok(
            f"{self.url}/v2/models/{self.model_name}/ready", timeout_s
        )

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not self.is_alive():
                raise RuntimeError("Triton Inference Server exited while starting (its log above says why)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {self.url} was not ready after {timeout_s:g} s")
            time.sleep(0.1)

    def is_alive(self) -> bool:
        return not self._stopped and bool(self._triton.is_alive())

    def stop(self) -> None:
        """Stop Triton and the instances (waiting at most the exit timeout for requests in flight). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._triton.stop()

    def serve_forever(self) -> int | None:
        """Serve until SIGTERM or SIGINT (returns its number) or until Triton dies (returns None); then stop."""
        received: list[int] = []
        event = threading.Event()

        def on_signal(signum, frame):
            received.append(signum)
            event.set()

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM.value, signal.SIGINT.value):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            while not event.wait(0.5):
                if not self.is_alive():
                    break
        except KeyboardInterrupt:  # signal handlers not installed (not the main thread)
            received.append(signal.SIGINT.value)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.stop()
        return received[0] if received else None

    def __enter__(self) -> TritonServerHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"TritonServerHandle({self.model_name!r}, {self.url}, grpc {self.grpc_url}, {state})"


def serve(
    model: Any,
    *,
    name: str | None = None,
    max_batch_size: int | None = None,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instances: int = 1,
    device: Any = None,
    host: str = "0.0.0.0",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int | None = 8002,
    block: bool = True,
    startup_timeout_s: float = 120.0,
    exit_timeout_s: int = 5,
    warmup: bool = True,
    gpus: GpuSpec | None = None,
    shared_memory: bool = False,
    log_verbose: int = 0,
    log_file: str | os.PathLike | None = None,
    on_ready: Callable[[TritonServerHandle], None] | None = None,
) -> TritonServerHandle | None:
    """Serve a compiled model (a `Module`, or a `.tforge` path loaded on `device`) behind Triton Inference Server
    through PyTriton (see the module docstring); Triton's log goes to stdout, or to `log_file`. `block=True`
    serves until SIGTERM/SIGINT, then stops cleanly and returns None (`on_ready(handle)` is called once the server
    is ready); `block=False` returns the running server's handle. `gpus="all"` (or indices) places `instances`
    instances on each of those GPUs, the model loaded on each (the saved plans serve every GPU of the same model;
    another model of GPU rebuilds them, with a warning); it replaces `device`. `shared_memory=True` lets clients
    register system / CUDA shared-memory regions and send inputs by reference (Triton's shared-memory extension,
    which PyTriton otherwise keeps behind an access token; the server's other admin endpoints stay restricted): for
    clients on the same host. Needs the `serve` extra (nvidia-pytriton)."""
    from .. import api
    from ..runtime import Module

    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    for port, what in ((http_port, "http_port"), (grpc_port, "grpc_port"), (metrics_port, "metrics_port")):
        _check_port(port, what)
    ports = [p for p in (http_port, grpc_port, metrics_port) if p is not None]
    if len(set(ports)) != len(ports):
        raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
    pt = _import_pytriton()
    gpu_indices = local_gpus(gpus)
    if gpu_indices is not None and device is not None:
        raise ValueError(f"give device ({device}) or gpus ({gpus}), not both")
    if isinstance(model, Module):
        module, default_name = model, "model"
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such .tforge file")
        module = api.load(path, device=f"cuda:{gpu_indices[0]}" if gpu_indices else device)
        default_name = model_name_of(path)
    name = check_model_name(name if name is not None else default_name)
    modules = _modules_on_gpus(model, module, gpu_indices) if gpu_indices else [module]
    signature = signature_of(module, max_batch_size=max_batch_size)
    # `instances` per device, each with one execution context of the module loaded on that device
    runners = [BatchRunner(m, signature, host_outputs=True) for m in modules for _ in range(instances)]
    if warmup:
        for runner in runners:
            warm_up(runner)

    config = pt["TritonConfig"](
        http_address=host,
        http_port=http_port,
        grpc_address=host,
        grpc_port=grpc_port,
        allow_metrics=metrics_port is not None,
        metrics_port=metrics_port,
        metrics_address=host if metrics_port is not None else None,
        exit_timeout_secs=exit_timeout_s,
        log_verbose=log_verbose,
        log_file=Path(log_file) if log_file is not None else None,
        strict_readiness=True,
    )
    security = security_config(shared_memory)
    triton = pt["Triton"](config=config, security_config=security)
    handle = TritonServerHandle(
        triton, name, signature, runners, host, http_port, grpc_port, metrics_port, security.access_token
    )
    try:
        batcher = pt["DynamicBatcher"](
            max_queue_delay_microseconds=max_queue_delay_us,
            preferred_batch_size=list(signature.preferred_batch_sizes) or None,
        )
        triton.bind(
            model_name=name,
            infer_func=[infer_function(r) for r in runners],
            inputs=[pt["Tensor"](name=s.name, dtype=s.numpy_dtype.type, shape=s.dims) for s in signature.inputs],
            outputs=[pt["Tensor"](name=s.name, dtype=s.numpy_dtype.type, shape=s.dims) for s in signature.outputs],
            config=pt["ModelConfig"](
                batching=signature.batching,
                max_batch_size=signature.max_batch_size,
                batcher=batcher,
            ),
            strict=False,
        )
        triton.run()
        handle.wait_ready(startup_timeout_s)
    except BaseException:
        handle.stop()
        raise
    logger.info(
        "serving %r (%s) at %s, gRPC %s%s with %d instance(s)",
        name,
        signature.describe(),
        handle.url,
        handle.grpc_url,
        f", metrics {handle.metrics_url}" if handle.metrics_url else "",
        instances,
    )
    if not block:
        return handle
    if on_ready is not None:
        on_ready(handle)
    if handle.serve_forever() is None:
        raise RuntimeError("Triton Inference Server stopped on its own (its log above says why)")
    return None
