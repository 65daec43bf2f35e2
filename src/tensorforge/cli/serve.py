"""`tensorforge serve` and `tensorforge export-triton`: a saved module behind NVIDIA Triton Inference Server.

tensorforge serve PLAN [--server pytriton|tritonserver] [--name N] [--max-batch-size B] [--max-queue-delay-us U]
                       [--instances K] [--gpus all|0,1] [--shared-memory] [--host H] [--http-port P] [--grpc-port P]
                       [--metrics-port P|--no-metrics]
    serves PLAN until SIGTERM or Ctrl+C (the `serve` extra): through PyTriton in this process
    (tensorforge.serving.serve), or with --server tritonserver as an exported repository in the bundled
    tritonserver (each instance a Python-backend process of its own; measured faster under load)
tensorforge export-triton PLAN REPO_DIR [--name N] [--max-batch-size B] [--instances K] [--kind gpu|cpu]
                          [--gpus all|0,1]
    writes REPO_DIR/<name>/ for a stock `tritonserver --model-repository REPO_DIR` (Python backend)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from .common import CLIError, bounded

_count = bounded(int, "an integer", 1)
_microseconds = bounded(int, "a whole number of microseconds", 0)
_port = bounded(int, "a port number", 1, 65535)
_seconds = bounded(float, "a number of seconds", 0.001)


def _gpus(text: str) -> str:
    from ..serving.devices import parse_gpus

    try:
        parse_gpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_serve_commands(sub, common: argparse.ArgumentParser) -> None:
    """Register `serve` and `export-triton` on the command line's subparsers."""
    batching = argparse.ArgumentParser(add_help=False)
    batching.add_argument(
        "--name", default=None, help="the Triton model name (default: the file's name without .tforge)"
    )
    batching.add_argument(
        "--max-batch-size",
        type=_count,
        default=None,
        metavar="N",
        help="largest batch Triton's dynamic batcher forms (default: the batch of the saved plans)",
    )
    batching.add_argument(
        "--max-queue-delay-us",
        type=_microseconds,
        default=100,
        metavar="US",
        help="how long a request may wait for others to batch with, in microseconds (default 100)",
    )
    batching.add_argument(
        "--instances",
        type=_count,
        default=1,
        metavar="K",
        help="model instances (per GPU with --gpus), each with its own execution context",
    )
    batching.add_argument(
        "--gpus",
        type=_gpus,
        default=None,
        metavar="all|0,1,...",
        help="place --instances instances on each of these GPUs (serve: the model loaded on each; export-triton: "
        "instance_group's gpus, 'all' being Triton's default of every GPU)",
    )

    p = sub.add_parser(
        "serve",
        parents=[common, batching],
        help="serve a .tforge behind Triton Inference Server (PyTriton or the bundled tritonserver)",
        description="Serve PLAN behind NVIDIA Triton Inference Server (through PyTriton, or as an exported "
        "repository in the bundled tritonserver with --server tritonserver), with Triton's dynamic "
        "batcher, over HTTP and gRPC (and Prometheus metrics), until SIGTERM or Ctrl+C. Needs the serve extra "
        "(pip install 'tensorforge[serve]'; scripts/setup_serve.sh).",
    )
    p.add_argument("plan", metavar="PLAN", help="a .tforge file")
    p.add_argument(
        "--server",
        choices=("pytriton", "tritonserver"),
        default="pytriton",
        help="pytriton: Triton run by PyTriton, the model in this process (default); tritonserver: the plan "
        "exported as a model repository and served by the bundled tritonserver, each instance a backend process "
        "of its own (on an H100, 2-3x PyTriton's requests per second)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default cuda if available, else cpu)")
    p.add_argument("--host", default="0.0.0.0", help="address the endpoints listen on (default 0.0.0.0)")
    p.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001)")
    metrics = p.add_mutually_exclusive_group()
    metrics.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default 8002)")
    metrics.add_argument("--no-metrics", action="store_true", help="no metrics endpoint")
    p.add_argument(
        "--startup-timeout", type=_seconds, default=120.0, metavar="S", help="seconds to wait for readiness (120)"
    )
    p.add_argument(
        "--exit-timeout",
        type=_count,
        default=5,
        metavar="S",
        help="seconds a shutdown waits for requests in flight (default 5)",
    )
    p.add_argument(
        "--shared-memory",
        action="store_true",
        help="let clients on this host send inputs through system/CUDA shared-memory regions (Triton's extension)",
    )
    p.add_argument("--log-file", default=None, help="write Triton's log to this file (default: stdout)")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser(
        "export-triton",
        parents=[common, batching],
        help="write a Triton model repository (Python backend) for a .tforge",
        description="Write REPO_DIR/<name>/config.pbtxt, <name>/1/model.py and the .tforge beside it: a model "
        "that a stock `tritonserver --model-repository REPO_DIR` serves through its Python backend, with dynamic "
        "batching. The Python that runs the backend needs tensorforge installed.",
    )
    p.add_argument("plan", metavar="PLAN", help="a .tforge file")
    p.add_argument("repo", metavar="REPO_DIR", help="the model repository (created if missing)")
    p.add_argument(
        "--kind",
        choices=("gpu", "cpu"),
        default="gpu",
        help="instance_group kind: gpu (KIND_GPU, inputs kept on the GPU; default) or cpu (KIND_CPU)",
    )
    p.add_argument("--force", action="store_true", help="replace REPO_DIR/<name> if it exists")
    p.set_defaults(run=cmd_export_triton)


def _plan_file(path: str) -> str:
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not a .tforge file")
    return path


def cmd_serve(args) -> int:
    from ..serving import serve
    from .sources import _device

    plan = _plan_file(args.plan)
    metrics_port = None if args.no_metrics else args.metrics_port
    ports = [p for p in (args.http_port, args.grpc_port, metrics_port) if p is not None]
    if len(set(ports)) != len(ports):
        raise CLIError(
            f"--http-port {args.http_port}, --grpc-port {args.grpc_port} and --metrics-port {metrics_port} must differ"
        )
    if args.gpus is not None:
        from ..serving.devices import local_gpus

        if args.device is not None:
            raise CLIError(f"--device {args.device} and --gpus {args.gpus}: give one (--gpus places instances per GPU)")
        try:
            local_gpus(args.gpus)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    device = None if args.gpus is not None else _device(args.device)
    if args.server == "tritonserver":
        return _serve_tritonserver(args, plan, device, metrics_port)

    def announce(handle) -> None:
        if args.json:
            info = {
                "model": handle.model_name,
                "http": handle.url,
                "grpc": handle.grpc_url,
                "metrics": handle.metrics_url,
                "instances": len(handle.runners),
                "signature": handle.signature.to_json(),
            }
            print(json.dumps(info), flush=True)
        else:
            metrics = f", metrics {handle.metrics_url}" if handle.metrics_url else ""
            print(
                f"serving {handle.model_name!r} at {handle.url} (gRPC {handle.grpc_url}{metrics}), "
                f"{len(handle.runners)} instance(s) on {_devices(handle)}: {handle.signature.describe()}. "
                "SIGTERM or Ctrl+C stops it.",
                flush=True,
            )

    try:
        serve(
            plan,
            name=args.name,
            max_batch_size=args.max_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            instances=args.instances,
            device=device,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=metrics_port,
            startup_timeout_s=args.startup_timeout,
            exit_timeout_s=args.exit_timeout,
            gpus=args.gpus,
            shared_memory=args.shared_memory,
            log_file=args.log_file,
            on_ready=announce,
        )
    except RuntimeError as exc:
        if "nvidia-pytriton" in str(exc):
            raise CLIError(str(exc)) from None
        raise
    print("stopped", file=sys.stderr)
    return 0


def _serve_tritonserver(args, plan: str, device, metrics_port: int | None) -> int:
    """`serve --server tritonserver`: PLAN exported to a repository in a temporary directory, served by the bundled
    tritonserver until SIGTERM or Ctrl+C (either is passed on: Triton finishes what is in flight and exits)."""
    import signal
    import tempfile
    from pathlib import Path

    from ..serving import TritonServerProcess, export_triton

    cpu = device is not None and device.type == "cpu"
    gpus = args.gpus if args.gpus is not None else (str(device.index) if device is not None and device.index else None)
    work = Path(tempfile.mkdtemp(prefix="tensorforge_serve_"))
    try:
        try:
            target = export_triton(
                plan,
                work / "repo",
                name=args.name,
                max_batch_size=args.max_batch_size,
                instances=args.instances,
                kind="cpu" if cpu else "gpu",
                max_queue_delay_us=args.max_queue_delay_us,
                device="cpu" if cpu else None,
                gpus=gpus,
            )
            server = TritonServerProcess(
                work / "repo",
                work,
                target.name,
                host=args.host,
                http_port=args.http_port,
                grpc_port=args.grpc_port,
                metrics_port=metrics_port,
                shared_memory=args.shared_memory,
                exit_timeout_s=args.exit_timeout,
                log_file=args.log_file,
            )
        except (ValueError, RuntimeError) as exc:
            raise CLIError(str(exc)) from None
        previous = signal.signal(signal.SIGTERM, lambda *_: server.process.send_signal(signal.SIGTERM))
        code: int | None = None
        try:
            server.wait_ready(args.startup_timeout)
            where = "CPU" if cpu else f"GPU(s) {gpus or 'all'}"
            if args.json:
                info = {"model": target.name, "http": server.url, "grpc": server.grpc_url}
                print(json.dumps({**info, "metrics": server.metrics_url, "server": "tritonserver"}), flush=True)
            else:
                metrics = f", metrics {server.metrics_url}" if server.metrics_url else ""
                print(
                    f"serving {target.name!r} at {server.url} (gRPC {server.grpc_url}{metrics}) in tritonserver, "
                    f"{args.instances} instance(s) on {where}. SIGTERM or Ctrl+C stops it.",
                    flush=True,
                )
            code = server.wait()
        except KeyboardInterrupt:
            code = server.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("stopped", file=sys.stderr)
    return 0 if code in (0, None) or code == -signal.SIGTERM else 1


def _devices(handle) -> str:
    return ", ".join(dict.fromkeys(str(r.device) for r in handle.runners))


def cmd_export_triton(args) -> int:
    from ..serving import export_triton

    plan = _plan_file(args.plan)
    try:
        target = export_triton(
            plan,
            args.repo,
            name=args.name,
            max_batch_size=args.max_batch_size,
            instances=args.instances,
            kind=args.kind,
            max_queue_delay_us=args.max_queue_delay_us,
            overwrite=args.force,
            gpus=args.gpus,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except FileExistsError as exc:
        raise CLIError(str(exc)) from None
    config = (target / "config.pbtxt").read_text()
    if args.json:
        print(json.dumps({"model": target.name, "directory": str(target), "config": config}, indent=2))
    else:
        print(f"wrote {target}/config.pbtxt, {target}/1/model.py and {target}/1/model.tforge")
        print(f"serve it with: tritonserver --model-repository {target.parent}")
    return 0
