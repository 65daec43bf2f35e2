#!/usr/bin/env bash
# Packs what the GPU machine lacks for the serving load test (PyTriton's Triton server, tritonclient, numpy < 2 and
# their missing dependencies, cp312) into one xz tarball a GPU call can carry within its 64 MiB: the PyTriton wheel
# alone is 55 MB, most of it a bundled libpython 3.13 and the backend stubs of five other Pythons, which a
# Python 3.12 machine never loads. bash bench/pack_serve_bundle.sh [WHEELS_DIR] [OUT_DIR] (defaults
# .gpu_serve_wheels, .gpu_serve); on the GPU machine `bash bench/gpu_check.sh serve ARGS` unpacks it into the
# interpreter's site-packages.
set -euo pipefail
WHEELS=${1:-.gpu_serve_wheels}
OUT=${2:-.gpu_serve}
# already on the GPU machine's image (the device tool's KINDS.md): aiohttp and its family, grpcio, protobuf,
# pydantic's absence does not matter (PyTriton does not import it), typer, rich, wrapt, ml_dtypes, packaging
SKIP='^(aiohttp|aiohappyeyeballs|aiosignal|attrs|frozenlist|multidict|propcache|yarl|idna|certifi|grpcio|protobuf|typer|rich|markdown_it_py|mdurl|pygments|shellingham|typing_extensions|packaging|ml_dtypes|pydantic|pydantic_core|annotated_types|annotated_doc|mypy_extensions|typing_inspect)-'
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
for wheel in "$WHEELS"/*.whl; do
  basename "$wheel" | grep -Eq "$SKIP" && continue
  python3 -m zipfile -e "$wheel" "$site"
done
# the Python 3.12 stub and Triton's own libraries stay; the other stubs and the libpython they need go
rm -rf "$site"/pytriton/tritonserver/python_backend_stubs/3.{8,9,10,11,13}
rm -f "$site"/nvidia_pytriton.libs/libpython3-*.so*
chmod -R u+rwX,go+rX "$site"
chmod +x "$site"/pytriton/tritonserver/bin/* "$site"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
mkdir -p "$OUT"
tar -C "$site" -cf - . | xz -T2 -6 > "$OUT/site.tar.xz"
du -h "$OUT/site.tar.xz"
