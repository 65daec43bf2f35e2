"""The README's generated tables must match the registries."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_op_table_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_coverage_table_is_fresh():
    """docs/coverage.md is exactly what scripts/coverage.py writes from docs/coverage.json (the sweep's rows)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "coverage.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
