"""Helpers of the command-line tests: run `python -m tensorforge` in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from runtime.conftest import WithFallbackOp  # tests/ is on sys.path

ENV_OVERRIDES = (
    "TENSORFORGE_USE_FP16",
    "TENSORFORGE_CACHE_DIR",
    "TENSORFORGE_MAX_WORKSPACE_SIZE",
    "TENSORFORGE_MULTI_ENGINE",
)


def tforge(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m tensorforge ARGS` with no TENSORFORGE_* overrides; stdout and stderr captured as text."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES}
    return subprocess.run(
        [sys.executable, "-m", "tensorforge", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """A failed command: non-zero exit, exactly one line on stderr (`tensorforge: error: ...`), no traceback."""
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tensorforge: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class TinyNet(torch.nn.Module):
    """conv -> relu -> pool -> linear: one input `x`, one output, one engine region; builds in a second."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="session")
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="session")
def tiny_plan(tmp_path_factory, tiny_net) -> str:
    """A .tforge of TinyNet (input x: f32[batch,3,8,8]) saved in-process: the quick subject of run's tests."""
    import tensorforge as forge

    path = tmp_path_factory.mktemp("tiny") / "tiny.tforge"
    forge.compile(tiny_net, (torch.randn(2, 3, 8, 8),), device="cpu").build_all(2).save(path)
    return str(path)


@pytest.fixture(scope="session")
def fallback_plan(tmp_path_factory) -> str:
    import tensorforge as forge

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fallback") / "fallback.tforge"
    forge.compile(WithFallbackOp().eval(), (torch.randn(2, 16),), device="cpu").build_all(2).save(path)
    return str(path)
