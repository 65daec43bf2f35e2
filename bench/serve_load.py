"""Load test: a `.tforge` behind Triton Inference Server against the eager PyTorch model served the same way.

Three servers, one after the other in the same run, each a Triton Inference Server with the same dynamic batcher
(`--max-batch-size`, `--max-queue-delay-us`) and `--instances` model instances (`--servers` picks and orders them):

  tensorforge  `tensorforge.serving.serve(module, block=False)`, PyTriton in this process: the compiled module,
               plans built for `--max-batch-size`, saved to a .tforge and loaded back (as a deployment loads it);
               on CUDA compiled with `cuda_graph_cache_size` >= the batch limit, so a graph per batch size stays
               cached;
  eager        the PyTorch model in `--precision`, bound here to PyTriton through the same request handling
               (`triton_backend.BatchRunner`: the requests Triton batched concatenated, run once, split back);
  repository   the same .tforge through `export_triton` (config.pbtxt, the Python backend's model.py) in the stock
               tritonserver that nvidia-pytriton bundles, a process of its own: each instance loads the plans in
               its backend process, with no hop back to a PyTriton process.

Against each, closed-loop clients (tritonclient, `--protocol http|grpc`) at each `--concurrency`: every client sends
a request, waits for its reply, checks it and sends the next, until `--requests` replies have come back at that
level. Clients run as threads in `--client-processes` processes of their own, so the server's Python keeps this
process to itself. Each request is one of 16 fixed inputs of `--batch` rows; its reply must match what the model
gives for that input called directly in this process (tensorforge: the served module; eager: the eager model), to
1e-4 in FP32 and 2e-2 in FP16/BF16 (relative to the output's largest value): else it counts as wrong.

Per server and concurrency: requests answered, errors (the first error's message), wrong replies, throughput
(requests/s and samples/s over the level's wall time), latency p50/p90/p99/mean/max (ms, per request, at the
client), and each tensorforge server's speedup over eager. `--out`/serve_load.json (rewritten after every level),
serve_load.md (the table) and each server's Triton log; the exit status is 1 if any request went unanswered or
wrong. On CUDA `--requests` defaults to 100,000 to tensorforge in all (25,000 per level at the four default levels)
and `--eager-requests` to 5,000 per level (eager is the slow comparison: its latency needs fewer samples). The
bare module is measured in the same run (in-process, batch 1 and the batch limit) and the issue's targets are checked
against it (`targets`).

Models (random weights, seeded): `tiny` (an MLP, float32 [n, 256]: the CPU smoke), `resnet50` (torchvision,
[n, 3, 224, 224]) and `bert_base` (transformers' BertModel, int64 ids and mask [n, 128]), the last two
`bench/benchmark.py`'s, which need torchvision / transformers in the serving Python.

Runs in .venv-serve (PyTriton and tritonclient; scripts/setup_serve.sh):

    .venv-serve/bin/python bench/serve_load.py --model tiny --device cpu --requests 400 --concurrency 1,8
    .venv-serve/bin/python bench/serve_load.py --model resnet50 --device cuda --protocol grpc --out $OUT
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = ("tiny", "resnet50", "bert_base")
POOL = 16  # distinct request inputs, each checked against its own expected outputs
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 2e-2}
WARMUP_PER_CLIENT = 2


# -- models ---------------------------------------------------------------------------------------------------


def make_model(name: str):
    """(model in eval mode on the CPU, float32; maker of its inputs for n rows from a torch.Generator)."""
    import torch

    if name == "tiny":
        torch.manual_seed(0)
        layers = [torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU()]
        mlp = torch.nn.Sequential(*layers, torch.nn.Linear(512, 16))
        return mlp.eval(), lambda n, gen: (torch.randn(n, 256, generator=gen),)
    sys.path.insert(0, str(HERE))
    try:
        from benchmark import make_model as benchmark_model
    except ImportError as exc:
        raise SystemExit(f"--model {name} needs {exc.name} here (pip install torchvision transformers)") from None
    model, _ = benchmark_model(name)
    if name == "bert_base":
        vocab = model.config.vocab_size

        def bert_inputs(n, gen):
            return torch.randint(0, vocab, (n, 128), generator=gen), torch.ones(n, 128, dtype=torch.long)

        return model, bert_inputs
    return model, lambda n, gen: (torch.randn(n, 3, 224, 224, generator=gen),)


def output_tuple(out) -> tuple:
    """A model's outputs as a tuple of tensors, in the order tensorforge's graph has them (a Hugging Face
    ModelOutput's fields in order)."""
    if hasattr(out, "to_tuple"):
        return tuple(out.to_tuple())
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


# -- servers --------------------------------------------------------------------------------------------------


class EagerServer:
    """The eager model behind PyTriton, bound as `tensorforge.serving.serve` binds a module: the module's signature
    (names, dtypes, dims, batching), the same dynamic batcher and instances, the same request handling."""

    def __init__(self, model, module, precision: str, args, log_file: Path):
        import torch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        from tensorforge.serving import BatchRunner, signature_of
        from tensorforge.serving.net import free_ports, http_ok
        from tensorforge.serving.pytriton_server import infer_function, security_config

        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

        @torch.inference_mode()
        def run(*inputs):
            inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
            return tuple(o.float() if o.is_floating_point() else o for o in output_tuple(model(*inputs)))

        self.signature = signature = signature_of(module, max_batch_size=args.max_batch_size)
        # `module` gives the device; `run` does the work, unpadded (eager has no CUDA graphs to keep to a few sizes);
        # as many instances as the tensorforge server, each with a stream of its own
        runners = [
            BatchRunner(module, signature, context=run, pad_batches=False, host_outputs=True)
            for _ in range(args.instances)
        ]
        http_port, grpc_port = free_ports(2)
        self.model_name = "eager"
        self.url, self.grpc_url = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        config = TritonConfig(
            http_address="127.0.0.1",
            http_port=http_port,
            grpc_address="127.0.0.1",
            grpc_port=grpc_port,
            allow_metrics=False,
            exit_timeout_secs=5,
            log_file=log_file,
            strict_readiness=True,
        )
        # as serve(shared_memory=...): the shared-memory endpoints open when the load uses them
        security = security_config(args.shm != "none")
        self.access_token = security.access_token
        self.triton = Triton(config=config, security_config=security)
        self.triton.bind(
            model_name=self.model_name,
            infer_func=[infer_function(runner) for runner in runners],
            inputs=[Tensor(name=s.name, dtype=s.numpy_dtype.type, shape=s.dims) for s in signature.inputs],
            outputs=[Tensor(name=s.name, dtype=s.numpy_dtype.type, shape=s.dims) for s in signature.outputs],
            config=ModelConfig(
                batching=signature.batching,
                max_batch_size=signature.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=args.max_queue_delay_us,
                    preferred_batch_size=list(signature.preferred_batch_sizes) or None,
                ),
            ),
            strict=False,
        )
        self.triton.run()
        deadline = time.monotonic() + 120
        while not http_ok(f"{self.url}/v2/models/{self.model_name}/ready"):
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the eager server at {self.url} was not ready after 120 s (log: {log_file})")
            time.sleep(0.2)

    def stop(self) -> None:
        self.triton.stop()


class RepositoryServer:
    """The .tforge exported as a Triton model repository (`export_triton`: config.pbtxt, the Python backend's
    model.py) and served by the stock tritonserver nvidia-pytriton bundles (`TritonServerProcess`, what
    `tensorforge serve --server tritonserver` runs), as a deployment without PyTriton runs it: each instance loads
    the plans in a backend process of its own, with no hop back to this process."""

    def __init__(self, path: Path, device: str, args, work: Path, log_file: Path):
        from tensorforge.serving import TritonServerProcess, export_triton
        from tensorforge.serving.net import free_ports

        kind = "gpu" if device.startswith("cuda") else "cpu"
        repo = work / "repository"
        export_triton(path, repo, name=args.model, max_batch_size=args.max_batch_size, instances=args.instances,
                      kind=kind, max_queue_delay_us=args.max_queue_delay_us, overwrite=True)  # fmt: skip
        http_port, grpc_port, metrics_port = free_ports(3)
        self.server = TritonServerProcess(
            repo, work, args.model, host="127.0.0.1", http_port=http_port, grpc_port=grpc_port,
            metrics_port=metrics_port, shared_memory=args.shm != "none", exit_timeout_s=10, log_file=log_file,
        )  # fmt: skip
        self.model_name, self.access_token = args.model, self.server.access_token
        self.url, self.grpc_url = self.server.url, self.server.grpc_url
        try:
            self.server.wait_ready(300)  # each instance loads its plans and captures its CUDA graphs
        except (RuntimeError, TimeoutError) as exc:
            self.server.stop()
            message = f"tritonserver on the exported repository did not get ready: {exc} (log: {log_file})"
            raise RuntimeError(message) from exc

    def stop(self) -> None:
        self.server.stop(30)


# -- clients (each process: threads, each with a client of its own) -------------------------------------------


def client_process(job: dict, counter, ready, start, results) -> None:
    """`job["threads"]` closed-loop clients; puts one result dict per process on `results`."""
    import threading

    pool = np.load(job["pool"])
    inputs = [[pool[f"in{i}_{k}"] for k in range(job["n_inputs"])] for i in range(POOL)]
    expected = [[pool[f"out{i}_{k}"] for k in range(job["n_outputs"])] for i in range(POOL)]
    latencies: list[list[float]] = []
    tallies: list[dict] = []

    def client_thread(index: int) -> None:
        mine: list[float] = []
        tally: dict[str, Any] = {"answered": 0, "errors": 0, "wrong": 0, "first_error": None, "max_error": 0.0}
        latencies.append(mine)
        tallies.append(tally)
        try:
            client, requests, outputs = _client(job, inputs)
            for w in range(WARMUP_PER_CLIENT):
                _infer(client, job, requests[w % POOL], outputs)
        except Exception as exc:  # noqa: BLE001  (a client that cannot start is counted as an error, not a crash)
            tally["errors"] += 1
            tally["first_error"] = f"client start: {type(exc).__name__}: {exc}"
            ready.put(index)
            return
        ready.put(index)
        start.wait()
        stop_at = time.monotonic() + job["time_limit_s"]  # then report what was done, inside the level's limit
        while time.monotonic() < stop_at:
            with counter.get_lock():
                n = counter.value
                if n >= job["requests"]:
                    break
                counter.value = n + 1
            which = (n * 7 + index) % POOL
            begin = time.perf_counter()
            try:
                reply = _infer(client, job, requests[which], outputs)
            except Exception as exc:  # noqa: BLE001  (every failure of a request is counted and the load goes on)
                tally["errors"] += 1
                if tally["first_error"] is None:
                    tally["first_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
                continue
            mine.append((time.perf_counter() - begin) * 1e3)
            tally["answered"] += 1
            error = _error(reply, expected[which])
            tally["max_error"] = max(tally["max_error"], error)
            if not error <= job["tolerance"]:
                tally["wrong"] += 1
        tally["end"] = time.monotonic()

    threads = [threading.Thread(target=client_thread, args=(job["first_thread"] + t,)) for t in range(job["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(
        {
            "latencies_ms": [x for mine in latencies for x in mine],
            "answered": sum(t["answered"] for t in tallies),
            "errors": sum(t["errors"] for t in tallies),
            "wrong": sum(t["wrong"] for t in tallies),
            "max_error": max((t["max_error"] for t in tallies), default=0.0),
            "first_error": next((t["first_error"] for t in tallies if t["first_error"]), None),
            "end": max((t.get("end", 0.0) for t in tallies), default=0.0),
        }
    )


def _client(job: dict, inputs: list[list[np.ndarray]]):
    """A tritonclient client, each pool entry's InferInputs (made once, sent many times) and the outputs asked."""
    tc = _protocol(job["protocol"])
    client = tc.InferenceServerClient(url=job["url"])
    requests = []
    for i, arrays in enumerate(inputs):
        infer_inputs = []
        for k, (name, datatype, array) in enumerate(zip(job["input_names"], job["input_types"], arrays)):
            infer_input = tc.InferInput(name, list(array.shape), datatype)
            if job.get("shm"):  # the server reads it from the pool's shared-memory region: no bytes on the wire
                offset, nbytes = job["shm"]["slots"][i][k]
                infer_input.set_shared_memory(job["shm"]["name"], nbytes, offset=offset)
            elif job["protocol"] == "grpc":
                infer_input.set_data_from_numpy(array)
            else:
                infer_input.set_data_from_numpy(array, binary_data=True)
            infer_inputs.append(infer_input)
        requests.append(infer_inputs)
    if job["protocol"] == "grpc":
        outputs = [tc.InferRequestedOutput(n) for n in job["output_names"]]
    else:
        outputs = [tc.InferRequestedOutput(n, binary_data=True) for n in job["output_names"]]
    return client, requests, outputs


def _infer(client, job: dict, infer_inputs, outputs) -> list[np.ndarray]:
    result = client.infer(job["model_name"], infer_inputs, outputs=outputs)
    return [result.as_numpy(n) for n in job["output_names"]]


def _error(reply: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """The largest difference from the expected outputs, relative to each output's largest value (inf on a shape
    mismatch or a missing output)."""
    worst = 0.0
    for got, want in zip(reply, expected):
        if got is None or got.shape != want.shape:
            return float("inf")
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)
        worst = max(worst, float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) / scale)
    return worst


def _collect(q, n: int, workers: list, timeout_s: float, into: list | None = None) -> int:
    """Take up to `n` items from `q` (into `into`) within `timeout_s`, giving up early once every worker has exited
    and nothing is left; how many came."""
    deadline, got = time.monotonic() + timeout_s, 0
    while got < n and time.monotonic() < deadline:
        try:
            item = q.get(timeout=1.0)
        except queue.Empty:
            if not any(w.is_alive() for w in workers):
                try:
                    item = q.get(timeout=1.0)
                except queue.Empty:
                    break
            else:
                continue
        got += 1
        if into is not None:
            into.append(item)
    return got


def run_level(server: dict, concurrency: int, args, pool_file: Path, requests: int) -> dict:
    """`requests` requests from `concurrency` closed-loop clients; the level's statistics."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs Triton's proxy and CUDA
    processes = min(concurrency, args.client_processes)
    counter, ready, start, results = ctx.Value("q", 0), ctx.Queue(), ctx.Event(), ctx.Queue()
    base = {
        **server,
        "protocol": args.protocol,
        "requests": requests,
        "pool": str(pool_file),
        "tolerance": TOLERANCE[args.precision],
        "shm": server.get("shm"),
        # clients stop sending here and report, so a level cut by its time limit still counts what it did
        "time_limit_s": max(1.0, args.level_timeout_s - 15.0),
    }
    workers, first = [], 0
    for p in range(processes):
        threads = concurrency // processes + (1 if p < concurrency % processes else 0)
        job = {**base, "threads": threads, "first_thread": first}
        first += threads
        worker = ctx.Process(target=client_process, args=(job, counter, ready, start, results), daemon=True)
        worker.start()
        workers.append(worker)
    if _collect(ready, concurrency, workers, 300.0) < concurrency:  # every client connected and warmed up
        counter.value = requests  # what started stops at once; the level counts what it did
    stats_before = triton_statistics(server, args.protocol)  # after the clients' warm-up requests
    began = time.monotonic()
    start.set()
    parts: list[dict] = []
    _collect(results, len(workers), workers, args.level_timeout_s, parts)
    with counter.get_lock():
        counter.value = requests  # past the level's time: clients still running stop after their request
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.terminate()
    latencies = np.asarray([x for p in parts for x in p["latencies_ms"]], dtype=np.float64)
    answered = sum(p["answered"] for p in parts)
    errors = sum(p["errors"] for p in parts)
    silent = len(workers) - len(parts)  # client processes that never reported (died, or hung past the limit)
    first_error = next((p["first_error"] for p in parts if p["first_error"]), None)
    if silent:  # what they did is unknown: every request not reported counts as an error
        errors = requests - answered
        first_error = (
            first_error or f"{silent} of {len(workers)} client processes reported nothing within the level's time limit"
        )
    not_sent = requests - answered - errors  # left when the clients' time limit came (0 unless it came)
    seconds = max(max((p["end"] for p in parts), default=began) - began, 0.0)  # 0 when nothing was answered
    row = {
        "server": server["label"],
        "concurrency": concurrency,
        "requests": requests,
        "answered": answered,
        "errors": errors,
        "not_sent": not_sent,
        "wrong": sum(p["wrong"] for p in parts),
        "max_relative_error": max((p["max_error"] for p in parts), default=0.0),
        "first_error": first_error,
        "seconds": round(seconds, 3),
        "throughput_rps": round(answered / seconds, 1) if seconds > 0 else None,
        "samples_per_s": round(answered * args.batch / seconds, 1) if seconds > 0 else None,
    }
    if latencies.size:
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        row.update(
            p50_ms=round(p50, 3),
            p90_ms=round(p90, 3),
            p99_ms=round(p99, 3),
            mean_ms=round(float(latencies.mean()), 3),
            max_ms=round(float(latencies.max()), 3),
        )
    row["server_stats"] = statistics_delta(stats_before, triton_statistics(server, args.protocol))
    return row


def triton_statistics(server: dict, protocol: str) -> dict | None:
    """Triton's own cumulative statistics of the served model (the statistics extension), None where it has none."""
    from tensorforge.serving.triton_repository import ACCESS_HEADER

    try:
        client = _protocol(protocol).InferenceServerClient(url=server["url"])
        token = server.get("access_token")
        header = ("triton-grpc-protocol-" if protocol == "grpc" else "") + ACCESS_HEADER
        headers = {header: token} if token else None
        if protocol == "grpc":
            reply = client.get_inference_statistics(model_name=server["model_name"], headers=headers, as_json=True)
        else:
            reply = client.get_inference_statistics(model_name=server["model_name"], headers=headers)
        return (reply.get("model_stats") or [None])[0]
    except Exception:  # noqa: BLE001  (statistics are a diagnosis: a server without them still gets measured)
        return None


def statistics_delta(before: dict | None, after: dict | None) -> dict | None:
    """What the server did during one level, from Triton's statistics: the batches it executed and their mean size,
    and per request the mean time in its queue, in the backend's input/infer/output phases, and in the server in
    all (set against the client's latency: the rest is the client and the network)."""
    if not before or not after:
        return None

    def number(stats: dict, *path: str) -> int:
        for key in path:
            stats = (stats or {}).get(key) or {}
        return int(stats or 0)  # gRPC's JSON gives int64 as strings

    requests = number(after, "inference_count") - number(before, "inference_count")
    batches = number(after, "execution_count") - number(before, "execution_count")
    out: dict[str, Any] = {"batches": batches, "mean_batch": round(requests / batches, 2) if batches else None}
    for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        count = number(after, "inference_stats", phase, "count") - number(before, "inference_stats", phase, "count")
        ns = number(after, "inference_stats", phase, "ns") - number(before, "inference_stats", phase, "ns")
        out[f"{phase}_us"] = round(ns / count / 1e3, 1) if count else None
    return out


# -- the run --------------------------------------------------------------------------------------------------


def bare_module(module, make_inputs, device, batches: list[int], gen) -> dict[str, dict]:
    """The compiled module called directly in this process (inputs already on its device, no server), per batch:
    latency percentiles and samples/s, what the served numbers are held against (the issue's targets)."""
    import torch

    rows = {}
    for batch in batches:
        inputs = tuple(t.to(device) for t in make_inputs(batch, gen))
        calls = max(50, min(1000, 4000 // batch))
        times = []
        with torch.inference_mode():
            for i in range(calls + 10):
                start = time.perf_counter()
                module(*inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= 10:  # warm-up: CUDA-graph capture, allocator
                    times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        median = times[len(times) // 2]
        rows[str(batch)] = {
            "calls": calls,
            "p50_ms": round(median, 3),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 3),
            "samples_per_s": round(batch / median * 1e3, 1),
        }
    return rows


SERVED = {"tensorforge": "tensorforge (PyTriton)", "repository": "tensorforge (exported repository)"}


def targets(report: dict) -> list[dict]:
    """The serving issue's targets, checked against this run for each way tensorforge was served (PyTriton, the
    exported repository): at the highest concurrency against the bare module at the batch limit (>= 70%) and
    against eager served through PyTriton (>= 3x); p99 at concurrency 1 within 1 ms of the bare module's at batch 1;
    every request answered, none wrong."""
    rows, bare = report["rows"], report.get("bare") or {}
    eager = {r["concurrency"]: r for r in rows if r["server"] == "eager"}
    limit = str(report["config"]["max_batch_size"])
    out = []
    for label, title in SERVED.items():
        forge = {r["concurrency"]: r for r in rows if r["server"] == label}
        if not forge:
            continue
        top = max(forge)
        if forge[top].get("samples_per_s") and limit in bare:
            ratio = forge[top]["samples_per_s"] / bare[limit]["samples_per_s"]
            out.append({"target": f"{title} at concurrency {top} >= 70% of the bare module at batch {limit}",
                        "value": f"{ratio:.0%}", "ok": bool(ratio >= 0.7)})  # fmt: skip
        if top in eager and forge[top].get("samples_per_s") and eager[top].get("samples_per_s"):
            ratio = forge[top]["samples_per_s"] / eager[top]["samples_per_s"]
            out.append({"target": f"{title} >= 3x eager served the same way at concurrency {top}",
                        "value": f"{ratio:.2f}x", "ok": bool(ratio >= 3.0)})  # fmt: skip
        if 1 in forge and forge[1].get("p99_ms") is not None and "1" in bare:
            gap = forge[1]["p99_ms"] - bare["1"]["p99_ms"]
            out.append({"target": f"{title}: p99 at concurrency 1 within 1 ms of the bare module's at batch 1",
                        "value": f"{forge[1]['p99_ms']} ms against {bare['1']['p99_ms']} ms (+{gap:.2f} ms)",
                        "ok": bool(gap <= 1.0)})  # fmt: skip
        total = sum(r["requests"] - r.get("not_sent", 0) for r in forge.values())
        lost = sum(r["errors"] + r["wrong"] for r in forge.values())
        not_sent = sum(r.get("not_sent", 0) for r in forge.values())
        value = f"{total - lost} of {total}" + (f" ({not_sent} not sent: the levels' time limit)" if not_sent else "")
        out.append({"target": f"every request to {title} answered, none wrong",
                    "value": value, "ok": bool(lost == 0 and total > 0)})  # fmt: skip
    return out


class SharedPool:
    """The request pool's inputs in one shared-memory region that every client's requests point into (Triton's
    shared-memory extension), so a request carries a region's name and an offset instead of its bytes, as
    perf_analyzer's --shared-memory does: `system` (host memory; the server reads it from there), or `cuda` (GPU
    memory shared through a CUDA IPC handle: inputs reach a GPU model without a host copy or a transfer per
    request; needs cuda-python, which tritonclient's CUDA helpers use). Registered with each server in turn
    (`register`), destroyed at the end."""

    def __init__(self, pool_inputs: list[tuple], kind: str = "system", device_id: int = 0) -> None:
        self.kind, self.device_id = kind, device_id
        self.name = f"tforge_pool_{os.getpid()}"
        self.slots: list[list[tuple[int, int]]] = []
        offset = 0
        for arrays in pool_inputs:
            row = []
            for a in arrays:
                row.append((offset, int(a.nbytes)))
                offset += int(a.nbytes)
            self.slots.append(row)
        self.size = offset
        flat = [np.ascontiguousarray(a) for arrays in pool_inputs for a in arrays]  # in the slots' order
        if kind == "cuda":
            import tritonclient.utils.cuda_shared_memory as shm

            self.shm = shm
            self.handle = shm.create_shared_memory_region(self.name, self.size, device_id)
            shm.set_shared_memory_region(self.handle, flat)  # back to back from offset 0, as the slots are
        else:
            import tritonclient.utils.shared_memory as shm

            self.shm = shm
            self.key = f"/{self.name}"
            self.handle = shm.create_shared_memory_region(self.name, self.key, self.size)
            for a, (start, _) in zip(flat, (slot for row in self.slots for slot in row)):
                shm.set_shared_memory_region(self.handle, [a], offset=start)

    def job(self) -> dict:
        return {"name": self.name, "slots": self.slots}

    def register(self, url: str, protocol: str) -> None:
        client = _protocol(protocol).InferenceServerClient(url=url)
        if self.kind == "cuda":
            raw = self.shm.get_raw_handle(self.handle)
            client.register_cuda_shared_memory(self.name, raw, self.device_id, self.size)
        else:
            client.register_system_shared_memory(self.name, self.key, self.size)

    def close(self) -> None:
        self.shm.destroy_shared_memory_region(self.handle)


def _protocol(name: str):
    if name == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    return tc


def write_pool(path: Path, inputs: list[tuple], outputs: list[tuple]) -> None:
    arrays = {}
    for i, (ins, outs) in enumerate(zip(inputs, outputs)):
        arrays.update({f"in{i}_{k}": a for k, a in enumerate(ins)})
        arrays.update({f"out{i}_{k}": a for k, a in enumerate(outs)})
    np.savez(path, **arrays)


def expected_outputs(fn, pool_inputs, device) -> list[tuple[np.ndarray, ...]]:
    import torch

    outs = []
    for ins in pool_inputs:
        result = fn(*(torch.from_numpy(a).to(device) for a in ins))
        result = result if isinstance(result, tuple) else (result,)
        outs.append(
            tuple(r.detach().float().cpu().numpy() if r.is_floating_point() else r.cpu().numpy() for r in result)
        )
    return outs


def _servers_line(cfg: dict) -> str:
    what = {"tensorforge": "tensorforge through PyTriton", "eager": "eager PyTorch through PyTriton",
            "repository": "tensorforge's exported repository in the stock tritonserver, Python backend"}  # fmt: skip
    return "; ".join(what[s] for s in cfg.get("servers", ["tensorforge", "eager"]))


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"# Serving load test: {cfg['model']} on {report['environment'].get('gpu') or 'CPU'}",
        "",
        f"Triton Inference Server ({_servers_line(cfg)}), {cfg['protocol']}, dynamic batcher max_batch_size "
        f"{cfg['max_batch_size']}, max_queue_delay {cfg['max_queue_delay_us']} us, "
        f"{cfg.get('instances', 1)} instance(s); {cfg['precision']}; "
        f"inputs {'in the requests' if cfg.get('shm', 'none') == 'none' else 'in ' + cfg['shm'] + ' shared memory'}; "
        f"requests of batch {cfg['batch']}, {cfg['requests']} per level to tensorforge and {cfg['eager_requests']} to "
        f"eager; closed-loop clients in "
        f"{cfg['client_processes']} process(es).",
        "",
        "| server | concurrency | answered | errors | wrong | not sent | req/s | samples/s | p50 ms | p90 ms | p99 ms "
        "| max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['server']} | {r['concurrency']} | {r['answered']} | {r['errors']} | {r['wrong']} | "
            f"{r.get('not_sent', 0)} | "
            f"{r.get('throughput_rps')} | {r.get('samples_per_s')} | {r.get('p50_ms')} | {r.get('p90_ms')} | "
            f"{r.get('p99_ms')} | {r.get('max_ms')} |"
        )
    if report.get("speedups"):
        lines += [
            "",
            "| served | concurrency | throughput / eager's | eager's p99 / its p99 |",
            "|---|---:|---:|---:|",
        ]
        for s in report["speedups"]:
            served = SERVED[s.get("server", "tensorforge")]
            lines.append(f"| {served} | {s['concurrency']} | {s['throughput_x']} | {s['p99_x']} |")
    stats = [r for r in report["rows"] if r.get("server_stats")]
    if stats:
        lines += [
            "",
            "Inside the server (Triton's statistics over each level; per request, in microseconds):",
            "",
            "| server | concurrency | batches | mean batch | queue | input | infer | output | in server | client p50 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in stats:
            t = r["server_stats"]
            p50 = round(r["p50_ms"] * 1e3, 1) if r.get("p50_ms") is not None else None
            lines.append(
                f"| {r['server']} | {r['concurrency']} | {t['batches']} | {t['mean_batch']} | {t['queue_us']} | "
                f"{t['compute_input_us']} | {t['compute_infer_us']} | {t['compute_output_us']} | {t['success_us']} | "
                f"{p50} |"
            )
    if report.get("bare"):
        lines += ["", "The bare module (called in-process, inputs on its device, no server):", ""]
        lines += ["| batch | p50 ms | p99 ms | samples/s |", "|---:|---:|---:|---:|"]
        for batch, b in report["bare"].items():
            lines.append(f"| {batch} | {b['p50_ms']} | {b['p99_ms']} | {b['samples_per_s']} |")
    if report.get("targets"):
        lines += ["", "Targets:", ""]
        lines += [f"- {'PASS' if t['ok'] else 'FAIL'}: {t['target']}: {t['value']}" for t in report["targets"]]
    for label, error in (report.get("server_errors") or {}).items():
        lines += ["", f"The {label} server did not start: {error}"]
    errors = [r for r in report["rows"] if r.get("first_error")]
    if errors:
        lines += ["", "First errors:", ""] + [
            f"- {r['server']} @ {r['concurrency']}: {r['first_error']}" for r in errors
        ]
    total = sum(r["requests"] for r in report["rows"])
    answered = sum(r["answered"] for r in report["rows"])
    wrong = sum(r["wrong"] for r in report["rows"])
    not_sent = sum(r.get("not_sent", 0) for r in report["rows"])
    lines += ["", f"All levels: {answered} of {total - not_sent} requests sent answered, {wrong} wrong"
              + (f"; {not_sent} not sent (the levels' time limit)." if not_sent else ".")]  # fmt: skip
    return "\n".join(lines) + "\n"


def speedups(rows: list[dict]) -> list[dict]:
    """Per way tensorforge was served and per concurrency: its throughput and p99 against eager's."""
    out = []
    for forge in (r for r in rows if r["server"] in SERVED):
        eager = next((r for r in rows if r["server"] == "eager" and r["concurrency"] == forge["concurrency"]), None)
        if eager and forge.get("throughput_rps") and eager.get("throughput_rps") and forge.get("p99_ms"):
            out.append(
                {
                    "server": forge["server"],
                    "concurrency": forge["concurrency"],
                    "throughput_x": round(forge["throughput_rps"] / eager["throughput_rps"], 2),
                    "p99_x": round(eager["p99_ms"] / forge["p99_ms"], 2),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda where there is a GPU)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument(
        "--requests", type=int, default=None, help="to tensorforge per level (default: CUDA 100000 in all, CPU 400)"
    )
    parser.add_argument(
        "--eager-requests", type=int, default=None, help="to eager per level (default: CUDA 5000, else --requests)"
    )
    parser.add_argument("--concurrency", default="1,8,32,128", help="comma-separated client counts")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None, help="default fp16 on CUDA")
    parser.add_argument("--max-batch-size", type=int, default=None, help="Triton's (and the plans'); CUDA 64, CPU 8")
    parser.add_argument("--max-queue-delay-us", type=int, default=100)
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="model instances of each server (default 1); on a GPU two let one batch's copies overlap another's run",
    )
    parser.add_argument(
        "--shm",
        choices=("none", "system", "cuda"),
        default="none",
        help="system (host) or cuda (GPU, through a CUDA IPC handle): requests point into one shared-memory region "
        "of inputs instead of carrying them",
    )
    parser.add_argument(
        "--servers",
        default="tensorforge,eager,repository",
        help="which, in order (tensorforge: PyTriton; eager; repository: export-triton in the stock tritonserver)",
    )
    parser.add_argument("--client-processes", type=int, default=None, help="default min(8, cores / 2), at least 1")
    parser.add_argument("--level-timeout-s", type=float, default=900.0, help="the most one level may take")
    parser.add_argument("--out", default="bench/results/serve_load", help="folder for the JSON, markdown and logs")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here (use --device cpu)")
    args.precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    levels = [int(c) for c in args.concurrency.split(",") if c]
    servers = [s for s in args.servers.split(",") if s]
    if unknown := set(servers) - {"tensorforge", "eager", "repository"}:
        parser.error(f"unknown server(s) {sorted(unknown)}: tensorforge, eager, repository")
    if args.shm == "cuda" and device.type != "cuda":
        parser.error("--shm cuda: the inputs' region is GPU memory, for --device cuda")
    if not levels or min(levels) < 1:
        parser.error("--concurrency: positive client counts, e.g. 1,8,32,128")
    args.requests = args.requests or (100_000 // len(levels) if device.type == "cuda" else 400)
    args.eager_requests = args.eager_requests or (5_000 if device.type == "cuda" else args.requests)
    args.max_batch_size = args.max_batch_size or (64 if device.type == "cuda" else 8)
    args.client_processes = args.client_processes or max(1, min(8, (os.cpu_count() or 2) // 2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))  # the .tforge and the request pools: not results
    try:
        return run(args, device, levels, servers, out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, device, levels: list[int], servers: list[str], out: Path, work: Path) -> int:
    import torch

    import tensorforge as forge

    started = time.perf_counter()
    model, make_inputs = make_model(args.model)
    gen = torch.Generator().manual_seed(1)
    example = make_inputs(2, gen)
    precision = {"fp32": "fp32-strict" if device.type == "cuda" else "fp32"}.get(args.precision, args.precision)
    # on CUDA, one CUDA graph per batch size the dynamic batcher can form, all kept (the default keeps 8)
    graphs = {"cuda_graph_cache_size": max(8, args.max_batch_size)} if device.type == "cuda" else {}
    module = forge.compile(model, example, precision=precision, device=device, **graphs)
    module.build_all(args.max_batch_size)
    path = work / f"{args.model}.tforge"
    module.save(path)
    module = forge.load(path, device=device)  # as a deployment loads it: plans from the file
    build_s = time.perf_counter() - started
    pool_inputs = [tuple(t.numpy() for t in make_inputs(args.batch, gen)) for _ in range(POOL)]
    eager = model.to(device, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision])

    def eager_call(*xs):
        with torch.inference_mode():
            dtype = next(eager.parameters()).dtype
            return output_tuple(eager(*(x.to(dtype) if x.is_floating_point() else x for x in xs)))

    bare = bare_module(module, make_inputs, device, sorted({1, args.max_batch_size}), gen)
    print(f"bare module: {json.dumps(bare)}", flush=True)
    expected = {"tensorforge": expected_outputs(module, pool_inputs, device), "eager": None}
    expected["repository"] = expected["tensorforge"]  # the same plans, loaded by each backend instance
    expected["eager"] = expected_outputs(eager_call, pool_inputs, device)
    forge_vs_eager = max(_error(list(f), list(e)) for f, e in zip(expected["tensorforge"], expected["eager"]))

    report: dict[str, Any] = {
        "config": {**vars(args), "device": str(device), "servers": servers, "levels": levels},
        "environment": _environment(torch),
        "build_s": round(build_s, 1),
        "tensorforge_vs_eager_max_relative_error": forge_vs_eager,
        "bare": bare,
        "rows": [],
    }
    print(f"built and saved {path} in {build_s:.1f} s; tensorforge against eager: {forge_vs_eager:.2e}", flush=True)
    device_id = (device.index or 0) if device.type == "cuda" else 0
    shared = SharedPool(pool_inputs, args.shm, device_id) if args.shm != "none" else None
    try:
        return _serve_all(
            args, levels, servers, out, work, module, path, eager, pool_inputs, expected, report, shared, started
        )
    finally:
        if shared is not None:
            shared.close()


def _serve_all(
    args, levels, servers, out, work, module, path, eager, pool_inputs, expected, report, shared, started
) -> int:
    """Each server in turn, every level against it; the report written as it goes. The exit status."""
    from tensorforge.serving import serve, signature_of
    from tensorforge.serving.net import free_ports

    for label in servers:
        pool_file = work / f"pool_{label}.npz"
        write_pool(pool_file, pool_inputs, expected[label])
        log_file = out / f"triton_{label}.log"
        if label == "tensorforge":
            http_port, grpc_port = free_ports(2)
            handle = serve(
                module,
                name=args.model,
                max_batch_size=args.max_batch_size,
                max_queue_delay_us=args.max_queue_delay_us,
                instances=args.instances,
                host="127.0.0.1",
                http_port=http_port,
                grpc_port=grpc_port,
                metrics_port=None,
                block=False,
                shared_memory=args.shm != "none",
                log_file=log_file,
            )
            signature, model_name = handle.signature, handle.model_name
        elif label == "repository":
            try:
                handle = RepositoryServer(path, report["config"]["device"], args, work, log_file)
            except RuntimeError as exc:  # reported, and the other servers still measured
                print(f"repository: {exc}", flush=True)
                report.setdefault("server_errors", {})[label] = str(exc)
                continue
            signature, model_name = signature_of(module, max_batch_size=args.max_batch_size), handle.model_name
        else:
            handle = EagerServer(eager, module, args.precision, args, log_file)
            signature, model_name = handle.signature, handle.model_name
        server = {
            "label": label,
            "model_name": model_name,
            "url": (handle.grpc_url if args.protocol == "grpc" else handle.url).removeprefix("http://"),
            "input_names": [s.name for s in signature.inputs],
            "input_types": [s.triton_dtype for s in signature.inputs],
            "output_names": [s.name for s in signature.outputs],
            "n_inputs": len(signature.inputs),
            "n_outputs": len(signature.outputs),
            "access_token": getattr(handle, "access_token", None),  # PyTriton keeps statistics behind it
        }
        try:
            if shared is not None:
                shared.register(server["url"], args.protocol)
                server["shm"] = shared.job()
            for concurrency in levels:
                requests = args.eager_requests if label == "eager" else args.requests
                row = run_level(server, concurrency, args, pool_file, requests)
                report["rows"].append(row)
                report["speedups"] = speedups(report["rows"])
                print(json.dumps(row), flush=True)
                (out / "serve_load.json").write_text(json.dumps(report, indent=1))
                if row["answered"] == 0:  # a server that answers nothing would fail every level alike: save the time
                    print(f"{label}: no request answered at concurrency {concurrency}; its other levels skipped")
                    break
        finally:
            handle.stop()
    report["targets"] = targets(report)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    (out / "serve_load.json").write_text(json.dumps(report, indent=1))
    (out / "serve_load.md").write_text(markdown(report))
    print(markdown(report))
    bad = [r for r in report["rows"] if r["errors"] or r["wrong"]]
    return 1 if bad else 0


def _environment(torch) -> dict:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    try:
        import tritonclient

        info["tritonclient"] = getattr(tritonclient, "__version__", None)
    except ImportError:
        pass
    return info


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
