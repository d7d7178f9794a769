#!/usr/bin/env bash
# `make bench-gpu`: run on a machine with an NVIDIA GPU, as it is. Creates .venv-gpu with
# PyTorch from the default index (its Linux wheels are CUDA builds) and the project, then
# runs every stage on the GPU and writes bench-output/REPORT-gpu.md.
# Without a CUDA device it stops with one sentence before installing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV_GPU:-.venv-gpu}"
OUT="${OUT:-bench-output}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "error: make bench-gpu needs an NVIDIA GPU and its driver, and nvidia-smi finds none on this machine." >&2
    exit 2
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet -c requirements-lock.txt -e '.[dev]'
# as in the Makefile: the pretrained gland model ships inside lavlab-taps, run with plain onnxruntime
"$VENV/bin/python" -m pip install --quiet --no-deps -c requirements-lock.txt lavlab-taps
exec "$VENV/bin/python" -m ProstateLesionCADLib.commands.bench_gpu --out "$OUT" "$@"
