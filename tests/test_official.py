"""Apple's official MobileViT through the model sources (MobileViT_Pytorch/official.py, source.open_source).

References: timm's own model (``timm.create_model`` + ``load_state_dict``) and transformers' own
``MobileViTForImageClassification``, on the same random weights and inputs.  Tolerance: FP32, max |diff| <= 1e-5
(seen: 0 for the --opt model, ~1e-6 between timm's and transformers' code).
"""
import argparse
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from MobileViT_Pytorch import official  # noqa: E402
from MobileViT_Pytorch.source import CheckpointSource, OfficialSource, open_source, parse_model_spec  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402

ATOL = 1e-5


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x).numpy()


def _timm_reference(name, sd, num_classes):
    """timm's own model (its default: fused attention where the machine has it) holding ``sd``."""
    ref = timm.create_model(name, pretrained=False, num_classes=num_classes)
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def _random_timm(name, num_classes, seed=1):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()


def _x(size=256, batch=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32))


@pytest.mark.parametrize("name", official.V1_NAMES)
def test_opt_model_equals_plain_model(name):
    """--opt (2-D matmuls, one-permute unfold/fold) computes what timm's model computes, for every v1 size and
    an input size other than 256."""
    for size in (256, 224):
        plain = official.create_model(name, 10, seed=0)
        opt = official.create_model(name, 10, seed=0, opt=True)
        assert sum(type(m).__name__ == "OptMobileVitBlock" for m in opt.modules()) == 3
        x = _x(size)
        ref = _logits(_timm_reference(name, plain.state_dict(), 10), x)
        np.testing.assert_allclose(_logits(plain, x), ref, rtol=0, atol=ATOL)
        np.testing.assert_allclose(_logits(opt, x), ref, rtol=0, atol=ATOL)


def test_opt_model_is_not_trivially_equal():
    """The comparison above can fail: a changed weight in one block of the --opt model changes its output."""
    plain = official.create_model("mobilevit_xxs", 10, seed=0)
    opt = official.create_model("mobilevit_xxs", 10, seed=0, opt=True)
    with torch.no_grad():
        opt.stages[3][1].transformer[0].attn.qkv.bias.add_(0.5)
    assert np.abs(_logits(plain, _x()) - _logits(opt, _x())).max() > 10 * ATOL


def test_model_spec_parsing():
    assert parse_model_spec(None) == ("auto", None)
    assert parse_model_spec("timm:xs") == ("timm", "mobilevit_xs")
    assert parse_model_spec("timm:timm/mobilevit_s.cvnets_in1k") == ("timm", "mobilevit_s")
    assert parse_model_spec("hf") == ("hf", None)
    assert parse_model_spec("original:xxs") == ("original", "xxs")
    for bad, why in (("keras", "expected one of"), ("timm:resnet50", "unknown official MobileViT"),
                     ("hf:mobilevit_s", "takes no name"), ("original:m", "xxs, xs, s")):
        with pytest.raises(UserError, match=why):
            parse_model_spec(bad)


def _save(obj, path):
    torch.save(obj, str(path))
    return str(path)


def _check_source(source, name, ref_model, x, num_classes):
    assert isinstance(source, OfficialSource)
    assert source.name == name and source.num_classes == num_classes
    for opt in (False, True):
        model, info = source.load(opt=opt)
        assert info["arch"] == name and info["opt"] is opt
        np.testing.assert_allclose(_logits(model, x), _logits(ref_model, x), rtol=0, atol=ATOL)


def test_timm_checkpoint_forms(tmp_path):
    """A bare state dict (.pth and .safetensors), timm's training checkpoint (state_dict + state_dict_ema +
    its argparse args, module. prefixes) with and without --use-ema: each loads, detected as timm's XS."""
    name, n = "mobilevit_xs", 7
    model, ema = _random_timm(name, n, seed=1), _random_timm(name, n, seed=2)
    sd, sd_ema = model.state_dict(), ema.state_dict()
    x = _x(256)
    bare = _save(sd, tmp_path / "bare.pth")
    _check_source(open_source(None, bare), name, model, x, n)
    from safetensors.torch import save_file
    st = str(tmp_path / "model.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, st)
    _check_source(open_source("timm:mobilevit_xs", st), name, model, x, n)
    train = _save({"epoch": 3, "arch": name, "state_dict": {"module." + k: v for k, v in sd.items()},
                   "state_dict_ema": sd_ema, "optimizer": {}, "args": argparse.Namespace(lr=0.1, model=name),
                   "metric": 70.1}, tmp_path / "checkpoint-3.pth.tar")
    _check_source(open_source("timm", train, arch="xs"), name, model, x, n)
    _check_source(open_source(None, train, use_ema=True), name, ema, x, n)
    with pytest.raises(UserError, match="no EMA weights"):
        open_source(None, bare, use_ema=True)


def test_wrong_size_and_wrong_family_name_the_right_flag(tmp_path):
    sd = _random_timm("mobilevit_xxs", 5).state_dict()
    path = _save(sd, tmp_path / "xxs.pth")
    with pytest.raises(UserError, match="holds mobilevit_xxs weights: pass --model timm:mobilevit_xxs"):
        open_source("timm:mobilevit_s", path)
    for kind in ("original", "cvnets"):
        with pytest.raises(UserError, match="looks like a timm MobileViT state dict .*--model timm"):
            open_source(kind, path)
    from MobileViT_Pytorch.checkpoint import load_model
    original, _ = load_model(None, arch="xxs", num_classes=5, quiet=True)
    opath = _save({"arch": "xxs", "num_classes": 5, "state_dict": original.state_dict()}, tmp_path / "orig.pth")
    assert isinstance(open_source(None, opath), CheckpointSource)
    with pytest.raises(UserError, match="looks like the original project's MobileViT .*--model original"):
        open_source("timm:mobilevit_xxs", opath)
    with pytest.raises(UserError, match="is not a MobileViT checkpoint this toolkit reads"):
        open_source(None, _save({"fc.weight": torch.zeros(2, 2), "conv.weight": torch.zeros(1)},
                                tmp_path / "other.pth"))


def test_random_init_is_seeded_and_needs_a_name():
    a, _ = open_source("timm:mobilevit_xxs").load()
    b, _ = open_source("timm", arch="xxs").load()
    np.testing.assert_array_equal(_logits(a, _x(128)), _logits(b, _x(128)))
    with pytest.raises(UserError, match="name the architecture"):
        open_source("cvnets")


def _hf_model(arch, num_classes, image_size=256, seed=3):
    transformers = pytest.importorskip("transformers")
    sizes = {"xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320],
                         expand_ratio=2.0),
             "xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
             "s": {}}[arch]
    cfg = transformers.MobileViTConfig(num_labels=num_classes, image_size=image_size, **sizes)
    torch.manual_seed(seed)
    return transformers.MobileViTForImageClassification(cfg).eval()


class _HFLogits(torch.nn.Module):
    def __init__(self, m):
        super(_HFLogits, self).__init__()
        self.m = m

    def forward(self, x):
        return self.m(pixel_values=x).logits


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_hugging_face_folder_equals_transformers(tmp_path, safe):
    """A Hugging Face folder (config.json + model.safetensors or pytorch_model.bin) detected, converted to timm's
    keys, and equal to transformers' own model on the same input, base and --opt."""
    hf = _hf_model("xxs", 4)
    folder = str(tmp_path / "hf")
    hf.save_pretrained(folder, safe_serialization=safe) if safe else _save_bin(hf, folder)
    source = open_source(None, folder)
    _check_source(source, "mobilevit_xxs", _HFLogits(hf), _x(256), 4)
    assert os.path.join(folder, "config.json") in source.files()
    with pytest.raises(UserError, match="--num-classes 10, but .* has a 4-class classifier"):
        open_source(None, folder, num_classes=10)


def _save_bin(hf, folder):
    os.makedirs(folder)
    hf.config.save_pretrained(folder)
    torch.save(hf.state_dict(), os.path.join(folder, "pytorch_model.bin"))


def test_hugging_face_state_dict_alone_asks_for_the_folder(tmp_path):
    path = _save(_hf_model("xxs", 3).state_dict(), tmp_path / "hf.pth")
    with pytest.raises(UserError, match="Hugging Face MobileViT state dict .*config.json"):
        open_source(None, path)
