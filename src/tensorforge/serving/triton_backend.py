"""Running Triton's requests on a tensorforge module: the batching core that both servers share, and the model of
Triton's Python backend that `tensorforge export-triton` writes (its model.py only calls `load_model` here).

`BatchRunner.run(requests)` takes the requests one execution (`execute` of the Python backend, one call of a
PyTriton infer function) holds, and answers each:

1. Each request's inputs are checked (present, rank) and made the module's tensors: a trailing Triton dim of 1 that
   the module lacks (one value per row) is dropped, each tensor moved to the module's device.
2. Requests whose non-batch sizes and dtypes agree (Triton's dynamic batcher only batches such requests, but an
   execution may hold several groups) are concatenated along the batch, in arrival order, and run as one call of
   the runner's execution context.
   Where the runner pads (`pad_batches`, on by default on CUDA), the batch is padded to the next power of two
   (capped at the signature's `max_batch_size`) with copies of its last row: a plan replays one CUDA graph per
   batch size, so a few sizes keep every run on a graph that `warmup()` captured before the first request, where
   the dynamic batcher's every size in 1..max_batch_size would each capture (and churn the graph cache) on first use.
3. Each output is split back along the batch by the requests' batch sizes (the padding's rows dropped).
4. A failure is the request's own: a group that fails is run again request by request, so one bad request never
   fails the requests it was batched with; what still fails is that request's error, one line.

Each runner owns one `ModuleContext` (runtime/context.py): one Triton model instance, one context, so instances
never share arenas or CUDA graphs; on CUDA it also owns a stream, which its calls run on. A runner serves one
execution at a time, as Triton calls an instance.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ir.types import torch_dtype
from .signature import TensorSpec, TritonSignature, signature_of

TFORGE_FILE_PARAMETER = "TFORGE_FILE"  # config.pbtxt parameter: the .tforge file beside model.py
DEFAULT_TFORGE_FILE = "model.tforge"


class RequestError(ValueError):
    """One request cannot be answered; the message is what its client reads."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {text}"


class BatchRunner:
    """Answers batches of requests with one execution context of `module` (see the module docstring)."""

    def __init__(
        self,
        module,
        signature: TritonSignature | None = None,
        context=None,
        *,
        pad_batches: bool | None = None,
        host_outputs: bool = False,
    ):
        self.module = module
        # a server that answers from host memory takes each output of a run off the GPU in one copy, then splits it
        # per request there (a copy per request would wait on the GPU once per request)
        self.host_outputs = host_outputs
        self.signature = signature if signature is not None else signature_of(module)
        self.context = context if context is not None else module.create_context()
        self.device = module.device
        pad = (self.device.type == "cuda") if pad_batches is None else pad_batches
        self.pad_batches = pad and self.signature.batching
        # on CUDA each runner (each instance) runs on a stream of its own, so instances overlap on the GPU; a context
        # keeps to one stream (README "Threading model")
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    # -- requests to the module's tensors -------------------------------------------------------

    def _prepare(self, request: Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], int]:
        """The module's inputs of one request, and its batch size (1 without batching)."""
        sig = self.signature
        tensors: list[torch.Tensor] = []
        batch = None
        for spec in sig.inputs:
            t = request.get(spec.name)
            if t is None:
                raise RequestError(f"the request has no input {spec.name!r} (inputs: {_names(sig.inputs)})")
            rank = len(spec.dims) + (1 if sig.batching else 0)
            if t.dim() != rank:
                want = ("[batch, " if sig.batching else "[") + ", ".join(map(str, spec.dims)) + "]"
                raise RequestError(f"input {spec.name!r} has shape {list(t.shape)}; the model takes {want}")
            if sig.batching:
                if batch is None:
                    batch = int(t.shape[0])
                elif t.shape[0] != batch:
                    raise RequestError(
                        f"input {spec.name!r} has batch {t.shape[0]}, but the request's other inputs have {batch}"
                    )
            if spec.unit_dim:
                if t.shape[-1] != 1:
                    raise RequestError(f"input {spec.name!r} has shape {list(t.shape)}; its last dim must be 1")
                t = t.reshape(t.shape[:-1])
            tensors.append(t.to(self.device, non_blocking=True))
        extra = sorted(set(request) - {s.name for s in sig.inputs})
        if extra:
            raise RequestError(f"the request has unknown input(s) {extra} (inputs: {_names(sig.inputs)})")
        return tensors, batch if batch is not None else 1

    # -- running --------------------------------------------------------------------------------

    def run(self, requests: Sequence[Mapping[str, torch.Tensor]]) -> list[list[torch.Tensor] | RequestError]:
        """Each request's outputs (in the signature's order, Triton's dims) or its error, in request order; on CUDA,
        complete when this returns (the runner's stream is synchronized)."""
        if self.stream is None:
            return self._run(requests)
        # on the module's own GPU (a server of several GPUs runs each instance's runner on its device's thread)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            results = self._run(requests)
        self.stream.synchronize()
        return results

    def _run(self, requests: Sequence[Mapping[str, torch.Tensor]]) -> list[list[torch.Tensor] | RequestError]:
        results: list[list[torch.Tensor] | RequestError | None] = [None] * len(requests)
        groups: dict[Any, list[tuple[int, list[torch.Tensor], int]]] = {}
        for i, request in enumerate(requests):
            try:
                tensors, batch = self._prepare(request)
            except RequestError as exc:
                results[i] = exc
                continue
            key = tuple((tuple(t.shape[1:]), t.dtype) for t in tensors) if self.signature.batching else i
            groups.setdefault(key, []).append((i, tensors, batch))
        for members in groups.values():
            try:
                for (i, _, _), outs in zip(members, self._run_group(members)):
                    results[i] = outs
            except Exception as exc:  # noqa: BLE001  (any failure of a run is its requests' error, never the server's)
                if len(members) == 1:
                    results[members[0][0]] = RequestError(_one_line(exc))
                    continue
                for member in members:  # find the request that fails: the others are answered
                    try:
                        results[member[0]] = self._run_group([member])[0]
                    except Exception as one:  # noqa: BLE001  (as above, for one request)
                        results[member[0]] = RequestError(_one_line(one))
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def padded_size(self, samples: int) -> int:
        """The batch a run of `samples` rows is padded to (`samples` itself where the runner does not pad)."""
        return padded_batch(samples, self.signature.max_batch_size or samples) if self.pad_batches else samples

    def warmup(self) -> list[int]:
        """Run each batch size a padded run can have once, on zeros (on CUDA the plans' CUDA graphs are captured
        now, not at the first request of each size); the sizes run. Nothing where the runner does not pad or an
        input has a dynamic size past the batch."""
        sig = self.signature
        if not self.pad_batches or any(d < 0 for s in sig.inputs for d in s.dims):
            return []
        sizes = sorted({self.padded_size(n) for n in range(1, (sig.max_batch_size or 1) + 1)})
        for n in sizes:
            request = {s.name: torch.zeros((n, *s.dims), dtype=torch_dtype(s.dtype)) for s in sig.inputs}
            (result,) = self.run([request])
            if isinstance(result, RequestError):
                raise RuntimeError(f"the model fails on a warm-up batch of {n} zeros: {result}")
        return sizes

    def _run_group(self, members: list[tuple[int, list[torch.Tensor], int]]) -> list[list[torch.Tensor]]:
        sig = self.signature
        sizes = [batch for _, _, batch in members]
        if len(members) == 1:
            inputs = members[0][1]
        else:
            inputs = [torch.cat(parts) for parts in zip(*(tensors for _, tensors, _ in members))]
        samples = sum(sizes)
        padded = self.padded_size(samples) if sig.batching and samples > 0 else samples
        if padded > samples:  # copies of the last row; their outputs are dropped below
            inputs = [torch.cat([t, t[-1:].expand(padded - samples, *t.shape[1:])]) for t in inputs]
        outs = self.context(*inputs)
        outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
        if len(outs) != len(sig.outputs):
            raise RuntimeError(f"the module returned {len(outs)} outputs, its signature has {len(sig.outputs)}")
        per_output = []
        for spec, out in zip(sig.outputs, outs):
            if spec.unit_dim:
                out = out.unsqueeze(-1)
            if sig.batching:
                if out.shape[0] != padded:
                    raise RuntimeError(
                        f"output {spec.name!r} has {out.shape[0]} rows for a batch of {padded}: it cannot be split"
                    )
                out = out[:samples]
                if self.host_outputs:
                    out = out.cpu()
                per_output.append(torch.split(out, sizes) if len(sizes) > 1 else (out,))
            else:
                per_output.append((out.cpu() if self.host_outputs else out,))
        return [[parts[k] for parts in per_output] for k in range(len(members))]


def warm_up(runner: BatchRunner) -> None:
    """Every padded batch size through the runner's context (`BatchRunner.warmup`), or where it does not pad, one
    batch of zeros; only where every size but the batch is fixed. Every server does this before it says ready, so
    no request waits for a CUDA graph's capture."""
    sig = runner.signature
    if any(d < 0 for s in sig.inputs for d in s.dims) or runner.warmup():
        return
    batch = max(sig.preferred_batch_sizes, default=1) if sig.batching else None
    lead = (batch,) if batch is not None else ()
    request = {s.name: torch.zeros(lead + s.dims, dtype=torch_dtype(s.dtype)) for s in sig.inputs}
    (result,) = runner.run([request])
    if isinstance(result, RequestError):
        raise RuntimeError(f"the model fails on a warm-up batch of zeros: {result}")


def padded_batch(size: int, limit: int) -> int:
    """The power of two at or above `size`, capped at `limit` (`size` itself above it)."""
    return min(1 << max(size - 1, 0).bit_length(), max(limit, size))


def _names(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(s.name for s in specs)


# A read-only request array (a view of Triton's or PyTriton's shared memory) that only travels on to a GPU is wrapped,
# not copied: the host copy would be a second pass over every input (600 KB per 224x224 image) on the server's
# critical path. torch warns that the tensor would be writable; it never is written (`numpy_to_torch`).
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", category=UserWarning, module=__name__
)


def numpy_to_torch(array: np.ndarray, *, device: torch.device | None = None) -> torch.Tensor:
    """A host array as a tensor: copied where it is read-only (e.g. a view of Triton's shared memory), unless it
    is bound for `device`, a GPU, where the transfer is the copy and the host tensor is never written."""
    if array.flags.writeable or (device is not None and device.type == "cuda"):
        return torch.from_numpy(array)
    return torch.from_numpy(array.copy())


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


# -- Triton's Python backend ------------------------------------------------------------------------


class PythonBackendModel:
    """The model of one Triton Python-backend instance (each instance is a process of its own, with its own module
    and execution context). `pb_utils` is `triton_python_backend_utils`, which only the backend's stub can import,
    passed in by model.py."""

    def __init__(self, args: Mapping[str, str], pb_utils, model_file: str | os.PathLike):
        from .. import api

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        file_name = parameters.get(TFORGE_FILE_PARAMETER) or DEFAULT_TFORGE_FILE
        if os.path.basename(file_name) != file_name or file_name in (".", ".."):
            raise ValueError(
                f"parameter {TFORGE_FILE_PARAMETER} {file_name!r} must be a file name beside model.py, not a path"
            )
        path = Path(model_file).resolve().parent / file_name
        kind = str(args.get("model_instance_kind", "CPU")).upper()
        device = f"cuda:{int(args.get('model_instance_device_id', 0))}" if kind == "GPU" else "cpu"
        module = api.load(path, device=device)
        max_batch_size = int(config.get("max_batch_size", 0))
        signature = signature_of(module, max_batch_size=max_batch_size or None)
        if signature.batching != (max_batch_size > 0):
            raise ValueError(
                f"{path.name}: config.pbtxt has max_batch_size {max_batch_size}, but the model "
                f"{'batches' if signature.batching else 'cannot be batched'}; export it again "
                f"(tensorforge export-triton)"
            )
        configured = (
            [t.get("name") for t in config.get("input", [])],
            [t.get("name") for t in config.get("output", [])],
        )
        ours = ([s.name for s in signature.inputs], [s.name for s in signature.outputs])
        if configured != ours:
            raise ValueError(
                f"{path.name}: config.pbtxt names inputs {configured[0]} and outputs {configured[1]}, the model "
                f"{ours[0]} and {ours[1]}; export it again (tensorforge export-triton)"
            )
        self.signature = signature
        self.runner = BatchRunner(module, signature, host_outputs=True)
        warm_up(self.runner)

    def _input(self, request, spec: TensorSpec) -> torch.Tensor | None:
        tensor = self.pb.get_input_tensor_by_name(request, spec.name)
        if tensor is None:
            return None
        if tensor.is_cpu():  # bound for a GPU, a read-only view of Triton's memory goes there without a host copy
            return numpy_to_torch(tensor.as_numpy(), device=self.runner.device)
        return torch.utils.dlpack.from_dlpack(tensor.to_dlpack())  # stays on the GPU (FORCE_CPU_ONLY_INPUT_TENSORS no)

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        pb = self.pb
        inputs: list[dict[str, torch.Tensor]] = []
        for request in requests:
            tensors = {}
            for spec in self.signature.inputs:
                t = self._input(request, spec)
                if t is not None:
                    tensors[spec.name] = t
            inputs.append(tensors)
        responses = []
        for result in self.runner.run(inputs):
            if isinstance(result, RequestError):
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(result))))
            else:
                # outputs go back through host memory, where an HTTP or gRPC response is made anyway
                outputs = [pb.Tensor(s.name, torch_to_numpy(t)) for s, t in zip(self.signature.outputs, result)]
                responses.append(pb.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        self.runner = None  # type: ignore[assignment]


def load_model(args: Mapping[str, str], pb_utils, model_file: str | os.PathLike) -> PythonBackendModel:
    """What model.py's `initialize` calls: the .tforge file beside `model_file`, loaded (as data) on the instance's
    device, ready to execute requests."""
    return PythonBackendModel(args, pb_utils, model_file)
