"""Serving compiled models at scale, behind NVIDIA Triton Inference Server.

- `serve(module_or_path, ...)` (`tensorforge serve model.tforge`): the model behind a Triton server run by PyTriton
  in this process, with Triton's dynamic batcher and one execution context per model instance (pytriton_server.py).
- `export_triton(module_or_path, repo_dir, ...)` (`tensorforge export-triton`): a standard Triton model repository
  for Triton's Python backend, which a stock `tritonserver --model-repository` serves (triton_repository.py);
  `TritonServerProcess` runs nvidia-pytriton's bundled tritonserver on one (`tensorforge serve --server
  tritonserver`: each instance a backend process of its own, no hop back to a PyTriton process).
- `signature_of(module)`: the module's tensors, dtypes, dims and batching as Triton sees them (signature.py).
- `ray_serve.deployment(path, ...)`: the model as a Ray Serve application, one replica per GPU, requests batched by
  `@serve.batch` (ray_serve.py; imported on its own, as `tensorforge.serving.ray_serve`).

Every server answers requests through `triton_backend.BatchRunner`: requests of one execution concatenated along
the batch, run as one call, the outputs split back per request, a failure the failing request's own.

PyTriton and tritonclient (the `serve` extra: scripts/setup_serve.sh makes .venv-serve) are imported only where
they are used, so `import tensorforge` never needs them; export_triton needs neither.
"""

from .pytriton_server import TritonServerHandle, serve
from .signature import TensorSpec, TritonSignature, signature_of
from .triton_backend import BatchRunner
from .triton_repository import TritonServerProcess, bundled_tritonserver, config_pbtxt, export_triton

__all__ = [
    "serve",
    "export_triton",
    "signature_of",
    "TritonSignature",
    "TensorSpec",
    "TritonServerHandle",
    "BatchRunner",
    "config_pbtxt",
    "bundled_tritonserver",
    "TritonServerProcess",
]
