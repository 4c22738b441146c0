#!/usr/bin/env bash
# Create .venv and install the toolkit's dependencies.
#   bash scripts/setup.sh              # CPU stages + TensorRT-RTX (builds engines on a CPU-only machine)
#   bash scripts/setup.sh --cpu-only   # CPU stages only (export, surgery, ONNX Runtime checks, data, accuracy)
# PYTHON=python3.11 picks the interpreter; VENV=path picks the environment folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# On this project's CPU machines 'torch==2.13.0' resolves to a local CPU wheel; elsewhere pip picks a build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" || "$VENV/bin/python" -m pip install -q "torch>=1.11,<2.14"
fi
"$VENV/bin/python" -m pip install -q -r requirements.txt
if [ "${1:-}" != "--cpu-only" ]; then
  "$VENV/bin/python" -m pip install -q -r requirements-engine.txt
fi
"$VENV/bin/python" -c "import torch, onnx, onnxruntime; print('setup ok: torch %s, onnx %s, onnxruntime %s' % (torch.__version__, onnx.__version__, onnxruntime.__version__))"
