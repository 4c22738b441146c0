"""What a first real run in a TensorRT container would have hit, reproduced on a CPU machine where it can be.

Real TensorRT code in the loop: the TensorRT-RTX ONNX parser and builder (``tensorrt_rtx``), ONNX Runtime for the
backend-independent benchmark and accuracy loops, and the toolkit's own calibrator and CUDA code paths.  Defects no
CPU machine can show (8.2 workspace default, PyCUDA at exit, profile refusal) are checked where their decision is
made, with the TensorRT source line each fix follows cited in the code; the PyCUDA one runs on the GPU machine
(``tests/gpu/test_pycuda_exit.py``).
"""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from mobilevit_trt import bench, build, calib, cuda, plugin_spec, surgery, trt_compat
from mobilevit_trt import accuracy as A
from mobilevit_trt import data as D
from mobilevit_trt.backends import OnnxRuntimeBackend, fit_batch
from mobilevit_trt.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: what TensorRT-RTX 1.7's parser says for a node it hands to the plugin fallback importer and finds no creator for
FALLBACK = ('In node 0 with name: %s and operator: %s (checkFallbackPluginImporter): INVALID_NODE: creator && '
            '"Plugin not found, are the plugin name, version, and namespace correct?"')


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("first_run")


@pytest.fixture(scope="module")
def xxs(work):
    """The default model (MobileViT-XXS, the shipped weights) exported dynamic (opset 13) and its fused graph."""
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model
    from mobilevit_trt.export import export_onnx
    model, _ = load_model(DEFAULT_WEIGHTS, quiet=True)
    dyn = str(work / "xxs_dynamic.onnx")
    export_onnx(model, dyn, dynamic=True, log=_quiet, verify=False)
    fused, report = surgery.add_plugins(onnx.load(dyn))
    fused_path = str(work / "xxs_dynamic_plugin.onnx")
    onnx.save(fused, fused_path)
    return {"model": model, "dynamic": dyn, "fused": fused_path, "report": report}


def _rtx():
    return pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed (pip install tensorrt-rtx)")


@pytest.fixture(scope="module")
def rtx_api():
    _rtx()
    old = os.environ.get(trt_compat.MODULE_ENV)
    os.environ[trt_compat.MODULE_ENV] = "tensorrt_rtx"
    yield trt_compat.load(prefer="tensorrt_rtx")
    if old is None:
        os.environ.pop(trt_compat.MODULE_ENV, None)
    else:
        os.environ[trt_compat.MODULE_ENV] = old


# -- 1. plugin names: no collision with ONNX/TensorRT ops; every plugin node reaches the fallback plugin importer --

def _single_node_model(model, node, opset=None):
    """A one-node model: ``node`` with its tensor inputs as graph inputs (shapes from shape inference) and its
    initializer inputs (gamma/beta) kept."""
    from onnx import helper
    inferred = onnx.shape_inference.infer_shapes(surgery.with_check_domain(model))
    vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {t.name: t for t in model.graph.initializer}
    inputs = [vi[n] for n in node.input if n not in inits]
    outputs = [vi[n] if n in vi else helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in node.output]
    graph = helper.make_graph([node], "one", inputs, outputs, [inits[n] for n in node.input if n in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset or 13)])


def _parse(api, model_bytes):
    logger = trt_compat.make_logger(api)
    logger.quiet = True
    network = trt_compat.create_network(api, trt_compat.new_builder(api, logger))
    parser = trt_compat.new_parser(api, network, logger)
    ok = parser.parse(model_bytes)
    return ok, trt_compat.parser_errors(parser), parser


def test_plugin_names_collide_with_no_onnx_op():
    from onnx import defs
    for op in plugin_spec.SPECS:
        assert not defs.has(op), "%s is an ONNX op name" % op
    assert plugin_spec.PLUGIN_NAMESPACE and plugin_spec.node_attrs(
        plugin_spec.ATTENTION_OP, scale=0.5)["plugin_namespace"] == plugin_spec.PLUGIN_NAMESPACE


def test_rtx_parser_sends_every_plugin_node_to_the_plugin_importer(xxs, rtx_api):
    """Each of the 27 plugin nodes of the fused default model, parsed on its own by TensorRT-RTX's ONNX parser,
    goes to checkFallbackPluginImporter (no creator: TensorRT-RTX loads no C++ plugins) -- at opset 13 and at
    opset 23, where ONNX has its own Attention op.  The old name reproduces the defect."""
    fused = onnx.load(xxs["fused"])
    nodes = [n for n in fused.graph.node if n.op_type in plugin_spec.SPECS]
    assert len(nodes) == 27
    for opset in (13, 23):
        for node in nodes:
            ok, errors, parser = _parse(rtx_api, _single_node_model(fused, node, opset).SerializeToString())
            assert not ok and errors == [FALLBACK % (node.name, node.op_type)], (opset, node.name, errors)
    # ... without ENABLE_PLUGIN_OVERRIDE (it would also hand standard nodes to same-named plugins such as
    # TensorRT's own "Split"); new_parser sets it only when asked (a graph whose plugin names are ONNX op names)
    flag = rtx_api.module.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE
    assert not parser.get_flag(flag)
    logger = trt_compat.make_logger(rtx_api)
    net = trt_compat.create_network(rtx_api, trt_compat.new_builder(rtx_api, logger))
    assert trt_compat.new_parser(rtx_api, net, logger, plugin_override=True).get_flag(flag)
    # the name used before: the built-in ONNX Attention importer takes the node and rejects it
    att = next(n for n in nodes if n.op_type == plugin_spec.ATTENTION_OP)
    old = onnx.NodeProto()
    old.CopyFrom(att)
    old.op_type = "Attention"
    ok, errors, _ = _parse(rtx_api, _single_node_model(fused, old, 23).SerializeToString())
    assert not ok and "checkFallbackPluginImporter" not in errors[0] and "INVALID_NODE" in errors[0]


def test_parser_override_flag_is_chosen_by_release():
    from tests.test_trt_compat_contract import table_has
    assert trt_compat.select_branches(table_has("8.2.4"))["parser_flags"] == "none"
    assert trt_compat.select_branches(table_has("8.6.1"))["parser_flags"] == "none"
    assert trt_compat.select_branches(table_has("10.16"))["parser_flags"] == "plugin_override"
    assert trt_compat.select_branches(table_has("11.1"))["parser_flags"] == "plugin_override"


def test_graphs_fused_by_an_older_toolkit_are_refused_with_the_fix(xxs, tmp_path):
    old = onnx.load(xxs["fused"])
    for n in old.graph.node:
        if n.op_type in plugin_spec.SPECS:
            n.op_type = n.op_type[len("MVT_"):]
    path = str(tmp_path / "old_plugin.onnx")
    onnx.save(old, path)
    with pytest.raises(UserError, match="made by an older onnx_add_plugin.py .*fuse the source ONNX again"):
        build.onnx_facts(path)


class _RefusingContext(object):
    """What TensorRT's binding does when the profile is refused: set_optimization_profile_async raises
    RuntimeError (pyCore.cpp at 22.04 lines 295-301, v8.6.1 353-358, v10.16 346-352) -- no GPU needed to show the
    toolkit turns it into one error line."""
    active_optimization_profile = 0

    def set_optimization_profile_async(self, profile, stream):
        raise RuntimeError("Error Code 3: API Usage Error (profile index out of range)")


def test_refused_profile_is_a_user_error():
    with pytest.raises(UserError, match=r"TensorRT refused optimization profile 2 \(Error Code 3"):
        trt_compat.set_profile(_RefusingContext(), 2, 0)


# -- 2. TensorRT 8.2's workspace default of 0 ---------------------------------------------------------------------

def test_workspace_defaults_where_tensorrt_defaults_to_zero():
    from tests.test_trt_compat_contract import table_has
    branch_82 = trt_compat.select_branches(table_has("8.2.4"))["workspace"]
    assert branch_82 == "max_workspace_size"
    assert trt_compat.workspace_plan(branch_82)[0] == 1 << 30
    assert trt_compat.workspace_plan(branch_82, device_total_bytes=1 << 30)[0] == 1 << 29  # capped at half
    assert trt_compat.workspace_plan(branch_82, requested_mib=64)[0] == 64 << 20
    for rel in ("8.6.1", "10.16", "11.1"):
        branch = trt_compat.select_branches(table_has(rel))["workspace"]
        assert trt_compat.workspace_plan(branch) == (None, "TensorRT default (the device memory)")


# -- 4. the INT8 calibrator: nothing fails inside TensorRT's callbacks, and nothing is swallowed -------------------

def _calibrator(inputs, batch=4):
    # the toolkit's calibrator on a plain base class: its callbacks are called as TensorRT's binding calls them
    return calib._calibrator_class(object)(inputs, batch, None, "input")


def test_calibrator_prepares_cuda_before_the_build():
    if cuda.driver_problem() is None:
        pytest.skip("this machine has a CUDA driver")
    cal = _calibrator(np.zeros((8, 3, 4, 4), np.float32))
    with pytest.raises(UserError) as e:
        cal.prepare_buffers(cuda, progress=False)
    assert "no CUDA driver/GPU found" in str(e.value) and "pip install" not in str(e.value)


def test_calibrator_callback_errors_are_recorded_and_raised_after_the_build():
    cal = _calibrator(np.zeros((8, 3, 4, 4), np.float32))
    # buffers were never prepared: the first get_batch fails inside -- it must return None, not raise
    assert cal.get_batch(["input"]) is None
    assert cal.get_batch(["input"]) is None  # and stays ended
    with pytest.raises(calib.CalibrationFailed) as e:
        cal.raise_if_failed()
    assert str(e.value).startswith("calibration failed in get_batch after 0 of 2 batches: ")


def test_truncated_calibration_is_an_error():
    cal = _calibrator(np.zeros((12, 3, 4, 4), np.float32))
    cal.batches_fed = 1  # TensorRT asked for one batch of three and stopped
    with pytest.raises(calib.CalibrationFailed, match="stopped calibration after 1 of 3 batches"):
        cal.raise_if_failed()


def test_corrupt_calibration_cache_is_refused(tmp_path):
    path = str(tmp_path / "c.cache")
    cache = calib.CalibrationCache(path, "a" * 64, "entropy2", "8.6.1", 4, log=_quiet)
    cache.write(b"\x00\x01garbage")
    with pytest.raises(UserError, match="is not a TensorRT calibration cache"):
        cache.read()
    assert calib.cache_problem(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n") is None


# -- 5. the benchmark loop, backend-independent: the pipeline's stage driven by ONNX Runtime ----------------------

def test_pipeline_bench_stage_runs_on_a_cpu_backend(xxs):
    from mobilevit_trt import pipeline, pipeline_report
    target = OnnxRuntimeBackend(xxs["dynamic"], profiles=[(1, 4, 8)])
    rows = pipeline.bench_stage(target, "opt_dynamic", warmup=1, iters=3)
    assert [r["batch"] for r in rows] == [1, 4, 8]
    for r in rows:
        assert r["variant"] == "opt_dynamic" and r["iters"] == 3 and r["latency_ms_p50"] > 0
        assert r["cuda_graph"] is False and r["plain_launches"] == 3  # ONNX Runtime replays no graph
        assert r["throughput_img_s"] == pytest.approx(r["batch"] * 1000.0 / r["latency_ms_p50"])
    names, lat, _ = pipeline_report.latency_pivot(rows, lambda b: "opt_dynamic")
    assert names == ["opt_dynamic"] and [row["batch"] for row in lat] == [1, 4, 8]


def test_benchmark_cases_compare_with_pytorch(xxs):
    import torch
    x = np.random.default_rng(3).standard_normal((4, 3, 256, 256)).astype(np.float32)
    with torch.no_grad():
        ref = xxs["model"].eval()(torch.from_numpy(x)).numpy()
    case = bench.Case("ref", x, ref, np.argmax(ref, 1))
    rows = bench.benchmark_cases(OnnxRuntimeBackend(xxs["dynamic"]), [case], warmup=0, iters=2, atol=1e-4)
    assert rows[0]["verdict"] == "PASSED" and rows[0]["abs_max"] <= 1e-4 and rows[0]["top1_acc"] == 1.0
    wrong = bench.Case("wrong", x, ref + 1.0)
    assert bench.benchmark_cases(OnnxRuntimeBackend(xxs["dynamic"]), [wrong], 0, 2, atol=1e-4)[0]["verdict"] \
        == "FAILED"


# -- 6. CUDA graphs on TensorRT-RTX need REQUIRE_USER_ALLOCATION; results say what ran ----------------------------

def test_rtx_engine_for_cuda_graphs_sets_require_user_allocation(xxs, rtx_api, work):
    plain = build.build_engine(xxs["dynamic"], str(work / "plain.engine"), log=_quiet)
    graph = build.build_engine(xxs["dynamic"], str(work / "graph.engine"), cuda_graph=True, log=_quiet)
    # read back from the real IBuilderConfig by build.py
    assert "REQUIRE_USER_ALLOCATION" not in plain["builder_flags"]
    assert "REQUIRE_USER_ALLOCATION" in graph["builder_flags"]
    assert plain["graph_capture"] == {"prepared": False, "require_user_allocation": False}
    assert graph["graph_capture"] == {"prepared": True, "require_user_allocation": True}
    assert plain["workspace"] == {"bytes": None, "note": "TensorRT default (the device memory)"}


# -- 7. engines whose smallest batch is > 1: the accuracy loop pads to an accepted batch size ---------------------

def test_accuracy_pads_to_the_profile_minimum(xxs, tmp_path):
    root = str(tmp_path / "digits")
    D.make_default_dataset(root, lmdb=False, show_progress=False)
    ds = D.limit_dataset(D.open_dataset(os.path.join(root, "val")), 11)
    free = A.evaluate(OnnxRuntimeBackend(xxs["dynamic"]), ds, batch=8, show_progress=False, keep_logits=True)
    # as an engine built with --profile 4:8:16 would: 11 images = 8 + 3, and 3 is below the profile's MIN
    engine_like = OnnxRuntimeBackend(xxs["dynamic"], profiles=[(4, 8, 16)])
    with pytest.raises(UserError, match="outside every optimization profile"):
        engine_like.infer(np.zeros((3, 3, 256, 256), np.float32))
    res = A.evaluate(engine_like, ds, batch=8, show_progress=False, keep_logits=True)
    assert res["images"] == 11 and res["correct1"] == free["correct1"]
    np.testing.assert_allclose(res["logits"], free["logits"], rtol=0, atol=1e-4)
    assert fit_batch([(4, 16)], 3) == 4 and fit_batch([(1, 1), (8, 16)], 5) == 8 and fit_batch(None, 3) == 3
    with pytest.raises(UserError):
        fit_batch([(4, 8)], 9)


# -- 8. the default plugin library and --plugin paths ---------------------------------------------------------------

def test_default_plugin_set_is_the_plugin_library_only(tmp_path, monkeypatch):
    for name in ("libmvt_kernels.so", "libmvt_plugins.so"):
        with open(str(tmp_path / name), "wb") as f:
            f.write(b"\x7fELF")
    monkeypatch.setattr(build, "PLUGIN_DIR", str(tmp_path))
    assert build.default_plugin_libraries() == [str(tmp_path / "libmvt_plugins.so")]


def test_plugin_path_errors_say_what_is_wrong(xxs, rtx_api, tmp_path):
    txt = str(tmp_path / "notes.txt")
    with open(txt, "w") as f:
        f.write("not a library")
    with pytest.raises(UserError, match="is not a shared library"):
        build.build_engine(xxs["fused"], str(tmp_path / "e.engine"), plugins=[txt], log=_quiet)
    with pytest.raises(UserError, match="plugin library not found"):
        build.build_engine(xxs["fused"], str(tmp_path / "e.engine"), plugins=[str(tmp_path / "no.so")], log=_quiet)
    assert sorted(os.listdir(str(tmp_path))) == ["notes.txt"]


# -- user errors on the build path ----------------------------------------------------------------------------------

def test_plugin_graph_with_int8_qdq_is_one_clear_error(xxs, rtx_api, tmp_path):
    r = subprocess.run([sys.executable, "convert_to_trt.py", "--input_path", xxs["fused"], "--save_path",
                        str(tmp_path / "p.engine"), "--dynamic", "--int8"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, **{trt_compat.MODULE_ENV: "tensorrt_rtx"}), timeout=600)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert os.listdir(str(tmp_path)) == []


def test_fp16_comparison_of_a_plugin_graph_runs_the_reference_ops(xxs, tmp_path):
    """Strongly typed TensorRT (11.x) builds FP16 from an FP16 copy of the ONNX, checked in ONNX Runtime: with
    plugin nodes that check must run their reference ops (it raised "No Op registered for LayerNorm")."""
    from mobilevit_trt import precision
    fp16 = str(tmp_path / "fused.fp16.onnx")
    precision.convert_fp16(xxs["fused"], fp16, log=_quiet)
    x = precision.structured_inputs(4, seed=1)
    from mobilevit_trt.verify import compare_files
    stats = compare_files(fp16, xxs["fused"], x)
    assert stats["n"] == 4 and stats["top1_agreement"] == 1.0 and stats["max_abs"] < 0.5


def test_int8_without_calib_data_uses_the_default_training_split(xxs, rtx_api, tmp_path, monkeypatch):
    root = str(tmp_path / "default")
    D.make_default_dataset(root, lmdb=False, show_progress=False)
    monkeypatch.setenv(D.DATA_DIR_ENV, root)
    lines = []
    meta = build.build_engine(xxs["dynamic"], str(tmp_path / "i8.engine"), int8=True, calib_limit=16,
                              log=lines.append)
    assert meta["precision"] == "int8" and meta["calibration_inputs"] == 16
    assert any(line.startswith("no --calib-data: calibrating on the default dataset's training split %s"
                               % os.path.join(root, "train")) for line in lines)
    assert sorted(os.listdir(str(tmp_path))) == ["default", "i8.engine", "i8.engine.json"]
    keep = build.build_engine(xxs["dynamic"], str(tmp_path / "k.engine"), int8=True, calib_limit=16,
                              keep_intermediate=True, log=_quiet)
    assert os.path.isfile(keep["built_onnx"]["path"]) and keep["built_onnx"]["path"].endswith("k.qdq.onnx")
    # a fresh clone has no default dataset: it is made on demand (in a folder of its own here)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "fresh" / "default"))
    lines = []
    build.build_engine(xxs["dynamic"], str(tmp_path / "x.engine"), int8=True, calib_limit=8, log=lines.append)
    assert "the default dataset is not there: making it in %s" % (tmp_path / "fresh" / "default") in lines
    assert os.path.isdir(str(tmp_path / "fresh" / "default" / "train"))


def test_engine_path_that_is_a_directory_fails_before_building(xxs, tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        build.build_engine(xxs["dynamic"], str(tmp_path), log=_quiet)


def test_original_project_int8_command_works_without_calibration_flags(xxs, rtx_api, tmp_path):
    """The original project's `convert_to_trt.py --input_path X --save_path Y --dynamic --fp16 --int8`: calibrates
    on the default dataset's training split (here made in tmp_path) and says which."""
    root = str(tmp_path / "default")
    D.make_default_dataset(root, lmdb=False, show_progress=False)
    engine = str(tmp_path / "out" / "dyn_int8.trt")
    r = subprocess.run([sys.executable, "convert_to_trt.py", "--input_path", xxs["dynamic"], "--save_path", engine,
                        "--dynamic", "--fp16", "--int8", "--calib-limit", "16"], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, **{trt_compat.MODULE_ENV: "tensorrt_rtx", D.DATA_DIR_ENV: root}),
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no --calib-data: calibrating on the default dataset's training split %s" % os.path.join(root, "train") \
        in r.stdout
    assert sorted(os.listdir(str(tmp_path / "out"))) == ["dyn_int8.trt", "dyn_int8.trt.json"]
