"""NVIDIA ModelOpt as the second INT8 quantizer (mobilevit_trt/modelopt_ptq.py), for real where it is installed.

ModelOpt runs in its own environment ($MVT_MODELOPT_PYTHON, or .venv-modelopt from scripts/setup_modelopt.sh):
without one the ModelOpt tests skip with that reason; the environment lookup and the refusals run everywhere.
References: the FP32 graph in ONNX Runtime (ModelOpt's INT8 graph of the tiny test model agrees in top-1 on at
least 14 of 16 structured inputs and stays within 10 % of the FP32 logit range), and ONNX Runtime's own quantizer
(precision.quantize_qdq) on the same quantized node set: with MinMax the two independent quantizers must give the
same outputs (1e-5 of the logit range; seen: identical).
"""
import os

import numpy as np
import pytest

from mobilevit_trt import modelopt_ptq
from mobilevit_trt.errors import UserError
from tests.test_mixed_int8 import tiny_model

NEEDS = pytest.mark.skipif(modelopt_ptq.unavailable() is not None, reason=str(modelopt_ptq.unavailable()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import onnx

    from mobilevit_trt.precision import structured_inputs
    from mobilevit_trt.preprocess import Preprocess, write_onnx_metadata
    path = str(tmp_path_factory.mktemp("modelopt") / "tiny.onnx")
    m = tiny_model()
    write_onnx_metadata(m, Preprocess.original(img_size=16))
    onnx.save(m, path)
    return path, structured_inputs(16, img_size=16, seed=1)


def test_environment_lookup_and_refusals(monkeypatch, tmp_path, tiny):
    monkeypatch.setenv(modelopt_ptq.ENV_VAR, str(tmp_path / "no-python"))
    python, why = modelopt_ptq.find_python()
    assert python is None and modelopt_ptq.ENV_VAR in why
    with pytest.raises(UserError, match="not an executable"):
        modelopt_ptq.quantize(tiny[0], str(tmp_path / "q.onnx"), tiny[1])
    assert not os.path.exists(str(tmp_path / "q.onnx"))
    with pytest.raises(UserError, match="calibration method"):
        modelopt_ptq.quantize(tiny[0], str(tmp_path / "q.onnx"), tiny[1], method="percentile")


@NEEDS
@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_modelopt_int8_against_fp32_and_onnxruntime(tiny, tmp_path, method):
    """ModelOpt's placement quantizes only conv0 of the tiny model (its rules leave the residual 1x1 convs, the
    depthwise conv, the small MatMuls and the GEMV Gemm float); ONNX Runtime's quantizer with every other node
    excluded quantizes the same set: with MinMax both compute the same scales, so the graphs must agree exactly;
    with Entropy (two KL searches) both must stay within the FP32 bounds."""
    import onnx

    from mobilevit_trt.backends import OnnxRuntimeBackend
    from mobilevit_trt.mixed_int8 import qdq_inputs
    from mobilevit_trt.precision import quantize_qdq
    from mobilevit_trt.preprocess import Preprocess
    from mobilevit_trt.verify import Tolerance, judge, run_all
    path, x = tiny
    out, ort_q = str(tmp_path / "mo.onnx"), str(tmp_path / "ort.onnx")
    rep = modelopt_ptq.quantize(path, out, x, method=method)
    assert rep["qdq"]["quantize_linear"] > 0 and rep["qdq"]["int32_dq"] == 0
    assert Preprocess.from_onnx(out).same_transform(Preprocess.original(img_size=16))  # the record was copied back
    quantized = sorted(n for n, ins in qdq_inputs(onnx.load(out)).items() if any(ins))
    assert quantized == ["conv0"], quantized
    others = [n.name for n in onnx.load(path).graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
              and n.name not in quantized]
    quantize_qdq(path, ort_q, x, method=method, exclude=others)
    with OnnxRuntimeBackend(path) as fp32:
        ref = run_all(fp32, x)
    with OnnxRuntimeBackend(out) as b:
        got_mo = run_all(b, x)
    with OnnxRuntimeBackend(ort_q) as b:
        got_ort = run_all(b, x)
    span = float(ref.max() - ref.min())
    err = judge(got_mo, ref, Tolerance())
    assert err["top1_agreement"] >= 14 / 16
    assert err["max_abs"] <= 0.1 * span, (err["max_abs"], span)
    if method == "minmax":
        np.testing.assert_allclose(got_mo, got_ort, rtol=0, atol=1e-5 * span)


@NEEDS
def test_modelopt_honours_exclusion(tiny, tmp_path):
    """Excluding the one node ModelOpt quantizes leaves nothing in INT8: refused, nothing written."""
    path, x = tiny
    out = str(tmp_path / "mo_ex.onnx")
    with pytest.raises(UserError, match="no QuantizeLinear"):
        modelopt_ptq.quantize(path, out, x, method="minmax", exclude=["conv0"])
    assert not os.path.exists(out)
