"""Every example script the README shows runs, from a scratch directory, and succeeds."""

import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "demo.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["mobilenet_v2", "--batch", "3"]], ids=["default", "mobilenet_v2"])
def test_demo_shows_the_product(tmp_path, args):
    """The README's first command compiles a real model and shows every part of the job (on a GPU also the speed)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for section in (
        "== partition report",
        "nodes offloaded",
        "== build: ",
        "== plan summary",
        "tactics: ",
        "== numerical check against PyTorch eager",
        "(OK, tolerance",
    ):
        assert section in out, f"the demo does not show {section!r}:\n{out}"
    assert ("== speed" in out) == torch.cuda.is_available()
    if not args:
        assert ("resnet50" if torch.cuda.is_available() else "resnet18") in out.splitlines()[0]


def test_readme_shows_every_example():
    readme = (ROOT / "README.md").read_text()
    for name in EXAMPLES:
        assert f"<!-- BEGIN GENERATED: example:examples/{name} -->" in readme, f"README does not show {name}"
