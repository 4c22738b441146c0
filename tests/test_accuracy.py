"""The accuracy loop: top-1/top-5 counts against NumPy on known logits, static-batch padding, the CLI."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from mobilevit_trt import accuracy as A
from mobilevit_trt import data as D
from mobilevit_trt import plugin_spec
from mobilevit_trt.backends import OnnxRuntimeBackend
from mobilevit_trt.errors import UserError
from mobilevit_trt.verify import run_all
from tests.helpers import run_script

IMG = 8          # tiny input size: the loop and the padding do not care about the model
CLASSES = 7


def _reference_correct(logits, labels, k):
    """By hand: a label is in the top k when fewer than k classes beat it (ties go to the lower index)."""
    n = 0
    for row, lab in zip(logits, labels):
        beats = sum(1 for c, v in enumerate(row) if v > row[lab] or (v == row[lab] and c < lab))
        n += beats < k
    return n


def test_topk_counts_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, CLASSES)).astype(np.float32)
    logits[:20] = np.round(logits[:20])            # some exact ties
    labels = rng.integers(0, CLASSES, 200)
    got = A.topk_correct(logits, labels, ks=(1, 3, 5, 10))
    for k in (1, 3, 5):
        assert got[k] == _reference_correct(logits, labels, k)
    assert got[1] == int((logits.argmax(1) == labels).sum())
    assert got[10] == 200                           # k beyond the class count: every label is in the top k
    # a hand-made case
    lg = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]], dtype=np.float32)
    assert A.topk_correct(lg, [1, 2, 0], ks=(1, 2)) == {1: 1, 2: 2}


def _tiny_onnx(path, batch, weights):
    """A real classifier graph: global average pool over H, W -> [B, 3] -> MatMul [3, C] -> 'class'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = batch if batch else "batch"
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["class"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [b, 3, IMG, IMG])],
        [helper.make_tensor_value_info("class", TensorProto.FLOAT, [b, CLASSES])],
        [numpy_helper.from_array(weights, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def _tiny_folder(root, n=11):
    rng = np.random.default_rng(1)
    for i in range(n):
        cls = "c%d" % (i % 3)
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8)).save(
            os.path.join(root, cls, "%02d.png" % i))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acc")
    w = np.random.default_rng(2).standard_normal((3, CLASSES)).astype(np.float32)
    folder = _tiny_folder(str(tmp / "data"))
    ds = D.open_dataset(folder, img_size=IMG)
    x = np.stack([ds[i][0] for i in range(len(ds))])
    y = np.array([ds[i][1] for i in range(len(ds))])
    expected_logits = x.mean(axis=(2, 3)) @ w
    return {"tmp": tmp, "w": w, "folder": folder, "ds": ds, "labels": y, "logits": expected_logits,
            "static4": _tiny_onnx(str(tmp / "b4.onnx"), 4, w), "dynamic": _tiny_onnx(str(tmp / "dyn.onnx"), None, w)}


def test_static_batch_padding(tiny):
    ds, y, ref = tiny["ds"], tiny["labels"], tiny["logits"]
    assert len(ds) == 11                            # 2 full batches of 4 and a last batch of 3 (padded to 4)
    be = OnnxRuntimeBackend(tiny["static4"])
    assert be.static_batch == 4
    res = A.evaluate(be, ds, show_progress=False, keep_logits=True)
    assert res["batch"] == 4 and res["images"] == 11
    assert res["logits"].shape == (11, CLASSES)
    assert np.allclose(res["logits"], ref, atol=1e-5)     # padded rows dropped, order kept
    assert np.array_equal(res["labels"], y)
    for k in (1, 5):
        assert res["correct%d" % k] == _reference_correct(ref, y, k)
        assert res["top%d" % k] == pytest.approx(100.0 * res["correct%d" % k] / 11)
    # the padding rule on its own: 6 rows through a batch-4 model -> 4 + (2 padded to 4)
    out = run_all(be, np.stack([ds[i][0] for i in range(6)]))
    assert np.allclose(out, ref[:6], atol=1e-5)
    with pytest.raises(UserError, match="built for batch 4"):
        A.evaluate(be, ds, batch=3, show_progress=False)
    # --limit: a class-stratified subset (the folder is stored class by class: 4, 4, 3 images), also padded
    lim = A.evaluate(be, ds, limit=5, show_progress=False, keep_logits=True)
    assert lim["images"] == 5
    sub, info = D.stratified_subset(ds, 5, seed=0)
    idx = np.asarray(sub.indices)
    assert list(idx) == sorted(idx) and len(set(idx)) == 5
    assert sorted(np.bincount(y[idx], minlength=3).tolist()) == [1, 2, 2]      # every class, as even as can be
    assert np.array_equal(lim["labels"], y[idx]) and np.allclose(lim["logits"], ref[idx], atol=1e-5)
    assert lim["correct1"] == _reference_correct(ref[idx], y[idx], 1)
    assert "3 of 3 classes" in lim["subset"] and "1 to 2 per class" in lim["subset"]


def test_dynamic_batch_same_counts(tiny):
    be = OnnxRuntimeBackend(tiny["dynamic"])
    assert be.static_batch is None
    res = A.evaluate(be, tiny["ds"], batch=3, show_progress=False)
    assert res["batch"] == 3
    for k in (1, 5):
        assert res["correct%d" % k] == _reference_correct(tiny["logits"], tiny["labels"], k)


def test_label_out_of_range_is_a_user_error(tiny, tmp_path):
    w = np.ones((3, 2), np.float32)
    path = str(tmp_path / "two.onnx")
    import onnx
    m = onnx.load(tiny["dynamic"])
    m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w"))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2
    onnx.save(m, path)
    with pytest.raises(UserError, match="out of range"):
        A.evaluate(OnnxRuntimeBackend(path), tiny["ds"], show_progress=False)


def test_cli_onnxruntime_results_file(tiny):
    out = str(tiny["tmp"] / "res.json")
    r = run_script(["test_trt_precision.py", "--onnx_path", tiny["static4"], "--data_path", tiny["folder"],
                    "--img-size", str(IMG), "--results-file", out, "--no-progress"])
    assert r.returncode == 0, r.stderr
    row = json.load(open(out))["rows"][0]
    assert row["backend"] == "onnxruntime" and row["images"] == 11 and row["static_batch"] == 4
    assert row["correct1"] == _reference_correct(tiny["logits"], tiny["labels"], 1)
    assert "top1: " in r.stdout and "top5: " in r.stdout
    r = run_script(["test_trt_precision.py", "--onnx_path", tiny["static4"], "--data_path", tiny["folder"],
                    "--img-size", str(IMG), "--batch", "8"])
    assert r.returncode == 1 and "built for batch 4" in r.stderr and "Traceback" not in r.stderr
    r = run_script(["test_trt_precision.py", "--backend", "trt", "--data_path", tiny["folder"]])
    assert r.returncode == 1 and "--trt_path" in r.stderr


@pytest.mark.slow
def test_plugin_graph_runs_with_reference_ops(tmp_path):
    """A graph with LayerNorm/Attention plugin nodes (onnx_add_plugin.py) goes through the ONNX Runtime backend
    with the NumPy plugin references, and gives the checkpoint's logits."""
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model
    from MobileViT_Pytorch.source import torch_backend
    from mobilevit_trt.export import export_onnx

    images, labels = D.load_packaged_digits("mnist5k")
    x = np.stack([D.preprocess(Image.fromarray(images[i], mode="L")) for i in range(0, 5000, 625)])
    plain, plugged = str(tmp_path / "opt.onnx"), str(tmp_path / "opt_plugin.onnx")
    export_onnx(load_model(DEFAULT_WEIGHTS, opt=True, quiet=True)[0], plain, dynamic=True, verify=False,
                log=lambda s: None)
    r = run_script(["onnx_add_plugin.py", "--input_path", plain, "--save_path", plugged])
    assert r.returncode == 0, r.stderr
    be = OnnxRuntimeBackend(plugged)
    assert be.name == "onnxruntime+reference-plugins" and plugin_spec.LAYERNORM_OP in be.plugins and plugin_spec.ATTENTION_OP in be.plugins
    out = run_all(be, x)
    ref = torch_backend(DEFAULT_WEIGHTS, opt=True, quiet=True).infer(x)
    assert np.abs(out - ref).max() < 1e-3
    assert np.array_equal(out.argmax(1), labels[::625])
