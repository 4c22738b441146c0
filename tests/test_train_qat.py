"""Training and QAT scripts: a CPU smoke run of each, and the QAT Q/DQ export checked against the fake-quant
model in ONNX Runtime (on the shipped QAT checkpoints and real held-out digits)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from MobileViT_Pytorch import qat
from MobileViT_Pytorch.checkpoint import load_model
from mobilevit_trt import data as D
from tests.helpers import ROOT, run_script

WEIGHTS = os.path.join(ROOT, "MobileViT_Pytorch", "weights-file")


@pytest.fixture(scope="module")
def digits():
    """8 real held-out digits (the default dataset's source), preprocessed like every evaluation."""
    images, labels = D.load_packaged_digits("mnist5k")
    _, val = D.stratified_split(labels, 100, seed=0)
    pick = val[::125][:8]
    x = np.stack([D.preprocess(Image.fromarray(images[i], mode="L")) for i in pick])
    return torch.from_numpy(x), labels[pick]


def _ort(path, x, optimize=False):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    b = sess.get_inputs()[0].shape[0]
    outs = [sess.run(["class"], {"input": x[s:s + b]})[0] for s in range(0, len(x), b)]
    return np.concatenate(outs)


@pytest.mark.parametrize("variant,weights_only", [("qat_w", True), ("qat_wa", False)])
def test_qat_qdq_export_matches_fake_quant(tmp_path, digits, variant, weights_only):
    import onnx
    from onnx import numpy_helper

    ckpt = os.path.join(WEIGHTS, "mobilevit_default_%s.pth.tar" % variant)
    model, info = qat.load_qat_model(ckpt)
    assert info["qat"]["weights_only"] is weights_only
    n_layers = len(qat.quant_layers(model))
    assert n_layers == 72                                   # every Conv2d and Linear of MobileViT-XXS
    path = str(tmp_path / ("%s.onnx" % variant))
    rep = qat.export_qdq_onnx(model, path, batch=4, log=lambda s: None, verify_inputs=digits[0])
    assert rep["verify"]["passed"]

    # structure TensorRT's explicit quantization wants
    m = onnx.load(path)
    q = qat.describe_qdq(m)
    assert q == {"weight_qdq_pairs": n_layers, "per_channel_weight_dq": n_layers,
                 "activation_qdq_pairs": 0 if weights_only else n_layers, "int32_dq": 0}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale, zp = inits[n.input[1]], inits[n.input[2]]    # build-time constants
        assert zp.dtype == np.int8 and not zp.any()         # symmetric
        q_node = n if n.op_type == "QuantizeLinear" else producer[n.input[0]]
        assert q_node.op_type == "QuantizeLinear"           # every DQ belongs to a Q/DQ pair
        if q_node.input[0] in inits:
            w = inits[q_node.input[0]]                      # float weight -> Q -> DQ, per output channel
            assert w.dtype == np.float32 and scale.shape == (w.shape[0],)
            assert [a.i for a in n.attribute if a.name == "axis"] == [0]
            assert np.allclose(scale, np.abs(w).reshape(w.shape[0], -1).max(1) / 127.0, rtol=1e-6)
        else:
            assert scale.shape == ()                        # activations: per tensor
    assert not any(n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int32
                   for n in m.graph.node)

    # ONNX Runtime (Q/DQ as written) against the fake-quant PyTorch model on real digits
    x, labels = digits
    with torch.no_grad():
        ref = model(x).numpy()
    out = _ort(path, x.numpy())
    tol = qat.WEIGHT_ATOL if weights_only else qat.ACT_ATOL
    assert np.abs(out - ref).max() <= tol
    assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert np.array_equal(out.argmax(1), labels)            # and the digits are recognised
    # fake quantization really changes the model (it is not the float model in disguise)
    float_model, _ = load_model(ckpt, quiet=True)
    with torch.no_grad():
        assert np.abs(float_model(x).numpy() - ref).max() > 1e-4


def _tiny_split(root, n, seed):
    rng = np.random.default_rng(seed)
    for cls, val in (("a", 40), ("b", 200)):
        os.makedirs(os.path.join(root, cls))
        for i in range(n):
            arr = np.clip(rng.normal(val, 30, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(arr, mode="L").save(os.path.join(root, cls, "%d.png" % i))
    return root


@pytest.mark.slow
def test_train_and_qat_scripts_cpu_smoke(tmp_path):
    import torch

    from MobileViT_Pytorch.source import torch_backend
    from mobilevit_trt.accuracy import evaluate

    train = _tiny_split(str(tmp_path / "train"), 8, 0)
    val = _tiny_split(str(tmp_path / "val"), 3, 1)
    ckpt = str(tmp_path / "m.pth.tar")
    r = run_script(["MobileViT_Pytorch/train.py", "--train_path", train, "--val_path", val, "--img-size", "64",
                    "--epochs", "1", "--batch", "4", "--workers", "0", "--device", "cpu", "--save_path", ckpt,
                    "--results-file", str(tmp_path / "hist.json")])
    assert r.returncode == 0, r.stderr
    assert "epoch   1/1" in r.stdout and "final (fp32) val top-1" in r.stdout
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert (ck["arch"], ck["num_classes"], ck["img_size"], ck["epoch"]) == ("xxs", 2, 64, 1)
    assert ck["classes"] == ["a", "b"] and isinstance(ck["best_acc1"], float)
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")]
    # the recorded accuracy is what the toolkit's accuracy loop measures on the same split
    res = evaluate(torch_backend(ckpt, img_size=64, quiet=True), D.open_dataset(val, img_size=64),
                   batch=4, show_progress=False)
    assert res["top1"] == pytest.approx(ck["best_acc1"])

    qckpt, qonnx = str(tmp_path / "q.pth.tar"), str(tmp_path / "q.onnx")
    r = run_script(["MobileViT_Pytorch/qat.py", "--model_path", ckpt, "--train_path", train, "--val_path", val,
                    "--img-size", "64", "--epochs", "1", "--max-steps", "2", "--batch", "4", "--calib-batches", "2",
                    "--workers", "0", "--device", "cpu", "--save_path", qckpt, "--onnx_path", qonnx])
    assert r.returncode == 0, r.stderr
    assert "calibrated 72 activation quantizers" in r.stdout and "PASSED" in r.stdout
    model, info = qat.load_qat_model(qckpt, img_size=64)
    assert info["qat"]["weights_only"] is False and info["qat"]["calib"] == "percentile"
    load_model(qckpt, img_size=64, quiet=True)              # the float weights load like any checkpoint
    assert os.path.isfile(qonnx)
    r = run_script(["MobileViT_Pytorch/qat.py", "--export-only", "--model_path", ckpt, "--onnx_path", qonnx])
    assert r.returncode == 1 and "not a QAT checkpoint" in r.stderr and "Traceback" not in r.stderr
