#!/usr/bin/env bash
# Create .venv-serve: the Python that serves tensorforge models behind NVIDIA Triton Inference Server (PyTriton,
# tritonclient) and Ray Serve, and runs the serving tests.
# Triton's Python backend stub needs a Python built with a shared libpython (the Debian system Python 3.11 is; a
# pyenv build usually is not) and PyTriton needs numpy < 2: hence a venv of its own, beside .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${SERVE_PYTHON:-/usr/bin/python3.11}
if ! "$python" -c "import sysconfig, sys; sys.exit(0 if sysconfig.get_config_var('Py_ENABLE_SHARED') else 1)"; then
  echo "setup_serve.sh: $python has no shared libpython, which Triton's Python backend needs; set SERVE_PYTHON" >&2
  exit 1
fi
if [ ! -x .venv-serve/bin/python ]; then
  "$python" -m venv .venv-serve
fi
.venv-serve/bin/python -m pip install -q --upgrade pip
.venv-serve/bin/python -m pip install -q "torch==2.14.1" "numpy<2"
.venv-serve/bin/python -m pip install -q -e ".[serve]" pytest
.venv-serve/bin/python -c "import tensorforge, pytriton, tritonclient, ray; print('serving venv: tensorforge', tensorforge.__version__, '| pytriton', pytriton.__version__ if hasattr(pytriton, '__version__') else '?')"
