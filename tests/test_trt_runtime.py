"""CPU parts of the run side: metrics, report writing, reference data, layer-time tables, the calibration cache,
CUDA error handling and the runner's clear errors (no GPU here).  The GPU side: tests/gpu/test_cuda_helpers.py."""
import csv
import json

import numpy as np
import pytest

from mobilevit_trt import bench, calib, cuda, metrics, report, runtime
from mobilevit_trt.errors import UserError


def test_diff_stats_and_verdict():
    ref = np.array([[1.0, -2.0, 0.0], [0.5, 0.25, 4.0]], np.float32)
    test = ref + np.array([[0.1, 0.0, 0.0], [0.0, -0.2, 0.0]], np.float32)
    s = metrics.diff_stats(test, ref)
    assert s["abs_max"] == pytest.approx(0.2, abs=1e-6)
    assert s["abs_median"] == pytest.approx(0.0, abs=1e-7)
    assert s["rel_max"] == pytest.approx(0.8, rel=1e-5)  # 0.2 / 0.25
    assert metrics.verdict(s["abs_max"], 0.25) == "PASSED" and metrics.verdict(s["abs_max"], 0.1) == "FAILED"
    assert metrics.verdict(None, 0.1) == "-"
    c = metrics.compare_logits(test, ref)
    assert c["top1_agreement"] == 1.0 and c["n"] == 2
    with pytest.raises(ValueError):
        metrics.diff_stats(ref, ref[:1])


def test_topk_and_latency():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    acc = metrics.topk_accuracy(logits, [1, 2, 2], ks=(1, 2))
    assert acc == {"top1": pytest.approx(2 / 3), "top2": pytest.approx(2 / 3)}
    t = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = metrics.latency_stats(t, batch=4)
    assert s["latency_ms_p50"] == 3.0 and s["throughput_img_s"] == pytest.approx(4000 / 3)
    assert s["latency_ms_p90"] == pytest.approx(61.6) and s["iters"] == 5
    assert metrics.percentile([5.0], 99) == 5.0


def test_report_table_json_csv(tmp_path):
    rows = [{"batch": 1, "latency_ms_p50": 0.5123, "verdict": "PASSED", "abs_max": 1.5e-5},
            {"batch": 16, "latency_ms_p50": 12.0, "verdict": "-", "abs_max": None}]
    text = report.format_table(rows, ["batch", "latency_ms_p50", "abs_max", "verdict"], {"latency_ms_p50": "p50 ms"})
    lines = text.splitlines()
    assert lines[0].split() == ["batch", "p50", "ms", "abs_max", "verdict"]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule have the same width
    assert lines[2].split() == ["1", "0.5123", "1.500e-05", "PASSED"]
    assert lines[3].split() == ["16", "12.0000", "-", "-"]
    j = report.write_results(str(tmp_path / "r.json"), rows + [{"batch": 2, "abs_max": float("nan")}],
                             meta={"x": float("inf")})
    with open(j) as f:
        data = json.load(f)
    assert data["meta"] == {"x": None} and data["rows"][2]["abs_max"] is None
    c = report.write_results(str(tmp_path / "r.csv"), rows)
    with open(c) as f:
        got = list(csv.DictReader(f))
    assert got[0]["batch"] == "1" and got[1]["abs_max"] == ""
    with pytest.raises(UserError, match=r"\.json or \.csv"):
        report.write_results(str(tmp_path / "r.txt"), rows)


def test_layer_times_sorted_with_shares():
    lt = runtime.LayerTimes()
    for _ in range(4):
        lt.add("conv", 1.0)
        lt.add("softmax", 3.0)
        lt.add("gemm", 0.5)
    rows = lt.rows(iterations=4)
    assert [r["layer"] for r in rows] == ["softmax", "conv", "gemm"]
    assert rows[0]["ms"] == pytest.approx(3.0) and rows[0]["calls"] == 4
    assert sum(r["share_pct"] for r in rows) == pytest.approx(100.0)
    assert rows[1]["share_pct"] == pytest.approx(100 / 4.5)


def test_reference_data_loading(tmp_path):
    for b in (8, 1, 2):
        np.savez(str(tmp_path / ("batch%d.npz" % b)), input=np.zeros((b, 3, 4, 4), np.float32),
                 logits=np.zeros((b, 10), np.float32), label=np.arange(b))
    # a calibration set beside the reference batches (gen_test_data.py writes one) is not a reference batch
    np.savez(str(tmp_path / "calibration.npz"), input=np.zeros((100, 3, 4, 4), np.float32))
    refs = bench.load_reference_data(str(tmp_path))
    assert [len(r.input) for r in refs] == [1, 2, 8]
    assert len(bench.load_reference_data(str(tmp_path / "calibration.npz"))[0].input) == 100  # named: used
    assert refs[0].logits.shape == (1, 10) and list(refs[2].labels) == list(range(8))
    np.savez(str(tmp_path / "bad.npz"), logits=np.zeros(3))
    with pytest.raises(UserError, match="has no 'input' array"):
        bench.load_reference_data(str(tmp_path))
    with pytest.raises(UserError, match="--data not found"):
        bench.load_reference_data(str(tmp_path / "nope"))
    assert runtime.default_atol("int8+fp16") == metrics.DEFAULT_ATOL["int8"]
    assert runtime.default_atol(None) == metrics.DEFAULT_ATOL["fp32"]


def test_calibration_data_and_cache_key(tmp_path):
    p = str(tmp_path / "c.npz")
    np.savez(p, input=np.ones((5, 3, 8, 8), np.float32))
    assert calib.load_calibration_data(p, limit=3).shape == (3, 3, 8, 8)
    np.savez(str(tmp_path / "bad.npz"), input=np.ones((5, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"must be \[N,3,H,W\]"):
        calib.load_calibration_data(str(tmp_path / "bad.npz"))
    logs = []
    cache_path = str(tmp_path / "e.cache")
    c = calib.CalibrationCache(cache_path, "a" * 64, "entropy2", "8.6.1", 4, log=logs.append)
    assert c.read() is None and not c.valid()
    c.write(b"TRT-8601-EntropyCalibration2\n")
    assert c.valid() and c.read() == b"TRT-8601-EntropyCalibration2\n"
    # another ONNX or calibrator: the cache is stale and never reused
    for other in (calib.CalibrationCache(cache_path, "b" * 64, "entropy2", "8.6.1", 4, log=logs.append),
                  calib.CalibrationCache(cache_path, "a" * 64, "minmax", "8.6.1", 4, log=logs.append)):
        assert not other.valid() and other.read() is None
    assert logs[-2] == "calibration cache %s is stale (onnx_sha256 differs): recalibrating" % cache_path
    assert logs[-1] == "calibration cache %s is stale (calibrator differs): recalibrating" % cache_path


def test_cuda_error_helper_without_gpu():
    cudart, why = cuda.import_cudart()
    if cudart is None:
        pytest.skip(why)
    assert cuda.check((cudart.cudaError_t.cudaSuccess, 7)) == 7
    assert cuda.check((cudart.cudaError_t.cudaSuccess,)) is None
    with pytest.raises(cuda.CudaError) as e:
        cuda.check((cudart.cudaError_t.cudaErrorInvalidValue, None), "cudaMalloc")
    assert e.value.name == "cudaErrorInvalidValue" and str(e.value) == "cudaMalloc failed: cudaErrorInvalidValue (1)"


def test_runner_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="engine not found"):
        runtime.TrtRunner(str(tmp_path / "missing.engine"))
    p = str(tmp_path / "x.engine")
    with open(p, "wb") as f:
        f.write(b"not an engine")
    with open(p + ".json", "w") as f:
        f.write("{broken")
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            with pytest.raises(UserError, match="needs TensorRT and a CUDA GPU: no usable TensorRT Python module"):
                runtime.TrtRunner(p, purpose="test_trt.py")
            return
    with pytest.raises(UserError, match="is not valid JSON"):
        runtime.TrtRunner(p)


def test_sidecar_round_trip_and_bad_sidecars(tmp_path):
    from mobilevit_trt import sidecar
    engine = str(tmp_path / "e.engine")
    assert sidecar.read(engine) is None
    assert sidecar.write(engine, {"format": sidecar.FORMAT, "precision": "fp16"}) == engine + ".json"
    assert sidecar.read(engine) == {"format": sidecar.FORMAT, "precision": "fp16"}
    with pytest.raises(ValueError):
        sidecar.write(engine, {"precision": "fp16"})
    with open(engine + ".json", "w") as f:
        f.write("[1, 2]")
    with pytest.raises(UserError, match="is not an engine description"):
        sidecar.read(engine)
    with open(engine + ".json", "w") as f:
        f.write("{broken")
    with pytest.raises(UserError, match="is not valid JSON"):
        sidecar.read(engine)
