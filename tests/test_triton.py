"""The Triton model repository (mobilevit_trt.triton) for real TensorRT-RTX engines of MobileViT-XXS (static and
dynamic, one and several profiles): every config.pbtxt is parsed with the model-config protobuf that tritonclient
ships (``tritonclient.grpc.model_config_pb2``, Triton's own model_config.proto) and its fields checked against the
engine sidecar and the ONNX; then the error cases (one UserError line, nothing written) and convert_to_trt.py
--export-triton.

Skipped when tritonclient's gRPC part (pip install "tritonclient[grpc]") or tensorrt_rtx is missing."""
import filecmp
import json
import os
import subprocess
import sys

import pytest

try:  # without grpcio, tritonclient.grpc raises RuntimeError ("does not include grpc support"), not ImportError
    from tritonclient.grpc import model_config_pb2 as pb
except (ImportError, RuntimeError) as e:
    pytest.skip('tritonclient with gRPC not installed (pip install "tritonclient[grpc]"): %s' % e,
                allow_module_level=True)
pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed (pip install tensorrt-rtx)")

from google.protobuf import text_format  # noqa: E402

from mobilevit_trt import build, sidecar, trt_compat, triton  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402
from tests.helpers import ROOT  # noqa: E402


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
    return tmp_path_factory.mktemp("triton")


@pytest.fixture(scope="module")
def onnx_files(work):
    """XXS exported static (batch 2) and dynamic, once."""
    from MobileViT_Pytorch.checkpoint import load_model
    from mobilevit_trt.export import export_onnx
    from mobilevit_trt.preprocess import Preprocess
    model, _ = load_model(None, arch="xxs", quiet=True)
    quiet = dict(log=lambda *a: None, verify=False, preprocess=Preprocess.original(256))
    out = {}
    for name, kw in (("static_b2", dict(batch=2)), ("dynamic", dict(dynamic=True))):
        out[name] = str(work / (name + ".onnx"))
        export_onnx(model, out[name], **dict(quiet, **kw))
    return out


@pytest.fixture(scope="module")
def engines(work, onnx_files):
    """name -> (engine path, ONNX it was built from): real TensorRT-RTX builds (CPU, ahead of time)."""
    out = {}
    for name, src, kw in (("static", "static_b2", {}), ("dynamic", "dynamic", {}),
                          ("profiles", "dynamic", {"profiles": [(1, 1, 1), (2, 4, 8), (16, 16, 32)]}),
                          ("no_batch1", "dynamic", {"profiles": [(4, 8, 16)]})):
        path = str(work / (name + ".engine"))
        build.build_engine(onnx_files[src], path, log=lambda *a: None, **kw)
        out[name] = (path, onnx_files[src])
    return out


def parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), pb.ModelConfig())


def side(engine):
    with open(sidecar.path_of(engine)) as f:
        return json.load(f)


def check_common(cfg, meta, name, platform, kind):
    """Fields every model of the repository has, against the sidecar: names, types, the non-batch dims."""
    assert cfg.name == name and cfg.platform == platform
    assert [i.name for i in cfg.input] == [meta["input"]["name"]] == ["input"]
    assert [o.name for o in cfg.output] == ["class"]
    assert cfg.input[0].data_type == pb.TYPE_FP32 and cfg.output[0].data_type == pb.TYPE_FP32
    assert list(cfg.input[0].dims)[-3:] == meta["input"]["shape"][1:] == [3, 256, 256]
    assert list(cfg.output[0].dims)[-1:] == [1000]
    assert len(cfg.instance_group) == 1
    assert cfg.instance_group[0].kind == getattr(pb.ModelInstanceGroup, kind)


def test_static_engine(engines, work):
    engine, onnx_path = engines["static"]
    meta = side(engine)
    assert meta["dynamic"] is False and meta["batch"] == 2
    out = str(work / "repo_static")
    lines = []
    res = triton.write_triton_repository(out, engine_path=engine, onnx_path=onnx_path, instances=2, log=lines.append)
    assert sorted(os.listdir(out)) == ["mobilevit", "mobilevit_onnx"]  # the staging folder is gone
    plan = parse(os.path.join(out, "mobilevit", "config.pbtxt"))
    check_common(plan, meta, "mobilevit", "tensorrt_plan", "KIND_GPU")
    # a static batch: max_batch_size 0, dims carry the batch, no dynamic batching
    assert plan.max_batch_size == 0
    assert list(plan.input[0].dims) == meta["input"]["shape"] == [2, 3, 256, 256]
    assert list(plan.output[0].dims) == [2, 1000]
    assert not plan.HasField("dynamic_batching")
    assert plan.instance_group[0].count == 2 and list(plan.instance_group[0].profile) == []
    assert filecmp.cmp(os.path.join(out, "mobilevit", "1", "model.plan"), engine, shallow=False)
    assert sidecar.read(os.path.join(out, "mobilevit", "1", "model.plan"))["engine_sha256"] == meta["engine_sha256"]
    fb = parse(os.path.join(out, "mobilevit_onnx", "config.pbtxt"))
    check_common(fb, meta, "mobilevit_onnx", "onnxruntime_onnx", "KIND_GPU")
    assert fb.max_batch_size == 0 and list(fb.input[0].dims) == [2, 3, 256, 256]
    assert filecmp.cmp(os.path.join(out, "mobilevit_onnx", "1", "model.onnx"), onnx_path, shallow=False)
    assert [m["name"] for m in res["models"]] == ["mobilevit", "mobilevit_onnx"]
    # TensorRT-RTX engines do not load in Triton's TensorRT backend: said in the result, the log and the config
    assert any("TensorRT-RTX" in n and "libnvinfer" in n for n in res["notes"])
    assert any(line.startswith("note: built by TensorRT-RTX") for line in lines)
    with open(os.path.join(out, "mobilevit", "config.pbtxt")) as f:
        assert "cannot load it" in f.read()


def test_dynamic_engine_default_profile(engines, work):
    engine, onnx_path = engines["dynamic"]
    meta = side(engine)
    assert meta["dynamic"] is True and meta["profiles"] == [[1, 4, 8]]
    out = str(work / "repo_dynamic")
    triton.write_triton_repository(out, engine_path=engine, onnx_path=onnx_path, max_queue_delay_us=100)
    plan = parse(os.path.join(out, "mobilevit", "config.pbtxt"))
    check_common(plan, meta, "mobilevit", "tensorrt_plan", "KIND_GPU")
    assert plan.max_batch_size == 8  # the profile's MAX
    assert list(plan.input[0].dims) == [3, 256, 256] and list(plan.output[0].dims) == [1000]
    assert plan.HasField("dynamic_batching")
    assert list(plan.dynamic_batching.preferred_batch_size) == []  # one profile: Triton's default batching
    assert plan.dynamic_batching.max_queue_delay_microseconds == 100
    assert list(plan.instance_group[0].profile) == []  # profile 0: the backend's default
    fb = parse(os.path.join(out, "mobilevit_onnx", "config.pbtxt"))
    assert fb.max_batch_size == 8 and list(fb.input[0].dims) == [3, 256, 256] and fb.HasField("dynamic_batching")


def test_several_profiles(engines, work):
    """Profiles 1:1:1, 2:4:8, 16:16:32 cover batches 1..8 without a gap: max_batch_size 8, the instance uses the
    profiles 0 and 1 (the backend makes a context for profile 0 only unless told), preferred sizes their OPTs
    above 1."""
    engine, onnx_path = engines["profiles"]
    meta = side(engine)
    assert meta["profiles"] == [[1, 1, 1], [2, 4, 8], [16, 16, 32]]
    out = str(work / "repo_profiles")
    res = triton.repository_for_engine(engine, out, model_name="mvit")  # the ONNX from the sidecar
    assert res["models"][1]["name"] == "mvit_onnx"
    plan = parse(os.path.join(out, "mvit", "config.pbtxt"))
    check_common(plan, meta, "mvit", "tensorrt_plan", "KIND_GPU")
    assert plan.max_batch_size == triton.covered_batch(meta["profiles"]) == 8
    assert list(plan.instance_group[0].profile) == ["0", "1"]
    assert list(plan.dynamic_batching.preferred_batch_size) == [4]  # the OPTs above 1
    # a smaller max_batch_size keeps only the profiles it reaches
    out2 = str(work / "repo_profiles_mbs1")
    triton.write_triton_repository(out2, engine_path=engine, onnx_path=onnx_path, max_batch_size=1)
    plan = parse(os.path.join(out2, "mobilevit", "config.pbtxt"))
    assert plan.max_batch_size == 1 and not plan.HasField("dynamic_batching")
    assert list(plan.instance_group[0].profile) == []
    # max_batch_size 0: the client sends whole batches, any profile
    out3 = str(work / "repo_profiles_mbs0")
    triton.write_triton_repository(out3, engine_path=engine, onnx_path=onnx_path, max_batch_size=0)
    plan = parse(os.path.join(out3, "mobilevit", "config.pbtxt"))
    assert plan.max_batch_size == 0 and list(plan.input[0].dims) == [-1, 3, 256, 256]
    assert list(plan.instance_group[0].profile) == ["0", "1", "2"]


def test_no_profile_takes_batch_one(engines, work):
    engine, onnx_path = engines["no_batch1"]
    out = str(work / "repo_nb1")
    res = triton.write_triton_repository(out, engine_path=engine, onnx_path=onnx_path)
    plan = parse(os.path.join(out, "mobilevit", "config.pbtxt"))
    assert plan.max_batch_size == 0 and list(plan.input[0].dims) == [-1, 3, 256, 256]
    assert list(plan.output[0].dims) == [-1, 1000]
    assert any("no profile" in n and "4:8:16" in n for n in res["notes"])
    with pytest.raises(UserError, match=r"^max_batch_size 4: no profile of .* accepts batch 1"):
        triton.write_triton_repository(str(work / "x"), engine_path=engine, onnx_path=onnx_path, max_batch_size=4)


def test_onnx_only(onnx_files, work):
    out = str(work / "repo_onnx")
    triton.write_triton_repository(out, onnx_path=onnx_files["dynamic"], model_name="m", onnx_kind="KIND_CPU")
    assert os.listdir(out) == ["m_onnx"]
    cfg = parse(os.path.join(out, "m_onnx", "config.pbtxt"))
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_overwrite_and_atomicity(engines, work):
    engine, onnx_path = engines["dynamic"]
    out = str(work / "repo_over")
    triton.write_triton_repository(out, engine_path=engine, onnx_path=onnx_path)
    with pytest.raises(UserError) as e:
        triton.write_triton_repository(out, engine_path=engine, onnx_path=onnx_path, max_batch_size=4)
    assert str(e.value) == ("model folder %s exists and is not empty: pass overwrite (--triton-overwrite) to "
                            "replace it, or choose another model name or folder" % os.path.join(out, "mobilevit"))
    assert parse(os.path.join(out, "mobilevit", "config.pbtxt")).max_batch_size == 8  # untouched
    triton.write_triton_repository(out, engine_path=engine, onnx_path=onnx_path, max_batch_size=4, overwrite=True)
    assert parse(os.path.join(out, "mobilevit", "config.pbtxt")).max_batch_size == 4
    assert sorted(os.listdir(out)) == ["mobilevit", "mobilevit_onnx"]
    # an empty model folder is simply filled
    out2 = work / "repo_empty"
    (out2 / "mobilevit").mkdir(parents=True)
    triton.write_triton_repository(str(out2), engine_path=engine, onnx_path=onnx_path)
    assert os.path.isfile(str(out2 / "mobilevit" / "1" / "model.plan"))


def test_errors(engines, onnx_files, work, tmp_path):
    static, static_onnx = engines["static"]
    dyn, dyn_onnx = engines["dynamic"]
    out = str(tmp_path / "repo")

    def err(**kw):
        with pytest.raises(UserError) as e:
            triton.write_triton_repository(out, **kw)
        assert "\n" not in str(e.value)
        assert not os.path.exists(out) or os.listdir(out) == []  # nothing left behind
        return str(e.value)

    assert err() == "a Triton repository needs an engine or an ONNX file"
    assert err(engine_path=static, onnx_path=static_onnx, max_batch_size=2).startswith(
        "max_batch_size 2: %s has a static batch of 2, so Triton serves it with max_batch_size 0" % static)
    assert err(engine_path=dyn, onnx_path=dyn_onnx, max_batch_size=9) == (
        "max_batch_size 9: the profiles of %s (1:4:8) accept every batch size 1..8 only; Triton's dynamic batcher "
        "sends any size up to max_batch_size" % dyn)
    assert err(engine_path=dyn, onnx_path=static_onnx) == (
        "%s is not the ONNX of %s: it has batch 2, the engine's is dynamic" % (static_onnx, dyn))
    assert err(engine_path=dyn).startswith("the Triton config of %s needs its ONNX" % dyn)
    assert err(engine_path=dyn, onnx_path=dyn_onnx, model_name="../x").startswith("model_name '../x' is not a usable")
    assert err(engine_path=dyn, onnx_path=dyn_onnx, instances=0) == "instances must be a positive integer, got 0"
    assert err(engine_path=str(tmp_path / "none.engine"), onnx_path=dyn_onnx).startswith("engine not found")
    # an engine without its sidecar, and one changed after it
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    assert err(engine_path=str(bare), onnx_path=dyn_onnx).startswith(
        "%s has no sidecar %s.json" % (bare, bare))
    changed = tmp_path / "changed.engine"
    changed.write_bytes(b"not the engine")
    with open(sidecar.path_of(dyn)) as f, open(str(changed) + ".json", "w") as g:
        g.write(f.read())
    assert err(engine_path=str(changed), onnx_path=dyn_onnx) == (
        "%s changed since its sidecar %s.json was written (sha256 differs): rebuild it" % (changed, changed))
    # a plugin graph is no ONNX Runtime fallback
    import onnx
    from mobilevit_trt import surgery
    plugged = str(tmp_path / "plugin.onnx")
    onnx.save(surgery.fuse(onnx.load(dyn_onnx), "plugin")[0], plugged)
    assert "has TensorRT plugin nodes" in err(onnx_path=plugged)
    # a file where the repository folder should be
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        triton.write_triton_repository(str(blocker), onnx_path=dyn_onnx)
    # repository_for_engine: the sidecar's ONNX, changed since the build
    copy = tmp_path / "copy"
    copy.mkdir()
    import shutil
    e2 = str(copy / "e.engine")
    shutil.copyfile(dyn, e2)
    meta = side(dyn)
    moved = str(copy / "src.onnx")
    shutil.copyfile(dyn_onnx, moved)
    meta["source_onnx"]["path"] = moved
    with open(e2 + ".json", "w") as f:
        json.dump(meta, f)
    with open(moved, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match=r"changed since .* was built from it \(sha256 differs\)"):
        triton.repository_for_engine(e2, out)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env[trt_compat.MODULE_ENV] = "tensorrt_rtx"
    return subprocess.run([sys.executable, os.path.join(ROOT, "convert_to_trt.py")] + list(args), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_convert_to_trt_export_triton(onnx_files, work):
    engine = str(work / "cli.engine")
    out = str(work / "repo_cli")
    p = _run("--input_path", onnx_files["dynamic"], "--save_path", engine, "--dynamic", "--profile", "1:2:4",
             "--export-triton", out, "--triton-name", "mv", "--triton-instances", "2")
    assert p.returncode == 0, p.stderr
    assert "Triton model mv (tensorrt_plan, max_batch_size 4) -> %s" % os.path.join(out, "mv") in p.stdout
    plan = parse(os.path.join(out, "mv", "config.pbtxt"))
    assert plan.max_batch_size == 4 and plan.instance_group[0].count == 2
    assert parse(os.path.join(out, "mv_onnx", "config.pbtxt")).max_batch_size == 4
    # the same model folder again: refused before building (the engine is not rewritten)
    before = os.path.getmtime(engine)
    p = _run("--input_path", onnx_files["dynamic"], "--save_path", engine, "--dynamic", "--export-triton", out,
             "--triton-name", "mv")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["error: model folder %s exists and is not empty: pass overwrite "
                                             "(--triton-overwrite) to replace it, or choose another model name or "
                                             "folder" % os.path.join(out, "mv")]
    assert os.path.getmtime(engine) == before
    p = _run("--input_path", onnx_files["dynamic"], "--save_path", engine, "--dynamic", "--export-triton", out,
             "--triton-name", "mv", "--triton-overwrite", "--triton-max-batch-size", "2")
    assert p.returncode == 0, p.stderr
    assert parse(os.path.join(out, "mv", "config.pbtxt")).max_batch_size == 2
