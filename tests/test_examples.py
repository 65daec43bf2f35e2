"""Every example script the README shows runs, from a scratch directory, and succeeds."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "demo.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_demo_runs(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "mobilenet_v2"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


def test_readme_shows_every_example():
    readme = (ROOT / "README.md").read_text()
    for name in EXAMPLES:
        assert f"<!-- BEGIN GENERATED: example:examples/{name} -->" in readme, f"README does not show {name}"
