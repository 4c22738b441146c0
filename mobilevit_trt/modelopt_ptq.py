"""NVIDIA ModelOpt as a second INT8 quantizer, beside ONNX Runtime's (``precision.quantize_qdq``).

ModelOpt's ONNX PTQ (``nvidia-modelopt[onnx]``, Python >= 3.10) is what NVIDIA points TensorRT 10/11 users to for
explicit quantization; it places Q/DQ by TensorRT's fusion rules.  Its pins need not match the toolkit's, so it
runs in its own environment, found in this order:

1. ``$MVT_MODELOPT_PYTHON`` (a Python with ModelOpt installed),
2. ``.venv-modelopt/bin/python`` at the repository root (``bash scripts/setup_modelopt.sh`` makes it),
3. this interpreter, if ``modelopt`` imports here.

:func:`quantize` runs ``modelopt_worker.py`` there on the calibration images, then checks the result as any Q/DQ
graph of the toolkit (no int32 bias DequantizeLinear) and copies the model's preprocessing record into it (ModelOpt
drops ``metadata_props``).  Calibration methods: ``entropy`` and ``minmax`` (ModelOpt's ``max``).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from .errors import UserError
from .fileio import atomic_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modelopt_worker.py")
ENV_VAR = "MVT_MODELOPT_PYTHON"
LOCAL_VENV = os.path.join(ROOT, ".venv-modelopt", "bin", "python")
#: toolkit method -> ModelOpt's calibration_method
METHODS = {"entropy": "entropy", "minmax": "max"}
SETUP_HINT = "bash scripts/setup_modelopt.sh (makes .venv-modelopt), or set %s to a Python with nvidia-modelopt[onnx]" \
             % ENV_VAR


def find_python():
    """``(python, where)`` of the environment that runs ModelOpt, or ``(None, why not)``."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not os.path.isfile(env) or not os.access(env, os.X_OK):
            return None, "%s=%s is not an executable" % (ENV_VAR, env)
        return env, "$%s" % ENV_VAR
    if os.path.isfile(LOCAL_VENV):
        return LOCAL_VENV, ".venv-modelopt"
    if importlib.util.find_spec("modelopt") is not None:
        return sys.executable, "this Python"
    return None, "NVIDIA ModelOpt is not installed: %s" % SETUP_HINT


def unavailable():
    """Why ModelOpt cannot run here, or None."""
    python, why = find_python()
    return None if python else why


def quantize(in_path, out_path, calib_inputs, method="entropy", exclude=(), timeout=3600, log=None):
    """ModelOpt INT8 PTQ of ``in_path`` calibrated on ``calib_inputs`` ([N,3,H,W] float32) -> ``out_path``
    (written only when it passed the checks).  Returns a report with ``precision.qdq_summary`` counts."""
    import numpy as np
    import onnx

    from .precision import has_qdq, qdq_summary
    from .preprocess import METADATA_KEY, copy_onnx_metadata
    if method not in METHODS:
        raise UserError("ModelOpt calibration method must be one of %s, got %r" % (", ".join(METHODS), method))
    python, where = find_python()
    if python is None:
        raise UserError(where)
    x = np.ascontiguousarray(calib_inputs, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise UserError("calibration inputs must be a non-empty [N,3,H,W] array, got shape %s" % (x.shape,))
    src = onnx.load(in_path)
    if has_qdq(src):
        raise UserError("%s already carries Q/DQ nodes (a QAT export?): build it as it is" % in_path)
    with tempfile.TemporaryDirectory(prefix="modelopt.") as work:
        calib = os.path.join(work, "calib.npz")
        with open(calib, "wb") as f:
            np.savez(f, **{src.graph.input[0].name: x})
        raw = os.path.join(work, "out.onnx")
        cmd = [python, WORKER, os.path.abspath(in_path), raw, calib, METHODS[method]] + list(exclude)
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                               universal_newlines=True)
        except subprocess.TimeoutExpired:
            raise UserError("ModelOpt quantization did not finish in %d s" % timeout)
        if p.returncode != 0 or not os.path.isfile(raw):
            tail = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-3:]
            raise UserError("ModelOpt (%s, %s) failed: %s" % (where, python, " | ".join(tail) or "no message"))
        info = json.loads(p.stdout.strip().splitlines()[-1])
        q = onnx.load(raw)
        if any(pr.key == METADATA_KEY for pr in src.metadata_props):
            q = copy_onnx_metadata(src, q)  # ModelOpt drops metadata_props: the preprocessing record travels on
        summary = qdq_summary(q)
        if summary["int32_dq"]:
            raise UserError("ModelOpt left %d int32 DequantizeLinear nodes (TensorRT rejects them)"
                            % summary["int32_dq"])
        if not summary["quantize_linear"]:
            raise UserError("ModelOpt wrote no QuantizeLinear node into %s" % out_path)
        with atomic_path(out_path) as tmp:
            onnx.save(q, tmp)
    if log:
        log("ModelOpt %s INT8 PTQ (%s calibration on %d inputs, %s): %d QuantizeLinear, %d DequantizeLinear, %.0f s"
            % (info.get("modelopt"), method, len(x), where, summary["quantize_linear"], summary["dequantize_linear"],
               info.get("seconds", 0)))
    return {"path": os.path.abspath(out_path), "source": os.path.abspath(in_path), "quantizer": "modelopt",
            "modelopt": info.get("modelopt"), "environment": where, "method": method,
            "calibration_inputs": int(len(x)), "float_nodes": list(exclude), "seconds": info.get("seconds"),
            "qdq": summary}
