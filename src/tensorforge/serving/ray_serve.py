"""Serve a `.tforge` file with Ray Serve: one replica per GPU, requests batched together by `@serve.batch`.

    from ray import serve
    from tensorforge.serving import ray_serve

    app = ray_serve.deployment("resnet50.tforge", max_batch_size=32, num_replicas=2)  # num_gpus=1 each on GPUs
    handle = serve.run(app)                     # HTTP on :8000, and a Python handle
    logits = handle.remote(images).result()     # images: a numpy array (or list) of shape (n, 3, 224, 224)

Each replica loads the module once (`tensorforge.load(path, device=...)`) and runs it from one worker thread of its
own (README, "Threading model"). Its `@serve.batch` method concatenates the inputs of the requests waiting together
along the batch axis, runs the module once and splits the outputs back, request by request, through the batching
core of the Triton servers (`triton_backend.BatchRunner`: one execution context, a failure the failing request's
own). Requests of different sizes in a non-batch dimension (a sequence length) run in separate groups; a run never
holds more samples than `max_batch_size`, and a larger request is cut into pieces that do not exceed it. On CUDA
each run is padded to the next power of two (rows copied from the last one, outputs sliced back), so a replica
replays a few CUDA graphs instead of capturing one per batch size; those graphs are captured at start-up, before the
first request.

Requests and replies (`Runner` below does the conversions, without Ray):

- Python handle: `handle.remote(x)`, `handle.remote(x, mask)`, `handle.remote({"input_ids": x, ...})` or by keyword;
  tensors as numpy arrays, nested lists or CPU torch tensors. The reply is a numpy array, or a tuple of them for a
  model with several outputs (as `module(...)` returns).
- HTTP: POST JSON `{"inputs": {"name": nested list, ...}}` (or `{"inputs": [x, mask]}`, one entry per input in order)
  to the route (`serve.run(app, route_prefix="/")`); the reply is `{"outputs": {"name": nested list, ...}}`. A
  GET answers the model's signature: its tensors' names, dtypes and dims and the batch limit, as Triton serves the
  same file (`signature_of`, signature.py: names are the graph's, made plain where they are not).

Values are cast to the input's dtype where numpy casts within a kind (ints to floats, float64 to float32; never
floats to ints); a wrong count, name, rank or fixed dimension is an error naming the input, sent to its caller only
(a ValueError through the handle, status 400 over HTTP), and the batch it would have joined runs without it.

Ray is imported only inside `deployment()` and the replicas: `tensorforge` imports without it
(`pip install tensorforge[serve]` brings it).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..runtime import Module
from .signature import DEFAULT_MAX_BATCH_SIZE, TensorSpec, TritonSignature, signature_of
from .triton_backend import BatchRunner, RequestError, numpy_to_torch, torch_to_numpy


@dataclass(frozen=True)
class Request:
    """One request's inputs, checked and in the model's dtypes (Triton's shapes: see signature.py), and its number
    of samples (1 for a model that is not batched)."""

    inputs: tuple[np.ndarray, ...]
    size: int


def request_sizes(requests: Sequence[Request]) -> int:
    """The samples in a list of requests: what `@serve.batch` counts against `max_batch_size` (its batch_size_fn)."""
    return sum(r.size for r in requests)


class Runner:
    """What a replica does, without Ray: checks requests, runs batches of them through `triton_backend.BatchRunner`
    (the batching core of the Triton servers: one execution context, requests concatenated along the batch, outputs
    split back, a failure the failing request's own) in runs of at most `max_batch_size` samples, padded to powers of
    two where asked, and converts to and from JSON. `run_batch` runs on one thread at a time (the replica's worker);
    everything else anywhere. The tensors, their dtypes and the batch limit are the module's `signature_of`, as
    Triton serves it."""

    def __init__(self, module: Module, max_batch_size: int | None = None, *, pad_batches: bool | None = None):
        self.signature: TritonSignature = signature_of(module, max_batch_size=max_batch_size)
        self.batch_runner = BatchRunner(module, self.signature, pad_batches=pad_batches, host_outputs=True)
        self.device = module.device
        self.inputs: tuple[TensorSpec, ...] = self.signature.inputs
        self.outputs: tuple[TensorSpec, ...] = self.signature.outputs
        self.batchable = self.signature.batching
        self.max_batch_size = self.signature.max_batch_size if self.batchable else 1
        # what run_batch has done: requests answered, module runs, and the most requests and samples in one run
        self.stats = {"requests": 0, "runs": 0, "max_requests_per_run": 0, "max_samples_per_run": 0}

    # -- requests --------------------------------------------------------------------------------

    def request(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Request:
        """A request from a call's arguments: tensors by position, by name (keywords), or one mapping of names.
        Names are the signature's (the graph's own where they are plain) or the graph's."""
        kwargs = dict(kwargs or {})
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            kwargs, args = dict(args[0]), ()
        if args and kwargs:
            raise ValueError("pass the inputs by position or by name, not both")
        names = [s.name for s in self.inputs]
        if kwargs:
            aliases = {s.graph_name: s.name for s in self.inputs}
            kwargs = {aliases.get(k, k) if k not in names else k: v for k, v in kwargs.items()}
            unknown = sorted(set(kwargs) - set(names))
            missing = [n for n in names if n not in kwargs]
            if unknown or missing:
                raise ValueError(
                    f"the model's inputs are {names}"
                    + (f"; unknown: {unknown}" if unknown else "")
                    + (f"; missing: {missing}" if missing else "")
                )
            values = [kwargs[n] for n in names]
        else:
            values = list(args)
            if len(values) != len(names):
                raise ValueError(f"the model takes {len(names)} input(s) {names}, got {len(values)}")
        arrays = tuple(self._coerce(v, spec) for v, spec in zip(values, self.inputs))
        if not self.batchable:
            return Request(arrays, 1)
        sizes = [a.shape[0] for a in arrays]
        if len(set(sizes)) > 1:
            raise ValueError(f"the inputs' batch sizes differ: {sizes}")
        return Request(arrays, sizes[0])

    def request_from_json(self, body: Any) -> Request:
        """A request from an HTTP body: {"inputs": {name: nested list}} or {"inputs": [one entry per input]}."""
        if not isinstance(body, Mapping) or "inputs" not in body:
            raise ValueError('the body must be a JSON object {"inputs": {name: nested list, ...}} or {"inputs": [...]}')
        inputs = body["inputs"]
        if isinstance(inputs, Mapping):
            return self.request((inputs,))
        if isinstance(inputs, list):
            return self.request(inputs)
        raise ValueError(f'"inputs" must be an object of names or a list, got {type(inputs).__name__}')

    def _coerce(self, value: Any, spec: TensorSpec) -> np.ndarray:
        """One input as a numpy array of its dtype in Triton's shape, its rank and fixed dimensions checked."""
        if isinstance(value, torch.Tensor):
            value = torch_to_numpy(value)
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"input {spec.name!r}: not a rectangular array ({exc})") from None
        if array.dtype == object or array.dtype.kind in "USV":
            raise ValueError(f"input {spec.name!r}: expected numbers, got {array.dtype}")
        if array.dtype != spec.numpy_dtype:
            if not np.can_cast(array.dtype, spec.numpy_dtype, casting="same_kind"):
                raise ValueError(f"input {spec.name!r} is {spec.dtype}; {array.dtype} values cannot be cast to it")
            array = array.astype(spec.numpy_dtype)
        lead = 1 if self.batchable else 0
        if spec.unit_dim and array.ndim == lead:  # the module's shape: Triton's trailing 1 added
            array = array[..., None]
        want = ["batch"] * lead + [d if d >= 0 else "n" for d in spec.dims]
        if array.ndim != len(want):
            raise ValueError(f"input {spec.name!r} has {len(want)} dimensions {want}, got shape {list(array.shape)}")
        for axis, (w, got) in enumerate(zip(want, array.shape)):
            if isinstance(w, int) and w != got:
                raise ValueError(f"input {spec.name!r}: dimension {axis} must be {w} (shape {want}), got {got}")
        return array

    def split(self, request: Request) -> list[Request]:
        """A request cut into pieces of at most `max_batch_size` samples (itself when it fits)."""
        if request.size <= self.max_batch_size or not self.batchable:
            return [request]
        step = self.max_batch_size
        return [
            Request(tuple(a[start : start + step] for a in request.inputs), min(step, request.size - start))
            for start in range(0, request.size, step)
        ]

    # -- running ---------------------------------------------------------------------------------

    def run_batch(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, ...] | Exception]:
        """Each request's outputs (or its error), in the module's shapes, running requests with equal non-batch
        sizes together in runs of at most `max_batch_size` samples."""
        results: list[tuple[np.ndarray, ...] | Exception | None] = [None] * len(requests)
        groups: dict[Any, list[int]] = {}
        for i, request in enumerate(requests):
            key: Any = tuple((a.shape[1:], a.dtype.str) for a in request.inputs) if self.batchable else i
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            chunk: list[int] = []
            for i in indices:
                if chunk and request_sizes([requests[j] for j in chunk]) + requests[i].size > self.max_batch_size:
                    self._run_chunk(requests, chunk, results)
                    chunk = []
                chunk.append(i)
            self._run_chunk(requests, chunk, results)
        assert all(r is not None for r in results)  # every request ran, in some chunk
        return results  # type: ignore[return-value]

    def _run_chunk(self, requests: Sequence[Request], chunk: list[int], results: list) -> None:
        members = [requests[i] for i in chunk]
        samples = request_sizes(members)
        self.stats["requests"] += len(chunk)
        self.stats["max_requests_per_run"] = max(self.stats["max_requests_per_run"], len(chunk))
        self.stats["max_samples_per_run"] = max(self.stats["max_samples_per_run"], samples)
        for i, result in zip(chunk, self.run(members)):
            results[i] = result

    def run(self, members: Sequence[Request]) -> list[tuple[np.ndarray, ...] | Exception]:
        """One run of the module over `members` (their shapes agree past the batch), padded by the batch runner
        where it pads (to a power-of-two batch: `BatchRunner`)."""
        self.stats["runs"] += 1
        batch = [
            {s.name: numpy_to_torch(a, device=self.device) for s, a in zip(self.inputs, m.inputs)} for m in members
        ]
        answers: list[tuple[np.ndarray, ...] | Exception] = []
        for answer in self.batch_runner.run(batch):
            if isinstance(answer, RequestError):
                answers.append(answer)
            else:
                outs = (t.squeeze(-1) if s.unit_dim else t for s, t in zip(self.outputs, answer))
                answers.append(tuple(torch_to_numpy(t) for t in outs))
        return answers

    def warmup(self) -> list[int]:
        """Each batch size a padded run can have, run once (`BatchRunner.warmup`); the sizes run."""
        return self.batch_runner.warmup()

    # -- replies ---------------------------------------------------------------------------------

    def reply(self, outputs: tuple[np.ndarray, ...]) -> np.ndarray | tuple[np.ndarray, ...]:
        """What the Python handle returns: one array, or a tuple for several outputs (as the module does)."""
        return outputs[0] if len(outputs) == 1 else outputs

    def reply_json(self, outputs: tuple[np.ndarray, ...]) -> dict[str, Any]:
        return {"outputs": {s.name: o.tolist() for s, o in zip(self.outputs, outputs)}}

    def describe(self) -> dict[str, Any]:
        """The model's signature (Triton's: dims past the batch, -1 where dynamic), as a GET on the route answers."""
        return {**self.signature.to_json(), "max_batch_size": self.max_batch_size, "device": str(self.device)}


# -- Ray Serve ------------------------------------------------------------------------------------


def default_num_gpus() -> float:
    """1 where the Ray cluster this process is connected to has GPUs (or, before `ray.init`, this machine), else 0."""
    ray = importlib.import_module("ray")
    if ray.is_initialized():
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return 1.0 if torch.cuda.is_available() else 0.0


def deployment(
    path: str | os.PathLike,
    *,
    name: str = "tensorforge",
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float = 0.005,
    num_replicas: int | str = 1,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    device: str | None = None,
    pad_batches: bool | None = None,
    max_ongoing_requests: int | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    **deployment_options: Any,
) -> Any:
    """A Ray Serve application (`Deployment.bind(...)`) serving the `.tforge` file at `path`; run it with
    `serve.run(app)` (locally, or on a cluster with `ray.init(address=...)` / `serve deploy`).

    - `max_batch_size`: the most samples one run of the module takes (default: the largest batch the file's saved
      plans cover, as `signature_of` decides for Triton; more than a file saved without its weights can run is an
      error when the replica starts); `@serve.batch` counts samples, not requests, where the installed Ray can
      (`batch_size_fn`). `batch_wait_timeout_s`: how long a run waits for more requests to fill it.
    - `num_replicas` (an int, or "auto" with `autoscaling_config=`): replicas, each loading the module once.
      `num_gpus` per replica (default 1 where the cluster has GPUs, else 0: CPU replicas), `num_cpus` likewise
      (Ray's default when None); `ray_actor_options` adds to them.
    - `device`: where each replica runs the module (default "cuda" with a GPU per replica, else "cpu").
      `pad_batches` (default: on CUDA) pads each run to a power-of-two batch, so a few CUDA graphs serve every size.
    - `max_ongoing_requests` per replica (default 2 x max_batch_size, at least 16, so a batch fills while another
      runs; 64 when max_batch_size is the module's); any other keyword goes to `serve.deployment`
      (`autoscaling_config`, `health_check_period_s`, ...).

    The path must be readable where each replica runs: on a cluster, a shared file system or the same path on
    every node; a relative path is made absolute here.
    """
    serve = importlib.import_module("ray.serve")
    path = os.path.abspath(os.fspath(path))
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    gpus = default_num_gpus() if num_gpus is None else float(num_gpus)
    actor_options: dict[str, Any] = {"num_gpus": gpus}
    if num_cpus is not None:
        actor_options["num_cpus"] = num_cpus
    actor_options.update(ray_actor_options or {})
    replica_device = device if device is not None else ("cuda" if gpus > 0 else "cpu")
    batch_options: dict[str, Any] = {
        "max_batch_size": max_batch_size or DEFAULT_MAX_BATCH_SIZE,  # a replica sets the module's when None
        "batch_wait_timeout_s": batch_wait_timeout_s,
    }
    if "batch_size_fn" in inspect.signature(serve.batch).parameters:
        batch_options["batch_size_fn"] = request_sizes
    if max_ongoing_requests is None:
        max_ongoing_requests = max(2 * (max_batch_size or 32), 16)

    class TensorforgeDeployment:
        """One replica: the module, loaded once, and the worker thread that runs it."""

        def __init__(self, path: str, device: str, max_batch_size: int | None, pad_batches: bool | None):
            from .. import load

            self.path = path
            module = load(path, device=device)
            # one worker thread runs the module, from its execution context (arena, CUDA graphs) made and warmed
            # up there: one context per replica, used by one thread
            self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorforge")
            self.runner = self.worker.submit(Runner, module, max_batch_size, pad_batches=pad_batches).result()
            self.warmed = self.worker.submit(self.runner.warmup).result()
            self.infer.set_max_batch_size(self.runner.max_batch_size)

        @serve.batch(**batch_options)
        async def infer(self, requests: list[Request]) -> list[tuple[np.ndarray, ...] | Exception]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.worker, self.runner.run_batch, requests)

        async def _outputs(self, request: Request) -> tuple[np.ndarray, ...]:
            pieces = self.runner.split(request)
            results = await asyncio.gather(*(self.infer(p) for p in pieces))
            for result in results:
                if isinstance(result, Exception):
                    raise result
            if len(results) == 1:
                return results[0]
            return tuple(np.concatenate(parts) for parts in zip(*results))

        async def __call__(self, *args: Any, **kwargs: Any) -> Any:
            http = importlib.import_module("starlette.requests")
            if len(args) == 1 and not kwargs and isinstance(args[0], http.Request):
                return await self._http(args[0])
            return self.runner.reply(await self._outputs(self.runner.request(args, kwargs)))

        async def _http(self, http_request: Any) -> Any:
            responses = importlib.import_module("starlette.responses")
            if http_request.method == "GET":
                return responses.JSONResponse(self.runner.describe())
            try:
                body = await http_request.json()
            except ValueError as exc:
                return responses.JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
            try:
                request = self.runner.request_from_json(body)
            except ValueError as exc:
                return responses.JSONResponse({"error": str(exc)}, status_code=400)
            try:
                outputs = await self._outputs(request)
            except Exception as exc:  # noqa: BLE001  (the model's error is this request's reply, not the replica's)
                return responses.JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
            return responses.JSONResponse(self.runner.reply_json(outputs))

        def signature(self) -> dict[str, Any]:
            """The model's inputs, outputs and batch limit (`handle.signature.remote().result()`)."""
            return {**self.runner.describe(), "path": self.path, "warmed_batches": self.warmed, **self.runner.stats}

    app = serve.deployment(
        TensorforgeDeployment,
        name=name,
        num_replicas=num_replicas,
        ray_actor_options=actor_options,
        max_ongoing_requests=max_ongoing_requests,
        **deployment_options,
    )
    return app.bind(path, replica_device, max_batch_size, pad_batches)
