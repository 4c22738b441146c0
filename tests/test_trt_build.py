"""Engine builds with TensorRT-RTX on the CPU (ahead of time) from every non-plugin ONNX variant of MobileViT-XXS:
static and dynamic (one and several profiles), base and --opt, opset 13 (LayerNorm decomposed) and opset 17
(LayerNormalization), FP32, FP16-converted, Q/DQ INT8 and Q/DQ INT8 + FP16.  What TensorRT-RTX (or this toolkit,
on its behalf) refuses is recorded with the exact message.

Skipped only when ``tensorrt_rtx`` cannot be imported (CI installs it: pip install tensorrt-rtx).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed (pip install tensorrt-rtx)")

from mobilevit_trt import build, plugin_spec, precision, trt_compat  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402
from mobilevit_trt.fileio import sha256_file  # noqa: E402
from mobilevit_trt.sidecar import engine_preprocess  # noqa: E402


def sidecar_preprocess(engine):
    return engine_preprocess(engine)[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTX = "TensorRT-RTX %s" % trt.__version__
#: What TensorRT-RTX 1.7 says when asked to deserialize an engine on a machine without a CUDA driver
#: (convert_to_trt.py --inspect on a CPU-only machine): the first logger error.
RTX_NO_DRIVER = ("IRuntime::deserializeCudaEngine: Error Code 1: Cuda Runtime (In ScopedCudaStream at "
                 "/_src/common/dispatch/cudaResources.cpp:25 (cudaError 35: CUDA driver version is insufficient for "
                 "CUDA runtime version))")
#: What the TensorRT-RTX ONNX parser says about a node it has no importer and no plugin creator for.
RTX_NO_PLUGIN = ('In node 0 with name:  and operator: %s (checkFallbackPluginImporter): INVALID_NODE: creator && '
                 '"Plugin not found, are the plugin name, version, and namespace correct?"')


@pytest.fixture(scope="module")
def api():
    a = trt_compat.load(prefer="tensorrt_rtx")
    assert a.flavour == "tensorrt_rtx"
    return a


@pytest.fixture(scope="module", autouse=True)
def _prefer_rtx():
    old = os.environ.get(trt_compat.MODULE_ENV)
    os.environ[trt_compat.MODULE_ENV] = "tensorrt_rtx"
    yield
    if old is None:
        os.environ.pop(trt_compat.MODULE_ENV, None)
    else:
        os.environ[trt_compat.MODULE_ENV] = old


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("rtx")


@pytest.fixture(scope="module")
def variants(work):
    """The ONNX variants, exported once: name -> path."""
    from MobileViT_Pytorch.checkpoint import load_model
    from mobilevit_trt.export import export_onnx
    base, _ = load_model(None, arch="xxs", quiet=True)
    opt, _ = load_model(None, arch="xxs", opt=True, quiet=True)
    from mobilevit_trt.preprocess import Preprocess
    quiet = dict(log=lambda *a: None, verify=False, preprocess=Preprocess.original(256))
    out = {}
    for name, model, kw in [("static_b1", base, dict(batch=1)), ("dynamic", base, dict(dynamic=True)),
                            ("opt_dynamic", opt, dict(dynamic=True)), ("static_b2_opset17", base,
                                                                         dict(batch=2, opset=17))]:
        path = str(work / (name + ".onnx"))
        export_onnx(model, path, **dict(quiet, **kw))
        out[name] = path
    return out


@pytest.fixture(scope="module")
def calib_npz(work):
    path = str(work / "calib.npz")
    np.savez(path, input=precision.structured_inputs(8, seed=7))
    return path


CASES = [
    # id, variant, build kwargs, expected precision, profiles in the sidecar
    ("static-fp32", "static_b1", {}, "fp32", [[1, 1, 1]]),
    ("static-fp16", "static_b1", {"fp16": True}, "fp16", [[1, 1, 1]]),
    ("static-int8-qdq", "static_b1", {"int8": True, "calibrator": "minmax"}, "int8", [[1, 1, 1]]),
    ("static-int8-fp16", "static_b1", {"int8": True, "fp16": True, "calibrator": "minmax"}, "int8+fp16",
     [[1, 1, 1]]),
    ("dynamic-fp32-default-profile", "dynamic", {}, "fp32", [[1, 4, 8]]),
    ("dynamic-fp32-3-profiles", "dynamic", {"profiles": [(1, 1, 1), (2, 4, 8), (16, 16, 32)]}, "fp32",
     [[1, 1, 1], [2, 4, 8], [16, 16, 32]]),
    ("dynamic-fp16-2-profiles", "dynamic", {"fp16": True, "profiles": [(1, 2, 4), (8, 8, 16)]}, "fp16",
     [[1, 2, 4], [8, 8, 16]]),
    ("dynamic-int8-qdq-2-profiles", "dynamic", {"int8": True, "calibrator": "minmax",
                                                "profiles": [(1, 2, 4), (8, 8, 16)]}, "int8", [[1, 2, 4], [8, 8, 16]]),
    ("opt-dynamic-fp32", "opt_dynamic", {}, "fp32", [[1, 4, 8]]),
    ("opt-dynamic-fp16", "opt_dynamic", {"fp16": True}, "fp16", [[1, 4, 8]]),
    ("opset17-static-fp32", "static_b2_opset17", {}, "fp32", [[2, 2, 2]]),
    ("opset17-static-fp16", "static_b2_opset17", {"fp16": True}, "fp16", [[2, 2, 2]]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rtx_builds_variant(case, variants, calib_npz, work, api):
    cid, variant, kwargs, want_precision, want_profiles = case
    kwargs = dict(kwargs)
    if kwargs.get("int8"):
        kwargs["calib_data"] = calib_npz
    engine = str(work / (cid + ".engine"))
    lines = []
    meta = build.build_engine(variants[variant], engine, log=lines.append, **kwargs)
    assert os.path.getsize(engine) > 1_000_000
    with open(engine + ".json") as f:
        side = json.load(f)
    assert side == json.loads(json.dumps(meta))
    assert side["tensorrt"] == {"flavour": "tensorrt_rtx", "version": trt.__version__}
    assert side["precision"] == want_precision and side["profiles"] == want_profiles
    assert side["strongly_typed"] is True
    assert side["engine_sha256"] == sha256_file(engine)
    assert side["source_onnx"] == {"path": os.path.abspath(variants[variant]),
                                   "sha256": sha256_file(variants[variant])}
    assert side["hardware_target"]["kind"] == "compute_capabilities"
    # the model's preprocessing, from the ONNX metadata (export_onnx wrote it), also through the Q/DQ / FP16 copies
    from mobilevit_trt.preprocess import Preprocess
    assert side["preprocess"] == Preprocess.original(256).to_dict()
    assert sidecar_preprocess(engine) == Preprocess.original(256)
    transforms = (["qdq"] if kwargs.get("int8") else []) + (["fp16"] if kwargs.get("fp16") else [])
    if transforms:
        assert side["built_onnx"]["transforms"] == transforms
        # the intermediate graphs were made in a temporary folder: nothing is left next to the engine
        assert side["built_onnx"]["path"] is None
        assert not [n for n in os.listdir(str(work)) if n.endswith((".qdq.onnx", ".fp16.onnx"))]
        assert side["int8_mode"] == ("qdq" if kwargs.get("int8") else None)
        for key, acc in side["accuracy"].items():  # printed checks, recorded in the sidecar
            assert acc["top1_agreement"] >= 0.75, (key, acc)
        assert any("vs the FP32 ONNX" in line and "top-1 agreement" in line for line in lines)
    else:
        assert side["built_onnx"] is None and side["accuracy"] == {}


def test_rtx_refuses_to_deserialize_without_a_gpu_driver(variants, work):
    """--inspect needs the engine deserialized; on a CPU-only machine TensorRT-RTX refuses, and we record why."""
    engine = str(work / "inspect.engine")
    lines = []
    meta = build.build_engine(variants["static_b1"], engine, inspect=True, log=lines.append)
    ins = meta["inspect"]
    if ins["written"] is None:
        assert ins["reason"] == RTX_NO_DRIVER
        assert any(line.startswith("--inspect: %s cannot deserialize" % RTX) for line in lines)
    else:  # a machine with a GPU that TensorRT-RTX supports
        with open(ins["written"]) as f:
            assert json.load(f)["layers"]


def test_rtx_has_no_implicit_int8(variants, calib_npz, work):
    with pytest.raises(UserError) as e:
        build.build_engine(variants["static_b1"], str(work / "impl.engine"), int8=True, int8_mode="implicit",
                           calib_data=calib_npz, log=lambda *a: None)
    assert str(e.value) == ("--int8-mode implicit needs INT8 calibrators (TensorRT 8.x-10.x); %s has none: use "
                            "--int8-mode qdq" % RTX)


def _tiny(path, op, attrs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(8, np.float32), "beta")]
    graph = helper.make_graph([helper.make_node(op, ["input", "gamma", "beta"], ["class"], **attrs)], "t",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 8])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, [1, 3, 4, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_rtx_parser_refuses_plugin_nodes(work, api):
    """The TensorRT-RTX ONNX parser itself, fed a LayerNorm plugin node (no creator registered)."""
    op = plugin_spec.LAYERNORM_OP
    path = _tiny(str(work / "plugin.onnx"), op, plugin_spec.node_attrs(op, epsilon=1e-5))
    logger = trt_compat.make_logger(api)
    logger.quiet = True
    network = trt_compat.create_network(api, trt_compat.new_builder(api, logger))
    parser = trt_compat.new_parser(api, network, logger)
    assert not parser.parse_from_file(path)
    assert trt_compat.parser_errors(parser) == [RTX_NO_PLUGIN % op]
    # and the toolkit says so before parsing
    with pytest.raises(UserError) as e:
        build.build_engine(path, str(work / "plugin.engine"), log=lambda *a: None)
    assert str(e.value) == ("%s does not run the toolkit's C++ plugins (the ONNX has 1 %s); build from the "
                            "ONNX without plugin nodes (skip onnx_add_plugin.py)" % (RTX, op))


def test_parse_errors_are_reported_verbatim(work):
    path = _tiny(str(work / "foobar.onnx"), "FooBar", {})
    lines = []
    with pytest.raises(build.BuildError) as e:
        build.build_engine(path, str(work / "foobar.engine"), log=lines.append)
    assert e.value.messages == [RTX_NO_PLUGIN % "FooBar"]
    assert lines[-1] == "ONNX parser: " + RTX_NO_PLUGIN % "FooBar"
    assert str(e.value) == "%s could not parse %s (1 error, printed above)" % (RTX, path)
    assert not os.path.exists(str(work / "foobar.engine"))


def test_compute_capability_and_timing_cache(variants, work):
    engine = str(work / "sm86.engine")
    lines = []
    meta = build.build_engine(variants["static_b1"], engine, compute_capabilities=["sm86"],
                              timing_cache=str(work / "t.cache"), log=lines.append)
    assert meta["hardware_target"]["compute_capabilities"] == ["SM86"]
    assert "note: --timing-cache is ignored by %s (no autotuning ahead of time)" % RTX in lines
    assert not os.path.exists(str(work / "t.cache"))
    with pytest.raises(UserError, match=r"unknown compute capability 'SM90' \(choose from "):
        build.build_engine(variants["static_b1"], str(work / "sm90.engine"), compute_capabilities=["SM90"],
                           log=lambda *a: None)


def test_profile_errors(variants, work):
    with pytest.raises(UserError, match="static batch of 1; --profile needs a dynamic ONNX"):
        build.build_engine(variants["static_b1"], str(work / "x.engine"), profiles=[(1, 4, 8)], log=lambda *a: None)
    assert build.parse_profile("2:4:8") == (2, 4, 8) and build.parse_profile("3") == (3, 3, 3)
    for bad in ("4:2:8", "0:1:2", "1:2", "a:b:c"):
        with pytest.raises(UserError):
            build.parse_profile(bad)


def test_int8_needs_calibration_data(variants, work, monkeypatch):
    """Without --calib-data the default dataset's training split is used, made on demand (tests/test_first_run.py);
    where it cannot be made either, one error says what to pass."""
    from mobilevit_trt import data
    blocker = str(work / "a-file")
    with open(blocker, "w") as f:
        f.write("not a folder")
    monkeypatch.setenv(data.DATA_DIR_ENV, os.path.join(blocker, "default"))
    with pytest.raises(UserError, match="--int8 needs calibration images: pass --calib-data"):
        build.build_engine(variants["static_b1"], str(work / "nocal.engine"), int8=True, log=lambda *a: None)
    assert not os.path.exists(str(work / "nocal.engine"))


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env[trt_compat.MODULE_ENV] = "tensorrt_rtx"
    return subprocess.run([sys.executable, os.path.join(ROOT, script)] + list(args), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_cli_build_then_run_errors(variants, work):
    engine = str(work / "cli.engine")
    p = _run("convert_to_trt.py", "--input_path", variants["dynamic"], "--save_path", engine, "--dynamic",
             "--profile", "1:2:4")
    assert p.returncode == 0, p.stderr
    assert "saved %s" % engine in p.stdout
    p = _run("convert_to_trt.py", "--input_path", variants["static_b1"], "--save_path", engine, "--batch", "4")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["error: --batch 4 given but %s has a static batch 1"
                                             % variants["static_b1"]]
    # test_trt.py: an engine from another TensorRT is refused from its sidecar, before any GPU is touched
    with open(engine + ".json") as f:
        side = json.load(f)
    other = str(work / "other.engine")
    with open(engine, "rb") as f, open(other, "wb") as g:
        g.write(f.read())
    side["tensorrt"] = {"flavour": "tensorrt", "version": "8.6.1"}
    with open(other + ".json", "w") as f:
        json.dump(side, f)
    p = _run("test_trt.py", "--trt_path", other)
    assert p.returncode == 1
    assert p.stderr.strip() == ("error: %s was built by TensorRT 8.6.1; this is %s: rebuild it with "
                                "convert_to_trt.py (engines only load in the TensorRT version that built them)"
                                % (other, RTX))
    # the matching engine gets as far as the GPU: none here
    p = _run("test_trt.py", "--trt_path", engine)
    if p.returncode == 1 and "CUDA" in p.stderr:
        assert p.stderr.strip().startswith("error: test_trt.py needs TensorRT and a CUDA GPU: "), p.stderr


@pytest.mark.parametrize("target,fp16", [("native", False), ("native", True), ("fusable", True)])
def test_rtx_builds_fusion_targets(target, fp16, variants, work):
    """The native graph (ONNX Attention -> IAttention) builds in FP32 because the builder marks the attention
    layers decomposable (TensorRT-RTX has no dedicated FP32 attention kernel), and in FP16; the fusable graph in
    FP16. The sidecar records the target (from the ONNX metadata) and the IAttention layer count."""
    import onnx

    from mobilevit_trt import surgery
    fused, rep = surgery.fuse(onnx.load(variants["static_b1"]), target)
    path = str(work / ("%s.onnx" % target))
    onnx.save(fused, path)
    lines = []
    meta = build.build_engine(path, str(work / ("%s_%s.engine" % (target, "fp16" if fp16 else "fp32"))), fp16=fp16,
                              log=lines.append)
    assert meta["fusion_target"] == target and meta["precision"] == ("fp16" if fp16 else "fp32")
    assert meta["attention_layers"] == (9 if target == "native" else 0)
    assert any("IAttention layers marked decomposable" in line for line in lines) == (target == "native")
