#!/usr/bin/env bash
# Copies the ONNX models bench/dynamic.py measures (PaddleOCR's of rapidocr_onnxruntime, silero-vad's) from the
# installed packages into one git-ignored folder that a GPU call carries (the GPU machine has neither package nor
# a network): bash bench/pack_onnx_models.sh [DIR] (default .gpu_onnx), then run with --onnx-dir DIR.
set -euo pipefail
DIR=${1:-.gpu_onnx}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
"$PY" - "$DIR" <<'PY'
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from dynamic import ONNX_CASES, onnx_path  # noqa: E402

target = Path(sys.argv[1])
total, missing = 0, []
for name, case in ONNX_CASES.items():
    source = onnx_path(case, None)
    if source is None:
        missing.append(f"{name} ({case.file}: install {case.package})")
        continue
    shutil.copy2(source, target / case.file)
    total += source.stat().st_size
    print(f"{name}: {case.file} {source.stat().st_size / 2**20:.1f} MiB")
print(f"{total / 2**20:.1f} MiB in {target}")
if total > 40 * 2**20:
    sys.exit(f"{total / 2**20:.1f} MiB is more than the 40 MiB a GPU call should carry of them")
if missing:
    sys.exit("missing: " + ", ".join(missing))
PY
