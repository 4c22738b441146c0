"""NVIDIA ModelOpt's ONNX INT8 PTQ, run inside ModelOpt's own environment (``scripts/setup_modelopt.sh`` makes
``.venv-modelopt``; its pins need not match the toolkit's).  Stand-alone: imports numpy, onnx and modelopt only,
so ``.venv-modelopt/bin/python mobilevit_trt/modelopt_worker.py ...`` needs nothing else of the toolkit.

usage: modelopt_worker.py IN.onnx OUT.onnx CALIB.npz METHOD [EXCLUDE_NODE ...]
  CALIB.npz  one array per graph input name (float32 [N,3,H,W])
  METHOD     ModelOpt's calibration_method for int8: entropy | max
Prints one JSON line on stdout (ModelOpt's own messages go to stderr); exit 1 with an ``error:`` line on failure.
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

METHODS = ("entropy", "max")


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 1
    src, dst, calib, method = argv[:4]
    exclude = list(argv[4:])
    if method not in METHODS:  # ModelOpt's int8 path takes any other string as max without a word
        sys.stderr.write("error: calibration method %r is not one of %s\n" % (method, ", ".join(METHODS)))
        return 1
    os.environ.setdefault("TQDM_DISABLE", "1")
    import numpy as np
    import onnx
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        sys.stderr.write("error: ModelOpt's ONNX quantization does not import here (%s): "
                         "pip install 'nvidia-modelopt[onnx]'\n" % e)
        return 1
    import modelopt
    with np.load(calib, allow_pickle=False) as z:
        data = {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
    with tempfile.TemporaryDirectory(prefix="modelopt-ptq.") as work:
        # quantize() rewrites its input (shape inference) and writes intermediates beside output_path
        tin, tout = os.path.join(work, "in.onnx"), os.path.join(work, "out.onnx")
        shutil.copyfile(src, tin)
        t0 = time.time()
        with contextlib.redirect_stdout(sys.stderr):
            quantize(onnx_path=tin, quantize_mode="int8", calibration_data=data, calibration_method=method,
                     calibration_eps=["cpu"], high_precision_dtype="fp32", nodes_to_exclude=exclude or None,
                     output_path=tout, log_level="WARNING")
        seconds = time.time() - t0
        model = onnx.load(tout)
        shutil.copyfile(tout, dst)
    ops = [n.op_type for n in model.graph.node]
    print(json.dumps({"modelopt": modelopt.__version__, "method": method, "seconds": round(seconds, 2),
                      "quantize_linear": ops.count("QuantizeLinear"),
                      "dequantize_linear": ops.count("DequantizeLinear")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
