"""trtexec-shaped timing files (mobilevit_trt.bench) on real CPU timings: the latency loop driven with ONNX Runtime
on a tiny model, written in the layouts of ``trtexec --exportTimes`` and ``--exportProfile``, and compared field by
field with what NVIDIA/TensorRT's ``samples/common/sampleReporting.cpp`` writes (``exportJSONTrace``,
``Profiler::exportJSONProfile``; fields read at tags 22.04 (TensorRT 8.2), 8.4.1 and v11.1).  Per-layer samples
come from ONNX Runtime's own profiler.  Also: percentiles against numpy.percentile, the pipelined (--streams) loop,
and test_trt.py's option errors."""
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mobilevit_trt import bench, runtime
from mobilevit_trt.backends import OnnxRuntimeBackend
from tests.helpers import run_script

#: exportJSONTrace, TensorRT 8.4 .. 11.x: the keys of one record, in the order trtexec writes them
TRTEXEC_TIMES_FIELDS = ["startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
                        "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs"]
#: ... TensorRT 8.2 (22.04): one more, "endToEndMs" = d2hEnd - h2dStart (traceToTiming)
TRTEXEC_TIMES_FIELDS_82 = TRTEXEC_TIMES_FIELDS + ["endToEndMs"]
#: exportJSONProfile after the leading {"count": N}: 8.4 .. 11.x, and 8.2 (no medianMs)
TRTEXEC_PROFILE_FIELDS = ["name", "timeMs", "averageMs", "medianMs", "percentage"]
TRTEXEC_PROFILE_FIELDS_82 = ["name", "timeMs", "averageMs", "percentage"]

ITERS = 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Conv-ReLU-Conv-ReLU-GlobalAveragePool-Flatten-Gemm, input [B,3,32,32] (dynamic batch) -> class [B,10]."""
    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1)  # noqa: E731
    inits = [w(16, 3, 3, 3), w(16, 16, 3, 3), w(16, 10), w(10)]
    for t, n in zip(inits, ("w1", "w2", "wf", "bf")):
        t.name = n
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["class"], name="fc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["batch", 10])], inits)
    path = str(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture(scope="module")
def timed(tiny):
    """bench.benchmark_cases on ONNX Runtime, batch 4: the row and the raw result it was made from."""
    target = OnnxRuntimeBackend(tiny, threads=1)
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    traces = []
    rows = bench.benchmark_cases(target, [bench.Case("random", x)], warmup=3, iters=ITERS, traces=traces)
    assert len(traces) == 1 and traces[0]["batch"] == 4
    return rows[0], traces[0]["result"]


def test_percentiles_against_numpy(timed):
    row, res = timed
    times = np.asarray(res["times_ms"])
    assert len(times) == ITERS and (times > 0).all()
    for q in (50, 90, 95, 99):
        assert row["latency_ms_p%d" % q] == pytest.approx(np.percentile(times, q), rel=1e-12, abs=1e-12)
    keys = [k for k in row if k.startswith("latency_ms_p")]
    assert keys == ["latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99"]
    assert "latency_ms_p95" in bench.TABLE_COLUMNS and bench.TABLE_HEADERS["latency_ms_p95"] == "p95 ms"


@pytest.mark.parametrize("layout,fields", [("8.4", TRTEXEC_TIMES_FIELDS), ("8.2", TRTEXEC_TIMES_FIELDS_82)])
def test_export_times_layout(timed, tmp_path, layout, fields):
    _, res = timed
    records = bench.trtexec_times(res, layout)
    path = bench.write_trtexec_times(str(tmp_path / "times.json"), records)
    with open(path) as f:
        data = json.load(f)
    assert data == records and isinstance(data, list) and len(data) == ITERS
    previous_end = 0.0
    for rec, ms, (enq0, enq1) in zip(data, res["times_ms"], res["host_ms"]):
        assert list(rec) == fields  # the keys, in trtexec's order
        assert all(isinstance(v, float) for v in rec.values())
        # no copies in the timed loop: what trtexec --noDataTransfers writes (sampleInference.cpp getTrace)
        assert rec["h2dMs"] == 0.0 and rec["d2hMs"] == 0.0
        assert rec["startH2dMs"] == rec["endH2dMs"] == rec["startComputeMs"]
        assert rec["startD2hMs"] == rec["endD2hMs"] == rec["endComputeMs"]
        # computeMs is the timer's measurement; InferenceTime::latency() = h2d + compute + d2h
        assert rec["computeMs"] == ms and rec["latencyMs"] == rec["h2dMs"] + rec["computeMs"] + rec["d2hMs"]
        assert rec["endComputeMs"] - rec["startComputeMs"] == pytest.approx(ms, abs=1e-9)
        assert (rec["startEnqMs"], rec["endEnqMs"]) == (enq0, enq1) and enq0 <= enq1
        assert rec["startEnqMs"] >= previous_end - 1e-6  # one iteration after another, on one clock
        previous_end = rec["endEnqMs"]
        if layout == "8.2":
            assert rec["endToEndMs"] == rec["endD2hMs"] - rec["startH2dMs"]
    assert data[0]["startEnqMs"] >= 0.0


def _ort_layer_samples(onnx_path, x, iters):
    """Per-node kernel times of ``iters`` runs from ONNX Runtime's profiler: [(node, [ms per run])], execution
    order (a CPU stand-in for TensorRT's IProfiler)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # one event per ONNX node
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    for _ in range(iters):
        sess.run(None, {"input": x})
    trace = sess.end_profiling()
    try:
        with open(trace) as f:
            events = json.load(f)
    finally:
        os.unlink(trace)
    order, samples = [], {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][:-len("_kernel_time")]
            if name not in samples:
                order.append(name)
                samples[name] = []
            samples[name].append(e["dur"] / 1000.0)
    return [(n, samples[n][-iters:]) for n in order]


def test_export_profile_layout(tiny, tmp_path):
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    layers = _ort_layer_samples(tiny, x, 10)
    assert [n for n, _ in layers] == ["conv1", "relu1", "conv2", "relu2", "pool", "flatten", "fc"]
    assert all(len(s) == 10 for _, s in layers)
    grand = sum(sum(s) for _, s in layers)
    for layout, fields in (("8.4", TRTEXEC_PROFILE_FIELDS), ("8.2", TRTEXEC_PROFILE_FIELDS_82)):
        records = bench.trtexec_profile([{"name": n, "samples": s} for n, s in layers], 10, layout)
        path = bench.write_trtexec_profile(str(tmp_path / ("profile%s.json" % layout)), records)
        with open(path) as f:
            data = json.load(f)
        assert data == records
        assert data[0] == {"count": 10}  # mUpdatesCount: the profiled iterations
        assert [r["name"] for r in data[1:]] == [n for n, _ in layers]  # execution order, as trtexec's mLayers
        for rec, (name, s) in zip(data[1:], layers):
            assert list(rec) == fields
            assert rec["timeMs"] == pytest.approx(sum(s))  # getTotalTime(l)
            assert rec["averageMs"] == pytest.approx(sum(s) / 10)  # getAvgTime / timeMs / mUpdatesCount
            assert rec["percentage"] == pytest.approx(sum(s) / grand * 100)
            if layout == "8.4":
                assert rec["medianMs"] == pytest.approx(float(np.median(s)))  # getMedianTime(l)
        assert sum(r["percentage"] for r in data[1:]) == pytest.approx(100.0)
    # the runner's table (runtime.LayerTimes: totals, no samples): medianMs null, the rest the same
    lt = runtime.LayerTimes()
    for i in range(10):
        for n, s in layers:
            lt.add(n, s[i])
    from_rows = bench.trtexec_profile(bench.profile_layers_from_rows(lt.rows(iterations=10), 10), 10, "8.4")
    by_name = dict((r["name"], r) for r in from_rows[1:])
    assert from_rows[0] == {"count": 10} and set(by_name) == set(n for n, _ in layers)
    for n, s in layers:
        assert by_name[n]["medianMs"] is None
        assert by_name[n]["timeMs"] == pytest.approx(sum(s)) and by_name[n]["averageMs"] == pytest.approx(sum(s) / 10)


def test_layout_by_tensorrt_version():
    assert bench.trtexec_layout({"flavour": "tensorrt", "version": "8.2.4"}) == "8.2"
    assert bench.trtexec_layout({"flavour": "tensorrt", "version": "8.4.1"}) == "8.4"
    assert bench.trtexec_layout({"flavour": "tensorrt", "version": "10.16.0"}) == "8.4"
    assert bench.trtexec_layout({"flavour": "tensorrt_rtx", "version": "1.7.1"}) == "8.4"
    assert bench.trtexec_layout("8.2.1") == "8.2"
    with pytest.raises(Exception, match="unknown trtexec layout"):
        bench.trtexec_times({"host_ms": [], "times_ms": []}, "9.9")
    assert bench.per_batch_paths("t.json", [4]) == ["t.json"]
    assert bench.per_batch_paths("d/t.json", [1, 4, 4]) == ["d/t.b1.json", "d/t.b4.json", "d/t.b4-2.json"]


def test_streams_loop(tiny):
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    made = []

    def make():
        made.append(OnnxRuntimeBackend(tiny, threads=1))
        return made[-1]

    res = bench.benchmark_streams([make(), make()], x, warmup=1, iters=5)
    assert res["streams"] == 2 and res["executions"] == 10 and res["wall_ms"] > 0
    assert res["throughput_qps"] == pytest.approx(10 * 1000.0 / res["wall_ms"])
    assert res["throughput_img_s"] == pytest.approx(res["throughput_qps"] * 2)
    ref = OnnxRuntimeBackend(tiny).infer(x)
    for out in res["logits"]:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    made[:] = []
    rows = bench.streams_rows(make, 3, batches=[1, 2], warmup=0, iters=4)
    assert [(r["batch"], r["streams"], r["executions"]) for r in rows] == [(1, 3, 12), (2, 3, 12)]
    assert all(r["max_abs_vs_stream0"] == 0.0 for r in rows)
    assert len(made) == 3 and all(t._sess is None for t in made)  # every target closed


def test_test_trt_export_option_errors(tmp_path):
    fake = tmp_path / "fake.trt"
    fake.write_bytes(b"not an engine")
    r = run_script(["test_trt.py", "--trt_path", str(fake), "--export-profile", str(tmp_path / "p.json")])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["error: --export-profile needs --ProfilerLayer (the per-layer times "
                                             "it writes)"]
    folder = tmp_path / "times.json"
    folder.mkdir()
    r = run_script(["test_trt.py", "--trt_path", str(fake), "--export-times", str(folder)])
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--export-times %s is a folder" % folder in lines[0]
    r = run_script(["test_trt.py", "--trt_path", str(fake), "--streams", "0"])
    assert r.returncode == 1 and "--streams" in r.stderr and "positive integer" in r.stderr


def test_test_trt_writes_the_files(tiny, tmp_path, monkeypatch, capsys):
    """test_trt.py's own code from the parsed options to the files, with ONNX Runtime standing in for the engine
    (no GPU here): ``runtime.benchmark_engine`` is replaced by the same loop on the CPU backend (bench.
    benchmark_cases with ``traces``; per-layer rows from ONNX Runtime's profiler), ``TensorRTBackend`` (--streams)
    by OnnxRuntimeBackend.  Layout by the TensorRT version the meta names: 8.2 here."""
    from mobilevit_trt import backends
    from mobilevit_trt.commands import bench as command

    def cpu_benchmark_engine(engine_path, data=None, batches=None, warmup=20, iters=50, cuda_graph=False,
                             profile_layers=False, atol=None, plugins=None, verbose=False, log=print, traces=None):
        target = OnnxRuntimeBackend(tiny, threads=1)
        cases = bench.select_cases(target, None, batches, data, log=log)
        rows = bench.benchmark_cases(target, cases, warmup=warmup, iters=iters, atol=atol, traces=traces)
        layers = []
        if profile_layers:
            for case in cases:
                lt = runtime.LayerTimes()
                for name, samples in _ort_layer_samples(tiny, case.input, iters):
                    for ms in samples:
                        lt.add(name, ms)
                layers.append((len(case.input), lt.rows(iterations=iters)))
        meta = {"tensorrt": {"flavour": "tensorrt", "version": "8.2.4"}, "sidecar": None, "cuda_graph": False,
                "device": {"name": "CPU (ONNX Runtime)", "compute_capability": "-"}, "atol": 1e-2}
        return rows, meta, layers

    monkeypatch.setattr(runtime, "benchmark_engine", cpu_benchmark_engine)
    monkeypatch.setattr(backends, "TensorRTBackend", lambda *a, **k: OnnxRuntimeBackend(tiny, threads=1))
    engine = tmp_path / "stand-in.trt"
    engine.write_bytes(b"the ONNX Runtime stand-in does not read it")
    times, profile, results = (str(tmp_path / n) for n in ("times.json", "profile.json", "r.json"))
    rc = command.main(["--trt_path", str(engine), "--batch", "1", "--batch", "2", "--warmup", "1", "--iters", "6",
                       "--ProfilerLayer", "--export-times", times, "--export-profile", profile, "--streams", "2",
                       "--results-file", results])
    out = capsys.readouterr().out
    assert rc == 0
    assert sorted(os.listdir(str(tmp_path))) == ["profile.b1.json", "profile.b2.json", "r.json", "stand-in.trt",
                                                 "times.b1.json", "times.b2.json"]
    for b in (1, 2):
        with open(str(tmp_path / ("times.b%d.json" % b))) as f:
            recs = json.load(f)
        assert len(recs) == 6 and all(list(r) == TRTEXEC_TIMES_FIELDS_82 for r in recs)
        with open(str(tmp_path / ("profile.b%d.json" % b))) as f:
            prof = json.load(f)
        assert prof[0] == {"count": 6} and all(list(r) == TRTEXEC_PROFILE_FIELDS_82 for r in prof[1:])
        assert len(prof) == 8
    assert "trtexec --exportTimes layout (TensorRT 8.2; no copies in the loop" in out
    assert "pipelined throughput: 2 streams, 6 executions each" in out
    with open(results) as f:
        res = json.load(f)
    assert [r["executions"] for r in res["meta"]["streams"]] == [12, 12]
    assert res["meta"]["export_times"] == [str(tmp_path / "times.b1.json"), str(tmp_path / "times.b2.json")]
    assert all("latency_ms_p95" in r for r in res["rows"])
