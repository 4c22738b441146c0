#!/usr/bin/env bash
# NVIDIA ModelOpt in its own environment (.venv-modelopt), for the pipeline's ModelOpt INT8 candidate
# (mobilevit_trt/modelopt_ptq.py). Optional: without it that candidate is skipped with the reason.
# ModelOpt needs Python >= 3.10. Usage: bash scripts/setup_modelopt.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "error: NVIDIA ModelOpt needs Python >= 3.10 ($PY is $("$PY" -V 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv-modelopt/bin/python ]; then
  "$PY" -m venv .venv-modelopt
fi
.venv-modelopt/bin/pip install -q --upgrade pip
.venv-modelopt/bin/pip install -q "nvidia-modelopt[onnx]==0.47.0"
.venv-modelopt/bin/python -c "import modelopt, modelopt.onnx.quantization; print('ModelOpt', modelopt.__version__, 'ready in .venv-modelopt')"
