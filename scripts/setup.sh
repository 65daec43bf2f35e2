#!/usr/bin/env bash
# Create .venv and install tensorforge with everything its tests, demos and benchmarks use.
# Works on a fresh machine: torch and torchvision come as a matching pair (pip finds them on the
# local disk here), then the project in editable mode with its test extras and the pinned lint and type checkers
# (ruff, mypy) that .ci/run and the pre-commit hooks run from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test,dev]"
.venv/bin/python -c "import tensorforge, torch, torchvision; print('tensorforge', tensorforge.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
