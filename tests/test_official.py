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


# --------------------------------------------------------------------------------------------- preprocessing
# Each source's preprocessing, against the library that defines it: timm's own eval transform of the model
# (create_transform(resolve_data_config)), transformers' MobileViTImageProcessorPil for a Hugging Face folder,
# Apple's published preprocessor_config.json for ml-cvnets files.  PIL paths: max |diff| <= 1e-6.
#: apple/mobilevit-small's preprocessor_config.json (Apple's processor of its own checkpoints)
APPLE_HF = {"crop_size": {"height": 256, "width": 256}, "do_center_crop": True, "do_flip_channel_order": True,
            "do_rescale": True, "do_resize": True, "image_processor_type": "MobileViTImageProcessor",
            "resample": 2, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 288}}


def _images():
    from PIL import Image
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((300, 217), (190, 333))]


def _same_pixels(pp, reference_fn):
    for im in _images():
        ref = np.asarray(reference_fn(im), dtype=np.float32)
        assert pp(im).shape == ref.shape
        assert float(np.abs(pp(im) - ref).max()) <= 1e-6


def _timm_transform(model, img_size=None):
    from timm.data import create_transform, resolve_data_config
    cfg = resolve_data_config({"input_size": (3, img_size, img_size)} if img_size else {}, model=model)
    tf = create_transform(**cfg)
    return lambda im: tf(im).numpy()


@pytest.mark.parametrize("img_size", [None, 224])
def test_timm_checkpoint_preprocessing_is_timms(tmp_path, img_size):
    """A bare timm state dict: timm's own eval transform of that model (its pretrained_cfg), at the input size."""
    model = _random_timm("mobilevit_xs", 3)
    source = open_source(None, _save(model.state_dict(), tmp_path / "xs.pth"), img_size=img_size)
    assert source.preprocess.img_size == (img_size or 256)
    assert "pretrained_cfg of mobilevit_xs" in source.preprocess_origin
    _same_pixels(source.preprocess, _timm_transform(model, img_size))
    _, info = source.load()
    assert info["preprocess"] == source.preprocess.to_dict()
    # the check can fail: the original project's transform is not timm's
    from mobilevit_trt.preprocess import Preprocess
    with pytest.raises(AssertionError):
        _same_pixels(Preprocess.original(source.preprocess.img_size), _timm_transform(model, img_size))


def test_trained_checkpoint_records_its_preprocessing(tmp_path):
    """A checkpoint of train.py --model timm:NAME records timm's data config at its training size; the source
    takes that size and that transform."""
    from timm.data import resolve_data_config
    model = _random_timm("mobilevit_xxs", 4)
    cfg = resolve_data_config({"input_size": (3, 192, 192), "crop_pct": 1.0, "interpolation": "bilinear"},
                              model=model)
    path = _save({"arch": "mobilevit_xxs", "num_classes": 4, "img_size": 192, "state_dict": model.state_dict(),
                  "preprocess": dict(cfg, source="timm", input_size=list(cfg["input_size"]))}, tmp_path / "t.pth")
    source = open_source(None, path)
    assert source.img_size == 192 and source.preprocess_origin == "checkpoint %s" % path
    _same_pixels(source.preprocess, _timm_transform_cfg(cfg))
    assert source.preprocess.describe().startswith("192x192, resize short side 192 (bilinear)")


def _timm_transform_cfg(cfg):
    from timm.data import create_transform
    tf = create_transform(**cfg)
    return lambda im: tf(im).numpy()


def test_hugging_face_folder_preprocessing(tmp_path, capsys):
    """A folder's preprocessor_config.json is transformers' processor, bit for bit; a folder without one gets
    Apple's convention (the same transform as Apple's published file) and one WARNING line saying so."""
    import json
    proc_mod = pytest.importorskip("transformers.models.mobilevit.image_processing_pil_mobilevit")
    from mobilevit_trt.preprocess import Preprocess
    hf = _hf_model("xxs", 4)
    folder = str(tmp_path / "hf")
    hf.save_pretrained(folder)
    capsys.readouterr()
    bare = open_source(None, folder)
    assert "WARNING" in capsys.readouterr().out and bare.preprocess.channel_order == "bgr"
    assert bare.preprocess.same_transform(Preprocess.from_hf_preprocessor(APPLE_HF))
    cfg = dict(APPLE_HF, crop_size={"height": 256, "width": 256}, size={"shortest_edge": 300}, resample=3)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f)
    source = open_source(None, folder)
    assert source.preprocess_origin.endswith("preprocessor_config.json")
    proc = proc_mod.MobileViTImageProcessorPil.from_pretrained(folder)
    _same_pixels(source.preprocess, lambda im: proc(im, return_tensors="np")["pixel_values"][0])
    assert os.path.join(folder, "preprocessor_config.json") in source.files()


def test_cvnets_preprocessing_is_apples():
    """ml-cvnets files: Apple's evaluation (short side 288 bilinear, crop 256, [0, 1], BGR), the transform of
    Apple's own Hugging Face processor file; other input sizes scale the resize alike."""
    from mobilevit_trt.preprocess import Preprocess
    assert Preprocess.cvnets(256).same_transform(Preprocess.from_hf_preprocessor(APPLE_HF))
    assert Preprocess.cvnets(256).describe() == ("256x256, resize short side 288 (bilinear) + center crop, "
                                                 "scale 1/255, mean 0 std 1, BGR")
    assert Preprocess.cvnets(224).resize_size == 252
    src = OfficialSource("mobilevit_xxs", None, 10, 256, origin="cvnets")
    assert src.preprocess.same_transform(Preprocess.cvnets(256))


def test_preprocess_options_override_the_source(tmp_path, capsys):
    from MobileViT_Pytorch.source import apply_preprocess_args
    from mobilevit_trt.preprocess import add_preprocess_args
    p = argparse.ArgumentParser()
    add_preprocess_args(p)
    source = open_source("timm:mobilevit_xxs")
    before = source.params["preprocess"]
    pp = apply_preprocess_args(source, p.parse_args(["--channel-order", "bgr", "--mean", "0.5"]))
    out = capsys.readouterr().out
    assert "channel_order rgb -> bgr" in out and "mean (0, 0, 0) -> (0.5, 0.5, 0.5)" in out
    assert source.preprocess is pp and pp.channel_order == "bgr" and pp.mean == (0.5, 0.5, 0.5)
    assert source.params["preprocess"] != before          # cached pipeline stages are keyed by it
    _, info = source.load()
    assert info["preprocess"]["channel_order"] == "bgr"
