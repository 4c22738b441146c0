#!/usr/bin/env bash
# Create .venv, install the toolkit's dependencies, then the toolkit itself (editable, no dependency resolution:
# the requirements files pin the versions) with its console script `mobilevit-trt`.
#   bash scripts/setup.sh              # CPU stages + TensorRT-RTX (builds engines on a CPU-only machine)
#   bash scripts/setup.sh --cpu-only   # CPU stages only (export, surgery, ONNX Runtime checks, data, accuracy)
# PYTHON=python3.11 picks the interpreter; VENV=path picks the environment folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch and torchvision as one pair (timm needs torchvision, whose builds fit one torch release each). On this
# project's CPU machines this pair lies on disk; elsewhere pip picks a build.
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
    || "$VENV/bin/python" -m pip install -q "torch>=1.11,<2.15" "torchvision>=0.12,<0.30"
fi
"$VENV/bin/python" -m pip install -q -r requirements.txt
if [ "${1:-}" != "--cpu-only" ]; then
  "$VENV/bin/python" -m pip install -q -r requirements-engine.txt
fi
# The package: `import mobilevit_trt, MobileViT_Pytorch` from anywhere, benchmark/*.py run as scripts, and the
# `mobilevit-trt` command. Built in this environment (--no-build-isolation: nothing fetched), which needs
# setuptools >= 70.1 (editable installs from pyproject.toml without the separate 'wheel' package; venvs of
# Python >= 3.12 have no setuptools at all, older ones an older setuptools).
if ! "$VENV/bin/python" -c "import setuptools, sys; sys.exit(tuple(int(p) for p in setuptools.__version__.split('.')[:2]) < (70, 1))" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "setuptools>=70.1"
fi
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch, onnx, onnxruntime, mobilevit_trt; print('setup ok: torch %s, onnx %s, onnxruntime %s, mobilevit_trt %s' % (torch.__version__, onnx.__version__, onnxruntime.__version__, mobilevit_trt.__version__))"
