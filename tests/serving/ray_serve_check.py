"""Serve a `.tforge` file with `tensorforge.serving.ray_serve` on a local Ray instance and send it requests at once.

Run by tests/serving/test_ray_serve.py with .venv-serve's Python (where the `serve` extra, Ray included, lives):

    .venv-serve/bin/python tests/serving/ray_serve_check.py MODEL.tforge REQUESTS.npz REPLIES.npz

REQUESTS.npz holds request i's inputs as `r{i}_{k}` (input k, in the model's order); every request goes to the
deployment through the Python handle (all sent before any reply is read, so `@serve.batch` gathers them) and through
HTTP (JSON, from a thread pool), and both replies come back in REPLIES.npz as `handle{i}_{k}` / `http{i}_{k}`
(output k). Beside them, `summary.json` (in REPLIES' folder): the deployment's signature and statistics, and what
each wrong request got.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def main(model: str, requests_file: str, replies_file: str) -> None:
    import ray
    from ray import serve

    from tensorforge.serving import ray_serve

    stored = np.load(requests_file)
    count = 1 + max(int(k[1:].split("_")[0]) for k in stored.files)
    arity = sum(1 for k in stored.files if k.startswith("r0_"))
    requests = [tuple(stored[f"r{i}_{k}"] for k in range(arity)) for i in range(count)]
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # max_batch_size: the file's (its plans'); a short wait, so that the requests sent together run together
        app = ray_serve.deployment(model, name="tiny", batch_wait_timeout_s=0.05, num_gpus=0)
        handle = serve.run(app, name="tiny", route_prefix="/tiny")
        ready = time.perf_counter()
        signature = handle.signature.remote().result(timeout_s=60)
        names = [s["name"] for s in signature["inputs"]]
        replies: dict[str, np.ndarray] = {}

        # the Python handle: every request in flight before any reply is read; by position, by name (lists, arrays),
        # as one mapping
        calls = []
        for i, inputs in enumerate(requests):
            if i % 3 == 0:
                calls.append(handle.remote(*inputs))
            elif i % 3 == 1:
                calls.append(
                    handle.remote(**{n: a.tolist() if k else a for k, (n, a) in enumerate(zip(names, inputs))})
                )
            else:
                calls.append(handle.remote(dict(zip(names, inputs))))
        # the first input one column too wide, among the good requests
        first = requests[0]
        wrong = handle.remote(
            np.zeros((2, first[0].shape[1] + 1), first[0].dtype), *(a[:1].repeat(2, 0) for a in first[1:])
        )
        for i, call in enumerate(calls):
            outputs = call.result(timeout_s=60)
            for k, out in enumerate(outputs if isinstance(outputs, tuple) else (outputs,)):
                replies[f"handle{i}_{k}"] = out
        try:
            wrong.result(timeout_s=60)
            wrong_handle = "answered"
        except Exception as exc:  # noqa: BLE001  (Ray wraps the replica's ValueError in its own error type)
            wrong_handle = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}"

        # HTTP: JSON bodies from eight threads at once, by name and by position
        url = f"http://127.0.0.1:{port}/tiny"
        bodies = [
            {"inputs": {n: a.tolist() for n, a in zip(names, inputs)}}
            if i % 2
            else {"inputs": [a.tolist() for a in inputs]}
            for i, inputs in enumerate(requests)
        ]
        bodies.append({"inputs": {names[0]: requests[0][0].tolist()}})  # the other inputs missing
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: post(url, body), bodies))
        for i, (status, body) in enumerate(answers[:-1]):
            assert status == 200, (i, status, body)
            for k, name in enumerate(body["outputs"]):
                replies[f"http{i}_{k}"] = np.asarray(body["outputs"][name])
        with urllib.request.urlopen(url, timeout=60) as reply:
            described = json.loads(reply.read())
        np.savez(replies_file, **replies)
        summary = {
            "signature": handle.signature.remote().result(timeout_s=60),  # now with the statistics
            "http_signature": described,
            "wrong_handle": wrong_handle,
            "wrong_http": answers[-1],
            "startup_s": round(ready - started, 1),
            "requests_s": round(time.perf_counter() - ready, 1),
        }
        (Path(replies_file).parent / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
