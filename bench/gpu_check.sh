#!/usr/bin/env bash
# One call on the GPU machine: GPU tests, then the benchmark (and accuracy) steps asked for.
#   bash bench/gpu_check.sh [tests] [bench ARGS...] [accuracy ARGS...]   (results under $OUT)
#   bash bench/gpu_check.sh streams ARGS...   (one stream vs several on googlenet: bench/streams.py)
#   bash bench/gpu_check.sh gemm ARGS...      (every engine.dense tactic on the transformer GEMMs: bench/gemm_tactics.py)
#   bash bench/gpu_check.sh profile ARGS...   (kernels per call, tensorforge beside torch.compile: bench/kernel_profile.py)
#   bash bench/gpu_check.sh buildprof ARGS... (where a cold build spends its time: bench/build_profile.py)
#   bash bench/gpu_check.sh threads ARGS...   (1-8 threads, contexts per thread vs one locked: bench/threads.py)
#   bash bench/gpu_check.sh zoo ARGS...       (8 swept architectures outside the tuned set, FP16: bench/zoo_gpu.py)
#   bash bench/gpu_check.sh dynamic ARGS...   (issue 14's dynamic-shape targets, --onnx-dir .gpu_onnx: bench/dynamic.py)
#   bash bench/gpu_check.sh quantacc ARGS...  (issue 15's INT8/FP8 accuracy with GPU plans, carry .gpu_images: bench/quant_accuracy.py)
#   bash bench/gpu_check.sh quantspeed ARGS... (issue 16's INT8/FP8 speed beside FP16 and torchao, carry .gpu_wheels: bench/quant_speed.py)
#   bash bench/gpu_check.sh qtiles ARGS...    (the 8-bit kernels' tile configurations against the libraries: bench/qgemm_tiles.py)
#   bash bench/gpu_check.sh serve ARGS...     (issue 17's load test behind Triton, carry .gpu_serve: bench/serve_load.py)
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
step=${1:-tests}; shift || true
case "$step" in
  tests)    python3 -m pytest -q -m gpu tests -p no:cacheprovider "$@" 2>&1 | tee "$OUT/gpu_tests.log" ;;
  profile)  python3 bench/kernel_profile.py --out "$OUT" "$@" 2>&1 | tee "$OUT/profile.log" ;;
  buildprof) python3 bench/build_profile.py --out "$OUT" "$@" 2>&1 | tee "$OUT/build_profile.log" ;;
  gemm)     python3 bench/gemm_tactics.py --out "$OUT/gemm_tactics.json" "$@" 2>&1 | tee "$OUT/gemm_tactics.log" ;;
  streams)  python3 bench/streams.py --out "$OUT" "$@" 2>&1 | tee "$OUT/streams.log" ;;
  threads)  python3 bench/threads.py --out "$OUT/threads.json" "$@" 2>&1 | tee "$OUT/threads.log" ;;
  zoo)      python3 bench/zoo_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/zoo_gpu.log" ;;
  dynamic)  python3 bench/dynamic.py --out "$OUT" "$@" 2>&1 | tee "$OUT/dynamic.log" ;;
  bench)    python3 bench/benchmark.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" ;;
  accuracy)
    # the trained weights travel as wheels (.gpu_images, carried; see bench/README.md)
    if ls .gpu_images/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_images/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    python3 bench/accuracy.py --out "$OUT" "$@" 2>&1 | tee "$OUT/accuracy.log" ;;
  quantacc)
    # issue 15's image accuracy with GPU plans (the same wheels as accuracy)
    if ls .gpu_images/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_images/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    python3 bench/quant_accuracy.py --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/quant_accuracy.log" ;;
  quantspeed)
    # issue 16's speed of quantized plans; torchao's wheel travels in .gpu_wheels (carried; see bench/README.md)
    if ls .gpu_wheels/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_wheels/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    python3 bench/quant_speed.py --out "$OUT" "$@" 2>&1 | tee "$OUT/quant_speed.log" ;;
  qtiles)   python3 bench/qgemm_tiles.py --out "$OUT" "$@" 2>&1 | tee "$OUT/qgemm_tiles.log" ;;
  serve)
    # PyTriton's Triton server, tritonclient and numpy < 2, packed by bench/pack_serve_bundle.sh (carried). Installed
    # into this interpreter's own site-packages (the GPU machine is thrown away after the session): the Python
    # backend's stub embeds this Python (it needs its shared libpython) and reads its site-packages but not
    # PYTHONPATH, and it must see numpy < 2 and pyzmq as this process does (with /tmp/site on PYTHONPATH only, the
    # stub found no zmq, then numpy 2, and every reply came back empty). The tritonserver binary PyTriton copies
    # into its workspace finds its libraries through LD_LIBRARY_PATH.
    # where this interpreter's numpy lives (its site-packages, whichever scheme), else its purelib
    SITE=$(python3 -c "import os, sysconfig
try:
    import numpy; print(os.path.dirname(os.path.dirname(numpy.__file__)))
except ImportError:
    print(sysconfig.get_paths()['purelib'])")
    rm -rf "$SITE"/numpy "$SITE"/numpy-*.dist-info "$SITE"/numpy.libs
    tar -xJf .gpu_serve/site.tar.xz -C "$SITE" && export LD_LIBRARY_PATH="$SITE/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "$PWD/src" > "$SITE/tensorforge_src.pth"  # the stock tritonserver's backend stubs import tensorforge too
    python3 -c "import numpy, zmq; print('site:', '$SITE', 'numpy', numpy.__version__, numpy.__file__, 'zmq', zmq.__version__)"
    python3 -c "import sysconfig; print('libpython:', sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('LDLIBRARY'), 'shared' if sysconfig.get_config_var('Py_ENABLE_SHARED') else 'static')"
    python3 bench/serve_load.py --out "$OUT" "$@" 2>&1 | tee "$OUT/serve_load.log" ;;
  *) echo "unknown step $step"; exit 2 ;;
esac
