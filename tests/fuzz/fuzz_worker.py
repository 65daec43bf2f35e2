"""One fuzzing worker: a subprocess that loads and runs mutated files, one case per request, and says what happened.

Started by fuzz_runner.py with a fresh working directory, HOME and TMPDIR, a memory limit and one thread. It reads
one JSON request per line on stdin and answers on the file descriptor it was given (stdout itself goes to the
worker's log, with everything torch or tensorforge print). Before each stage of a case it announces the stage, so
when the worker dies or hangs the runner knows where.

A case's answer (`result`):
  status   "ran"       loaded and ran: `equal` says whether the outputs match the unmutated module's (or, for
                       ONNX, onnxruntime's on the same mutated model); `oracle` False when there was none
           "error"     an exception: its type, the classes it derives from, the stage, where it was raised
  warnings             first lines of warnings tensorforge gave (warnings module and its logger) that the
                       unmutated seed does not give
  new_modules          modules imported for the first time during this case
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import logging
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

TOLERANCE = 1e-4  # relative to the largest expected magnitude: everything here runs FP32 on CPU


class _Channel:
    def __init__(self, fd: int):
        self.stream = os.fdopen(fd, "w", buffering=1)

    def send(self, **message) -> None:
        self.stream.write(json.dumps(message) + "\n")
        self.stream.flush()


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage().splitlines()[0][:200] if record.getMessage() else "")


def _error(exc: BaseException, stage: str) -> dict:
    tb = traceback.extract_tb(exc.__traceback__)
    origin = _origin(tb)
    return {
        "status": "error",
        "stage": stage,
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "message": (str(exc).splitlines() or [""])[0][:300],
        "origin": origin,
        "raised_in_tensorforge": origin.startswith("tensorforge/"),
        "traceback": [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in tb[-10:]],
    }


def _short(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("tensorforge", "torch", "safetensors", "onnx", "onnxruntime", "google", "json", "transformers"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i:])
    return "/".join(parts[-2:])


def _origin(tb) -> str:
    """Where the exception was raised: the innermost frame (library frames below tensorforge's included)."""
    return f"{_short(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"


def _compare(actual, expected: list[torch.Tensor]) -> tuple[bool, str]:
    actual = list(actual) if isinstance(actual, (tuple, list)) else [actual]
    if len(actual) != len(expected):
        return False, f"{len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        if not isinstance(a, torch.Tensor):
            return False, f"output {i} is a {type(a).__name__}"
        if a.dtype != e.dtype or tuple(a.shape) != tuple(e.shape):
            return False, f"output {i}: {a.dtype}{tuple(a.shape)}, expected {e.dtype}{tuple(e.shape)}"
        a, e = a.detach().cpu(), e.detach().cpu()
        if not a.is_floating_point():
            if not torch.equal(a, e):
                return False, f"output {i}: values differ"
            continue
        if not torch.equal(torch.isnan(a), torch.isnan(e)):
            return False, f"output {i}: NaN in other places"
        a, e = torch.nan_to_num(a.double()), torch.nan_to_num(e.double())
        error = ((a - e).abs().max() / e.abs().max().clamp_min(1e-12)).item() if e.numel() else 0.0
        if not error <= TOLERANCE:
            return False, f"output {i}: relative error {error:.3g}"
    return True, ""


MAX_INPUT_ELEMENTS = 1 << 22


class InputsTooLarge(Exception):
    """The mutated model declares inputs too large to make: it cannot be run here (not a finding)."""


def _synthetic_inputs(types, seed: int, batch: int = 2) -> list[torch.Tensor]:
    """Inputs of the given IR types (batch symbols bound to `batch`): normal floats, zeros elsewhere."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in types:
        shape = [d if isinstance(d, int) else d.bind(dict.fromkeys(d.free_symbols, batch)) for d in t.shape]
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise InputsTooLarge(f"an input of shape {shape}")
        if t.torch_dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g).to(t.torch_dtype))
        else:
            out.append(torch.zeros(shape, dtype=t.torch_dtype))
    return out


class Worker:
    def __init__(self, seeds_dir: str, channel: _Channel):
        from safetensors.torch import load_file

        import tensorforge

        self.forge = tensorforge
        self.channel = channel
        self.seeds_dir = Path(seeds_dir)
        self.manifest = json.loads((self.seeds_dir / "manifest.json").read_text())
        self.io = {}
        for seed in self.manifest["tforge"]:
            tensors = load_file(str(self.seeds_dir / seed["io"]))
            n_in = sum(1 for k in tensors if k.startswith("input_"))
            n_out = sum(1 for k in tensors if k.startswith("output_"))
            self.io[seed["name"]] = (
                [tensors[f"input_{i}"] for i in range(n_in)],
                [tensors[f"output_{i}"] for i in range(n_out)],
            )
        self.log_capture = _LogCapture()
        logging.getLogger("tensorforge").addHandler(self.log_capture)
        self.baseline_warnings: dict[str, set[str]] = {}
        self.inner_errors: list[BaseException] = []
        self.stage = "start"

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.channel.send(stage=stage)

    # -- one case -----------------------------------------------------------------------------------

    def run(self, request: dict) -> dict:
        self.inner_errors.clear()
        self.log_capture.records.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = getattr(self, f"_run_{request['kind']}")(request)
            except BaseException as exc:  # noqa: BLE001 - classifying every failure is the point
                if isinstance(exc, RuntimeError) and self.inner_errors:  # load_state_dict hides the real error
                    exc = self.inner_errors[-1]
                result = _error(exc, self.stage)
        said = [
            str(w.message).splitlines()[0][:200] if str(w.message) else w.category.__name__
            for w in caught
            if "tensorforge" in Path(w.filename).parts
        ]
        said += self.log_capture.records
        seen = self.baseline_warnings.get(request["seed"], set())
        result["warnings"] = sorted({w for w in said if w not in seen})
        return result

    def _run_tforge(self, request: dict) -> dict:
        inputs, expected = self.io[request["seed"]]
        self.enter("load")
        if request["loader"] == "state_dict":
            module = self._probe_class()()
            data = Path(request["path"]).read_bytes()
            tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
            module.load_state_dict({"tforge": tensor})
        else:
            module = self.forge.load(request["path"])
        self.enter("run")
        outputs = module(*inputs)
        equal, detail = _compare(outputs, expected)
        return {"status": "ran", "equal": equal, "detail": detail, "oracle": True}

    def _probe_class(self):
        """EngineModule, recording the exception its state_dict loading turns into an error message."""
        errors = self.inner_errors

        class ProbeModule(self.forge.EngineModule):
            def _restore(self, *args, **kwargs):
                try:
                    return super()._restore(*args, **kwargs)
                except BaseException as exc:
                    errors.append(exc)
                    raise

        return ProbeModule

    def _run_cache(self, request: dict) -> dict:
        from tensorforge.engine import Plan

        inputs, expected = self.io[request["seed"]]
        data = Path(request["path"]).read_bytes()
        self.enter("plan-load")
        # as the cache loads it: an entry must be the plan built for the key it is stored under
        keyed = "cache_key" in inspect.signature(Plan.from_bytes).parameters
        try:
            plan = Plan.from_bytes(data, device="cpu", **({"cache_key": Path(request["path"]).stem} if keyed else {}))
        except BaseException as exc:  # noqa: BLE001
            direct = _error(exc, self.stage)
            if not request.get("through_module"):
                return direct
        else:
            batch = min(2, plan.max_batch) if isinstance(plan.max_batch, int) and plan.max_batch >= 1 else 1
            self.enter("inputs")
            try:
                inputs_for_plan = _synthetic_inputs(plan.input_types, request["index"], batch)
            except InputsTooLarge as exc:
                return {"status": "ran", "oracle": False, "detail": str(exc)}
            self.enter("plan-run")
            plan.run(*inputs_for_plan)
            direct = None
        # the module that owns the entry, loaded without plans, finds it in its cache directory
        self.enter("load")
        os.environ["TENSORFORGE_CACHE_DIR"] = request["cache_dir"]
        try:
            module = self.forge.load(request["noplans"])
        finally:
            del os.environ["TENSORFORGE_CACHE_DIR"]
        self.enter("run")
        equal, detail = _compare(module(*inputs), expected)
        if direct is not None:  # the entry was refused as it should be; the module must have rebuilt it
            direct["then_module_equal"] = equal
            return direct
        return {"status": "ran", "equal": equal, "detail": detail, "oracle": True}

    def _run_onnx(self, request: dict) -> dict:
        import onnxruntime as ort

        self.enter("import")
        graph = self.forge.frontends.from_onnx(request["path"])
        if request.get("reads_outside"):
            return {"status": "escape", "detail": "imported a model whose external data lies outside its folder"}
        self.enter("build")
        module = self.forge.build(graph, device="cpu")
        self.enter("inputs")
        try:
            inputs = _synthetic_inputs([v.type for v in graph.inputs], request["index"])
        except InputsTooLarge as exc:
            return {"status": "ran", "oracle": False, "detail": str(exc)}
        self.enter("run")
        outputs = module(*inputs)
        self.enter("oracle")
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.log_severity_level = 4
            # the oracle runs the model as written: onnxruntime's graph rewrites are not always faithful (the long
            # run found its Add + LayerNormalization(axis=-2) fusion off by 1.2 where onnx's reference evaluator and
            # onnxruntime without rewrites agree with tensorforge)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(request["path"], options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            if names != [v.name for v in graph.inputs]:
                return {"status": "ran", "oracle": False, "detail": "onnxruntime sees other inputs"}
            expected = [
                torch.from_numpy(np.asarray(r))
                for r in session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
            ]
        except Exception as exc:  # noqa: BLE001 - onnxruntime refusing the model means there is no oracle
            return {"status": "ran", "oracle": False, "detail": f"onnxruntime: {type(exc).__name__}"}
        equal, detail = _compare(outputs, expected)
        return {"status": "ran", "equal": equal, "detail": detail, "oracle": True}

    def _run_selftest(self, request: dict) -> dict:
        """Failures planted on purpose, so a test can check that the harness sees each kind (fuzz_runner.SELFTESTS)."""
        import ctypes

        canaries = self.manifest["canaries"]
        action = request["loader"]
        self.enter("run")
        if action == "segfault":
            ctypes.string_at(0)
        elif action == "hang":
            import time

            time.sleep(3600)
        elif action == "exception":
            return {}["no such key"]
        elif action == "escape":
            Path("../../escaped-file").write_text("x")
        elif action == "import":
            __import__(canaries["module"])
        elif action == "library" and canaries.get("shared_library"):
            ctypes.CDLL(canaries["shared_library"])
        elif action == "system":
            os.system(f"touch {canaries['dir']}/system-$PPID")
        elif action == "wrong":
            return {"status": "ran", "equal": False, "detail": "planted", "oracle": True}
        return {"status": "ran", "equal": True, "detail": "", "oracle": True}

    # -- warm-up --------------------------------------------------------------------------------

    def warm_up(self, requests: list[dict]) -> list[dict]:
        """Run every unmutated seed once: lazy imports happen now, and each seed's own warnings are learnt."""
        results = []
        for request in requests:
            result = self.run(request)
            self.baseline_warnings[request["seed"]] = set(result["warnings"])
            results.append(result)
        return results


def main() -> None:
    channel = _Channel(int(os.environ["FUZZ_CHANNEL_FD"]))
    os.dup2(2, 1)  # what libraries print goes to the worker log, never into the channel
    faulthandler.enable()
    torch.set_num_threads(1)
    sys.setrecursionlimit(int(os.environ.get("FUZZ_RECURSION_LIMIT", "1000")))
    worker = Worker(os.environ["FUZZ_SEEDS"], channel)
    warm = json.loads(sys.stdin.readline())
    channel.send(ready=worker.warm_up(warm["warm_up"]))
    seen = set(sys.modules)
    for line in sys.stdin:
        request = json.loads(line)
        result = worker.run(request)
        result["new_modules"] = sorted(set(sys.modules) - seen)
        seen = set(sys.modules)
        channel.send(result=result)


if __name__ == "__main__":
    main()
