"""The one-command pipeline end to end on the shipped default model (small limits), then re-run from cache."""
import json
import os

import pytest

from tests.helpers import run_script

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pipeline") / "run")
    r = run_script(["pipeline.py", "--out", out, "--limit", "40", "--bench-iters", "15", "--calib-count", "16",
                    "--select", "--max-drop", "0.5", "--export-triton", os.path.join(out, "triton_models")],
                   timeout=1500)
    return out, r


def _stages(out):
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    return res, {s["stage"]: s for s in res["stages"]}


def test_pipeline_runs_every_cpu_stage(first_run):
    out, r = first_run
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res, st = _stages(out)
    for name in ("export base", "export opt", "surgery", "surgery native", "surgery fusable", "fp16",
                 "int8 ptq entropy", "int8 ptq minmax", "accuracy torch_fp32", "accuracy opt_dynamic_plugin",
                 "accuracy opt_dynamic_native", "accuracy opt_dynamic_fusable", "cpu-bench"):
        assert st[name]["status"] == "ran", (name, st[name])
    # the default model is Apple's MobileViT-XXS (timm's code): QAT is the original project's model's only
    for name in ("int8 qat_w", "int8 qat_wa"):
        assert st[name]["status"] == "skipped" and "original project's model" in st[name]["note"]
    assert res["model"]["arch"] == "mobilevit_xxs" and res["model"]["family"] == "mobilevit-official"
    # its preprocessing is the one it was trained with (timm's, recorded in the checkpoint), in every artifact
    from mobilevit_trt.preprocess import Preprocess
    pp = Preprocess.coerce(res["preprocess"]["config"])
    assert pp.describe() == ("256x256, resize short side 284 (bicubic) + center crop, scale 1/255, mean 0 std 1, "
                             "RGB") and res["preprocess"]["origin"].startswith("checkpoint ")
    for name in os.listdir(os.path.join(out, "onnx")):
        assert Preprocess.from_onnx(os.path.join(out, "onnx", name)) == pp, name
    assert all(a["preprocess"] == pp.describe() for a in res["accuracy"])
    # nothing failed; whatever was skipped says why
    assert not [s for s in st.values() if s["status"] == "failed"]
    assert all(s["note"] for s in st.values() if s["status"] == "skipped")
    try:
        import tensorrt_rtx  # noqa: F401
        have_rtx = True
    except ImportError:
        have_rtx = False
    if have_rtx:  # engines built ahead-of-time on the CPU; the plugin graph is refused with the reason
        for name in ("opt_b1", "opt_dynamic", "opt_dynamic_fp16", "opt_dynamic_int8_entropy", "opt_dynamic_native",
                     "opt_dynamic_native_fp16", "opt_dynamic_fusable"):
            assert st["engine " + name]["status"] == "ran", st["engine " + name]
            assert os.path.getsize(os.path.join(out, "engines", name + ".engine")) > 100000
            from mobilevit_trt.sidecar import engine_preprocess
            assert engine_preprocess(os.path.join(out, "engines", name + ".engine"))[0] == pp
        assert "TensorRT-RTX" in st["engine opt_dynamic_plugin"]["note"]
        assert st["trt-bench opt_b1"]["status"] == "skipped"


def test_pipeline_numbers_are_consistent(first_run):
    out, r = first_run
    res, _ = _stages(out)
    acc = {a["variant"]: a for a in res["accuracy"]}
    # the FP32 ONNX graphs (base, opt, plugin graph through the reference ops) predict what PyTorch predicts
    for v in ("base_dynamic", "opt_dynamic", "opt_dynamic_plugin", "opt_dynamic_native", "opt_dynamic_fusable"):
        assert acc[v]["images"] == 40 and acc[v]["correct1"] == acc["torch_fp32"]["correct1"], acc[v]
    assert acc["torch_fp32"]["top1"] >= 90.0  # the shipped model is a real classifier (99.3% on the full split)
    assert abs(acc["opt_dynamic_fp16"]["top1"] - acc["opt_dynamic"]["top1"]) <= 5.0
    exports = {e["variant"]: e for e in res["exports"]}
    assert exports["opt_dynamic"]["nodes"] <= 1.1 * exports["opt_b1"]["nodes"]
    assert all(e["passed"] and e["max_abs_vs_torch"] <= 1e-4 for e in exports.values())
    cpu = res["cpu_latency"]
    assert {(c["variant"], c["batch"]) for c in cpu} >= {("base_static", 1), ("base_static", 8), ("opt_dynamic", 4)}
    assert all(c["latency_ms_p50"] > 0 and c["throughput_img_s"] > 0 for c in cpu)
    md = open(os.path.join(out, "summary.md")).read()
    targets = {r["tensorrt"]: r for r in res["fusion_targets"]}
    assert [targets[k]["target"] for k in ("TensorRT 8.2-8.5", "TensorRT 8.6-10.13", "TensorRT 10.14+, 11.x",
                                           "TensorRT-RTX")] == ["plugin", "fusable", "native", "native"]
    assert all(r["made"] == "yes" for r in targets.values())
    for heading in ("## Fusion target per TensorRT", "## Stages", "## Latency, ONNX Runtime on the CPU", "### Speed-up over the base FP32",
                    "## Accuracy on the held-out split", "the original project's A10 results"):
        assert heading in md
    for png in ("cpu_latency.png", "accuracy.png"):
        with open(os.path.join(out, png), "rb") as f:
            data = f.read()
        assert data[:8] == PNG_MAGIC and len(data) > 10000
    for csv in ("accuracy.csv", "cpu_latency.csv", "exports.csv", "stages.csv"):
        assert os.path.getsize(os.path.join(out, csv)) > 50


def test_pipeline_mixed_int8_and_modelopt_candidates(first_run):
    """--select's mixed INT8: float layers chosen on the training split under the budget, listed with the INT8
    MAC share; the float nodes of the written graph take no Q/DQ input. ModelOpt: made where it is installed,
    else skipped with the reason."""
    import onnx

    from mobilevit_trt.mixed_int8 import qdq_inputs
    from mobilevit_trt.modelopt_ptq import unavailable
    out, _ = first_run
    res, st = _stages(out)
    assert st["int8 mixed entropy"]["status"] == "ran", st["int8 mixed entropy"]
    mx = res["mixed_int8"][0]
    assert mx["variant"] == "opt_dynamic_int8_mixed" and mx["check_images"] == 500 and mx["max_drop"] == 0.2
    assert mx["met"] == (mx["check_fp32_top1"] - mx["check_top1"] <= 0.2 + 1e-9)
    assert 0.9 <= mx["int8_mac_fraction"] <= 1.0
    m = onnx.load(os.path.join(out, "onnx", "opt_dynamic_int8_mixed.onnx"))
    got = qdq_inputs(m)
    assert set(mx["float_nodes"]) <= set(got)
    for name, dq in got.items():  # a float node reads no INT8 input; every other node reads its data input so
        assert not any(dq) if name in mx["float_nodes"] else dq[0], name
    md = open(os.path.join(out, "summary.md")).read()
    assert "## Mixed INT8 (opt_dynamic_int8_mixed)" in md and "INT8 share of the Conv/MatMul/Gemm MACs" in md
    why = unavailable()
    if why:
        assert st["int8 modelopt entropy"]["status"] == "skipped" and st["int8 modelopt entropy"]["note"] == why
    else:
        assert st["int8 modelopt entropy"]["status"] == "ran"


def test_pipeline_rerun_is_cached(first_run):
    out, _ = first_run
    r = run_script(["pipeline.py", "--out", out, "--limit", "40", "--bench-iters", "15", "--calib-count", "16",
                    "--select", "--max-drop", "0.5", "--export-triton", os.path.join(out, "triton_models")],
                   timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    _, st = _stages(out)
    ran = [n for n, s in st.items() if s["status"] == "ran"]
    assert ran == [], ran
    assert st["export opt"]["status"] == "cached" and st["accuracy torch_fp32"]["status"] == "cached"


def test_pipeline_selects_the_fastest_within_budget(first_run):
    """--select: the choice is the fastest measured candidate within the budget (recomputed here from the
    report's own rows), written as best.onnx, labelled as a CPU stand-in; the CPU speed-ups carry intervals."""
    out, r = first_run
    res, _ = _stages(out)
    sel = res["selection"]
    ref = next(a["top1"] for a in res["accuracy"] if a["variant"] == "torch_fp32")
    inside = [row for row in sel["rows"] if row["latency_ms"] is not None and row["top1"] is not None
              and ref - row["top1"] <= 0.5]
    assert inside and sel["chosen"] == min(inside, key=lambda row: row["latency_ms"])["variant"]
    assert "stand-in" in sel["latency_source"] and sel["files"][0] == "best.onnx"
    import filecmp
    chosen = [row for row in sel["rows"] if row["status"] == "chosen"][0]
    assert filecmp.cmp(os.path.join(out, "best.onnx"), chosen["artifact"], shallow=False)
    # plugin and fusion-target graphs are listed without a CPU latency, never chosen
    status = {row["variant"]: row["status"] for row in sel["rows"]}
    assert status["opt_dynamic_plugin"] == "not measured"
    # the static batch-1 exports compete at batch 1 (measured there); the other static batches do not
    assert "base_b1" in status and "opt_b1" in status and "base_b4" not in status and "opt_b8" not in status
    acc = {a["variant"]: a for a in res["accuracy"]}
    assert acc["base_b1"]["correct1"] == acc["torch_fp32"]["correct1"] and acc["base_b1"]["images"] == 40
    # every PTQ calibration and mixed INT8 are candidates; the choice says how it compares with the runner-up
    for v in ("opt_dynamic_int8_entropy", "opt_dynamic_int8_minmax", "opt_dynamic_int8_percentile",
              "opt_dynamic_int8_mixed"):
        assert status[v] != "not measured", v
    if sum(1 for v in status.values() if v in ("chosen", "within budget")) > 1:
        assert "within noise of" in chosen["reason"] or "faster than" in chosen["reason"], chosen["reason"]
    # --export-triton: the choice (an ONNX file here: no engine ran) as an onnxruntime model, a valid config
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format
    model = os.path.join(out, "triton_models", "mobilevit_onnx")
    with open(os.path.join(model, "config.pbtxt")) as f:
        cfg = text_format.Parse(f.read(), pb.ModelConfig())
    assert cfg.platform == "onnxruntime_onnx" and cfg.input[0].name == "input"
    assert filecmp.cmp(os.path.join(model, "1", "model.onnx"), chosen["artifact"], shallow=False)
    import onnx
    dims = [d.dim_value for d in onnx.load(chosen["artifact"]).graph.input[0].type.tensor_type.shape.dim]
    if dims[0]:  # a static export: Triton's max_batch_size 0 and the full dims
        assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == dims
    else:
        assert cfg.max_batch_size >= 1 and list(cfg.input[0].dims) == dims[1:]
    md = open(os.path.join(out, "summary.md")).read()
    assert "## Selection" in md and "stand-in" in md and "pareto.png" in md
    assert "[" in md.split("### Speed-up over the base FP32")[1].split("##")[0]      # intervals printed
    with open(os.path.join(out, "pareto.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
