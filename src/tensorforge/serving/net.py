"""Local network helpers of the servers, their tests and the load test: free ports to bind a server to (Triton
cannot bind port 0) and a readiness probe."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free now on 127.0.0.1 (bound to port 0 together, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a GET of `url` answers 200 within `timeout_s` (a refused or failed connection is False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
