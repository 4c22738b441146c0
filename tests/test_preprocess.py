"""The model's preprocessing (mobilevit_trt.preprocess): parity with the libraries it imitates (timm's
create_transform, transformers' MobileViTImageProcessor, the original project's transform), its formats (JSON,
ONNX metadata, engine sidecar), and that the accuracy / calibration / reference runs use the model's own.

Tolerances: the PIL paths (timm's transforms on a PIL image, transformers' PIL backend, the original transform) are
compared to 1e-6 (they are equal to the bit today: the same PIL resize, the same crop offsets, and ``v / 255`` in
float32 equals both torch's float32 division and transformers' float64 multiply-then-cast for every uint8 value).
transformers' default (torchvision) MobileViTImageProcessor resizes uint8 tensors with torch's antialiased
kernels, whose fixed-point rounding differs from PIL's by up to 2 uint8 levels on some pixels: max |diff| <=
2/255 (+1e-6), mean |diff| < 1e-3.
"""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from mobilevit_trt import accuracy as A
from mobilevit_trt import calib, sidecar
from mobilevit_trt import data as D
from mobilevit_trt.errors import UserError
from mobilevit_trt.preprocess import (METADATA_KEY, Preprocess, add_preprocess_args, from_args, onnx_input_size,
                                      resolve, write_onnx_metadata)

PIL_ATOL = 1e-6
#: images of odd sizes: portrait, landscape, tiny (upscaled), one pixel off square, already the crop size, and
#: 263x288, whose long side at short side 288 is 315: a crop offset of 29.5 (torchvision 30, transformers 29)
SIZES = [(300, 217), (64, 90), (257, 256), (513, 299), (217, 300), (256, 256), (301, 301), (263, 288)]
APPLE_HF = {"crop_size": {"height": 256, "width": 256}, "do_center_crop": True, "do_flip_channel_order": True,
            "do_rescale": True, "do_resize": True, "image_processor_type": "MobileViTImageProcessor",
            "resample": 2, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 288}}
#: the older file layout (feature extractor, int sizes), as some checkpoints on the hub still carry it
LEGACY_HF = {"crop_size": 256, "do_center_crop": True, "do_flip_channel_order": True, "do_resize": True,
             "feature_extractor_type": "MobileViTFeatureExtractor", "resample": 2, "size": 288}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    out = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]
    # smooth content too (random noise is the worst case for resampling differences, not the typical one)
    yy, xx = np.mgrid[0:217, 0:300]
    out.append(Image.fromarray(np.stack([xx * 255 // 299, yy * 255 // 216, (xx + yy) % 256], -1).astype(np.uint8)))
    out.append(Image.fromarray(rng.integers(0, 256, (90, 64), dtype=np.uint8), mode="L"))   # grey
    return out


def _maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ------------------------------------------------------------------------------------------------- original
def test_original_equals_the_data_layer_and_torchvision(images):
    T = pytest.importorskip("torchvision.transforms")
    for size in (256, 224, 64):
        pp = Preprocess.original(size)
        ref = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(D.IMAGENET_MEAN, D.IMAGENET_STD)])
        for im in images:
            x = pp(im)
            assert x.dtype == np.float32 and x.shape == (3, size, size) and x.flags["C_CONTIGUOUS"]
            assert np.array_equal(x, D.preprocess(im, size))
            assert _maxdiff(x, ref(im.convert("RGB")).numpy()) <= PIL_ATOL
    assert Preprocess.original(256).describe() == ("256x256, resize to 256x256 (bilinear), scale 1/255, mean "
                                                   "(0.485, 0.456, 0.406) std (0.229, 0.224, 0.225), RGB")
    # datasets: img_size= keeps meaning the original transform; preprocess= replaces it
    assert D.resolve_preprocess(64) == Preprocess.original(64) and D.resolve_preprocess() == Preprocess.original()
    with pytest.raises(UserError, match="contradicts"):
        D.resolve_preprocess(64, Preprocess.original(128))


# ----------------------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
@pytest.mark.parametrize("img_size", [None, 224])
def test_timm_parity(images, name, img_size):
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, pretrained=False, num_classes=3)
    args = {} if img_size is None else {"input_size": (3, img_size, img_size)}
    pp = Preprocess.from_timm_cfg(model.pretrained_cfg, img_size=img_size)
    cfg = resolve_data_config(args, model=model)
    assert pp.img_size == cfg["input_size"][-1] and pp.crop_pct == cfg["crop_pct"]
    assert pp.interpolation == cfg["interpolation"] == "bicubic" and pp.mean == (0, 0, 0) and pp.std == (1, 1, 1)
    tf = create_transform(**cfg)
    # overrides, timm-style: the same on both sides
    over = {"mean": (0.5, 0.4, 0.3), "std": (0.2,), "crop_pct": 0.95, "interpolation": "bilinear"}
    tf_over = create_transform(**resolve_data_config(dict(args, **over), model=model))
    pp_over = pp.with_overrides(**over)
    tf_squash = create_transform(**dict(cfg, crop_mode="squash"))
    pp_squash = pp.with_overrides(crop_mode="squash")
    for im in images:
        rgb = im.convert("RGB")
        assert _maxdiff(pp(im), tf(rgb).numpy()) <= PIL_ATOL
        assert _maxdiff(pp_over(im), tf_over(rgb).numpy()) <= PIL_ATOL
        assert _maxdiff(pp_squash(im), tf_squash(rgb).numpy()) <= PIL_ATOL
    # the comparison can fail: timm's Resize + CenterCrop is not a direct resize, nor ImageNet-normalised
    assert _maxdiff(Preprocess.original(pp.img_size)(images[0]), tf(images[0]).numpy()) > 0.1
    assert _maxdiff(pp.with_overrides(crop_pct=1.0)(images[0]), tf(images[0]).numpy()) > 0.1


def test_timm_crop_offsets_round_half_to_even(images):
    """torchvision rounds the centre-crop offset (half to even), transformers floors it: an image whose resized
    side is an odd number of pixels larger than the crop tells them apart."""
    pp = Preprocess(8, crop_mode="squash", resize_size=11, interpolation="nearest", mean=0, std=1)
    im = Image.fromarray(np.arange(121, dtype=np.uint8).reshape(11, 11))
    x = pp(im)[0] * 255
    assert round(float(x[0, 0])) == 2 * 11 + 2         # offset round(3 / 2) = 2
    floor = Preprocess.from_dict(dict(pp.to_dict(), crop_offset="floor"))(im)[0] * 255
    assert round(float(floor[0, 0])) == 1 * 11 + 1     # offset 3 // 2 = 1


# ----------------------------------------------------------------------------------------------- Hugging Face
def _hf_folder(tmp_path, cfg, name="hf"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    return str(folder)


@pytest.mark.parametrize("cfg", [APPLE_HF, LEGACY_HF], ids=["apple", "legacy"])
def test_hf_parity_pil_backend(images, tmp_path, cfg):
    mod = pytest.importorskip("transformers.models.mobilevit.image_processing_pil_mobilevit")
    folder = _hf_folder(tmp_path, cfg)
    pp = Preprocess.from_hf_preprocessor(folder)
    assert pp == Preprocess.from_hf_preprocessor(os.path.join(folder, "preprocessor_config.json"))
    assert pp.describe() == "256x256, resize short side 288 (bilinear) + center crop, scale 1/255, mean 0 std 1, BGR"
    proc = mod.MobileViTImageProcessorPil.from_pretrained(folder)
    odd_offsets = 0
    for im in images:
        ref = proc(im.convert("RGB"), return_tensors="np")["pixel_values"][0]
        assert _maxdiff(pp(im), ref) <= PIL_ATOL
        rounding = Preprocess.from_dict(dict(pp.to_dict(), crop_offset="round"))(im)
        odd_offsets += _maxdiff(rounding, ref) > 0
    assert odd_offsets > 0          # some image's crop offset is a half pixel: the floor rule matters
    # the channel flip is what the checkpoints expect, and what the comparison sees
    ref = proc(images[0], return_tensors="np")["pixel_values"][0]
    assert _maxdiff(pp.with_overrides(channel_order="rgb")(images[0]), ref) > 0.1


def test_hf_defaults_come_from_the_processor_class(images):
    """Keys the file leaves out take MobileViTImageProcessor's class defaults (bicubic, short side 224, ...)."""
    mod = pytest.importorskip("transformers.models.mobilevit.image_processing_pil_mobilevit")
    with pytest.raises(UserError, match="would pad"):      # short side 224 < crop 256: refused, not padded
        Preprocess.from_hf_preprocessor({"image_processor_type": "MobileViTImageProcessor"})
    cfg = {"crop_size": {"height": 192, "width": 192}, "do_flip_channel_order": False}
    pp = Preprocess.from_hf_preprocessor(cfg)
    assert (pp.resize_size, pp.img_size, pp.interpolation, pp.channel_order) == (224, 192, "bicubic", "rgb")
    proc = mod.MobileViTImageProcessorPil(**cfg)
    for im in images[:3]:
        assert _maxdiff(pp(im), proc(im.convert("RGB"), return_tensors="np")["pixel_values"][0]) <= PIL_ATOL


def test_hf_torchvision_backend_within_resize_tolerance(images):
    tr = pytest.importorskip("transformers")
    pytest.importorskip("torchvision")
    pp = Preprocess.from_hf_preprocessor(APPLE_HF)
    proc = tr.MobileViTImageProcessor(**{k: v for k, v in APPLE_HF.items() if k != "image_processor_type"})
    for im in images:
        ref = proc(im.convert("RGB"), return_tensors="np")["pixel_values"][0]
        d = np.abs(pp(im) - ref)
        assert d.max() <= 2 / 255.0 + PIL_ATOL and d.mean() < 1e-3, (im.size, d.max(), d.mean())


def test_hf_unreadable_or_unsupported_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Preprocess.from_hf_preprocessor(str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON"):
        Preprocess.from_hf_preprocessor(str(bad))
    for change, needle in [({"image_processor_type": "CLIPImageProcessor"}, "not supported"),
                           ({"resample": 1}, "resample"),
                           ({"do_center_crop": False}, "do_center_crop"),
                           ({"size": {"shortest_edge": 288, "longest_edge": 400}}, "size"),
                           ({"crop_size": {"height": 256, "width": 200}}, "square")]:
        with pytest.raises(UserError, match=needle):
            Preprocess.from_hf_preprocessor(dict(APPLE_HF, **change))


# ------------------------------------------------------------------------------------------------- formats
def test_dict_json_and_overrides():
    pps = [Preprocess.original(224), Preprocess.from_hf_preprocessor(APPLE_HF),
           Preprocess.from_timm_cfg({"input_size": (3, 256, 256), "interpolation": "bicubic", "crop_pct": 0.9,
                                     "mean": (0, 0, 0), "std": (1, 1, 1)})]
    for pp in pps:
        again = Preprocess.from_dict(json.loads(json.dumps(pp.to_dict())))
        assert again == pp and again.describe() == pp.describe()
        assert Preprocess.coerce(pp.to_json()) == pp
    timm_pp = pps[2]
    assert timm_pp.resize_size == 284 and timm_pp.crop_mode == "center"   # floor(256 / 0.9), as timm
    # a timm data config as the model package's training records it (source: timm) reads as timm's
    assert Preprocess.from_dict({"input_size": [3, 256, 256], "interpolation": "bicubic", "crop_pct": 0.9,
                                 "crop_mode": "center", "mean": [0, 0, 0], "std": [1, 1, 1],
                                 "source": "timm"}).same_transform(timm_pp)
    o = pps[0].with_overrides(mean=(0,), std=(1,), channel_order="bgr", img_size=256)
    assert (o.mean, o.std, o.channel_order, o.img_size, o.resize_size) == ((0, 0, 0), (1, 1, 1), "bgr", 256, 256)
    assert o.source == "original+overrides" and pps[0].with_overrides() is pps[0]
    assert pps[0].diff(o) == ["img_size 224 -> 256", "resize_size 224 -> 256", "mean (0.485, 0.456, 0.406) -> "
                              "(0, 0, 0)", "std (0.229, 0.224, 0.225) -> (1, 1, 1)", "channel_order rgb -> bgr"]
    assert pps[1].with_overrides(img_size=224).resize_size == 252             # the 256/288 ratio kept
    for bad in ({"format": "mobilevit_trt.preprocess/9"}, {"x": 1}, dict(pps[0].to_dict(), channel_order="rbg"),
                dict(pps[0].to_dict(), interpolation="lanczos"), dict(pps[0].to_dict(), mean=[1, 2]),
                dict(pps[0].to_dict(), extra=1)):
        with pytest.raises(UserError):
            Preprocess.from_dict(bad)


def test_cli_options_timm_conventions():
    import argparse
    p = argparse.ArgumentParser()
    add_preprocess_args(p)
    args = p.parse_args(["--mean", "0", "--std", "1", "--crop-pct", "0.9", "--interpolation", "bicubic",
                         "--channel-order", "bgr", "--crop-mode", "center"])
    pp = from_args(args, Preprocess.original(256))
    want = Preprocess.from_timm_cfg({"input_size": (3, 256, 256), "interpolation": "bicubic", "crop_pct": 0.9,
                                     "mean": (0, 0, 0), "std": (1, 1, 1)}).with_overrides(channel_order="bgr")
    assert pp.same_transform(want)
    assert from_args(p.parse_args([]), Preprocess.original(256)) == Preprocess.original(256)
    with pytest.raises(UserError, match="1 or 3"):
        from_args(p.parse_args(["--mean", "0.5", "0.4"]), Preprocess.original(256))
    with pytest.raises(UserError, match="crop-pct"):
        from_args(p.parse_args(["--crop-pct", "1.5"]), Preprocess.original(256))


def _proto(size=8, batch="batch"):
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)], "m",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_onnx_metadata_round_trip(tmp_path):
    import onnx
    pp = Preprocess.from_hf_preprocessor(APPLE_HF)
    m = _proto()
    m.metadata_props.add(key="producer.note", value="kept")
    assert Preprocess.from_onnx(m) is None
    write_onnx_metadata(m, Preprocess.original(256))
    write_onnx_metadata(m, pp)                          # replaces, never duplicates
    assert [p.key for p in m.metadata_props] == ["producer.note", METADATA_KEY]
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    assert Preprocess.from_onnx(path) == pp and Preprocess.from_onnx(onnx.load(path)) == pp
    assert json.loads(onnx.load(path).metadata_props[1].value) == pp.to_dict()
    assert onnx_input_size(path) == (8, 8) and onnx_input_size(_proto(size="h")) == (None, None)
    m.metadata_props[1].value = "{broken"
    with pytest.raises(UserError, match="metadata is invalid"):
        Preprocess.from_onnx(m)


def test_sidecar_round_trip(tmp_path):
    import onnx
    pp = Preprocess.from_timm_cfg({"input_size": (3, 8, 8), "crop_pct": 0.9, "mean": (0, 0, 0), "std": (1, 1, 1)})
    onnx_path = str(tmp_path / "m.onnx")
    onnx.save(write_onnx_metadata(_proto(), pp), onnx_path)
    engine = str(tmp_path / "m.engine")
    open(engine, "wb").write(b"not really an engine")
    assert sidecar.engine_preprocess(engine)[0] is None                   # no sidecar at all
    rec = sidecar.preprocess_record(onnx_path)
    assert rec == pp.to_dict() and sidecar.preprocess_record(str(tmp_path / "m.onnx")) == rec
    sidecar.write(engine, {"format": sidecar.FORMAT, sidecar.PREPROCESS_KEY: rec})
    got, where = sidecar.engine_preprocess(engine)
    assert got == pp and "sidecar" in where
    assert sidecar.preprocess_of(sidecar.read(engine)) == pp
    # an ONNX without metadata records None: unknown, not a default
    plain = str(tmp_path / "plain.onnx")
    onnx.save(_proto(), plain)
    sidecar.write(engine, {"format": sidecar.FORMAT, sidecar.PREPROCESS_KEY: sidecar.preprocess_record(plain)})
    assert sidecar.engine_preprocess(engine)[0] is None
    # a sidecar from before the record: the source ONNX's metadata, while that file is unchanged
    from mobilevit_trt.fileio import sha256_file
    sidecar.write(engine, {"format": sidecar.FORMAT, "source_onnx": {"path": onnx_path,
                                                                     "sha256": sha256_file(onnx_path)}})
    got, where = sidecar.engine_preprocess(engine)
    assert got == pp and "source" in where
    sidecar.write(engine, {"format": sidecar.FORMAT, "source_onnx": {"path": onnx_path, "sha256": "0" * 64}})
    assert sidecar.engine_preprocess(engine)[0] is None
    sidecar.write(engine, {"format": sidecar.FORMAT, sidecar.PREPROCESS_KEY: {"format": "nope"}})
    with pytest.raises(UserError, match="invalid"):
        sidecar.engine_preprocess(engine)


# --------------------------------------------------------------------------- the model's preprocessing in runs
#: the class of an image is the channel that is brightest *in the model's input order* (BGR): 0 blue, 1 green,
#: 2 red.  A model that returns per-channel means as logits is right on all of them only when fed BGR.
BGR_CLASSES = {"0": 2, "1": 1, "2": 0}     # class folder -> RGB channel that is bright
PER_CLASS = 4


def _channel_dataset(root):
    rng = np.random.default_rng(3)
    for cls, channel in BGR_CLASSES.items():
        os.makedirs(os.path.join(root, cls))
        for j in range(PER_CLASS):
            h, w = 30 + 3 * j, 41 - 2 * j                     # odd sizes: every image is resized and cropped
            arr = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
            arr[:, :, channel] = rng.integers(170, 256, (h, w), dtype=np.uint8)
            Image.fromarray(arr).save(os.path.join(root, cls, "%d.png" % j))
    return root


def _export_channel_means(path, size):
    """A real torch module exported to ONNX: logits = per-channel mean of the input."""
    import torch

    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    torch.onnx.export(ChannelMeans(), torch.zeros(1, 3, size, size), path, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=13, dynamo=False)
    return path


@pytest.fixture(scope="module")
def channel_models(tmp_path_factory):
    import onnx
    tmp = tmp_path_factory.mktemp("pp")
    plain = _export_channel_means(str(tmp / "plain.onnx"), 32)
    hf_like = Preprocess(32, crop_mode="center", resize_size=36, crop_offset="floor", interpolation="bilinear",
                         mean=0, std=1, channel_order="bgr", source="hf")
    m = onnx.load(plain)
    write_onnx_metadata(m, hf_like)
    bgr = str(tmp / "bgr.onnx")
    onnx.save(m, bgr)
    small = _export_channel_means(str(tmp / "small.onnx"), 24)
    return {"tmp": tmp, "plain": plain, "bgr": bgr, "small": small, "pp": hf_like,
            "data": _channel_dataset(str(tmp / "data"))}


def _accuracy(argv, capsys):
    from mobilevit_trt.commands.accuracy import main
    assert main(argv + ["--no-progress"]) == 0
    return capsys.readouterr().out


def test_accuracy_run_uses_the_onnx_metadata(channel_models, capsys):
    c = channel_models
    out_file = str(c["tmp"] / "res.json")
    out = _accuracy(["--onnx_path", c["bgr"], "--data_path", c["data"], "--results-file", out_file], capsys)
    n = 3 * PER_CLASS
    assert "top1: 100.000%% (%d/%d)" % (n, n) in out
    assert "preprocessing: %s" % c["pp"].describe() in out and "ONNX metadata of" in out
    assert "WARNING" not in out
    row = json.load(open(out_file))["rows"][0]
    assert row["preprocess_config"] == c["pp"].to_dict() and row["preprocess"] == c["pp"].describe()
    assert json.load(open(out_file))["meta"]["preprocess"] == c["pp"].describe()
    # a wrong channel order (override, printed) swaps blue and red: only the green images stay right
    out = _accuracy(["--onnx_path", c["bgr"], "--data_path", c["data"], "--channel-order", "rgb"], capsys)
    assert "channel_order bgr -> rgb" in out and "top1: 33.333%% (%d/%d)" % (PER_CLASS, n) in out


def test_unknown_preprocessing_warns_once_and_overrides_fix_it(channel_models, capsys):
    c = channel_models
    out = _accuracy(["--onnx_path", c["plain"], "--data_path", c["data"]], capsys)
    warnings = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "UNKNOWN" in warnings[0] and "original project's default" in warnings[0]
    assert "top1: 100.000%" not in out                     # the original's RGB + ImageNet normalisation
    out = _accuracy(["--onnx_path", c["plain"], "--data_path", c["data"], "--channel-order", "bgr", "--mean", "0",
                     "--std", "1"], capsys)
    assert "overridden on the command line" in out and "top1: 100.000%" in out


def test_input_size_comes_from_the_onnx(channel_models, capsys):
    """A 24x24 ONNX runs without --img-size (it used to fail in ONNX Runtime at the default 256); a contradicting
    --img-size is one error line; metadata of another size follows the model's input."""
    import onnx
    from tests.helpers import run_script
    c = channel_models
    out = _accuracy(["--onnx_path", c["small"], "--data_path", c["data"], "--channel-order", "bgr"], capsys)
    assert "24x24, resize to 24x24" in out and "top1: 33.333%" not in out
    out = _accuracy(["--onnx_path", c["small"], "--data_path", c["data"], "--img-size", "24"], capsys)
    assert "24x24" in out
    r = run_script(["test_trt_precision.py", "--onnx_path", c["small"], "--data_path", c["data"], "--img-size",
                    "32", "--no-progress"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "--img-size 32 contradicts" in r.stderr and "24x24" in r.stderr
    m = onnx.load(c["small"])
    write_onnx_metadata(m, c["pp"])                                         # says 32; the input is 24
    mixed = str(c["tmp"] / "mixed.onnx")
    onnx.save(m, mixed)
    out = _accuracy(["--onnx_path", mixed, "--data_path", c["data"]], capsys)
    assert "the model input is 24x24" in out and "24x24, resize short side 27 (bilinear) + center crop" in out
    assert "top1: 100.000%" in out
    # the accuracy loop itself refuses data preprocessed to another size than a static input
    from mobilevit_trt.backends import OnnxRuntimeBackend
    with pytest.raises(UserError, match="takes 24x24 inputs"):
        A.evaluate(OnnxRuntimeBackend(c["small"]), D.open_dataset(c["data"], preprocess=c["pp"]),
                   show_progress=False)


def test_limit_is_stratified_and_says_so(channel_models, capsys):
    c = channel_models
    out = _accuracy(["--onnx_path", c["bgr"], "--data_path", c["data"], "--limit", "6"], capsys)
    # the first 6 images of this class-sorted folder would be classes 0 and 1 only
    assert "--limit 6: 6 of 12 images, stratified by class (seed 0): 3 of 3 classes, 2 per class" in out
    assert "[0: 2, 1: 2, 2: 2]" in out and "top1: 100.000% (6/6)" in out


class _Labels(D.Dataset):
    """A dataset of labels only (what the subset and split helpers read)."""
    path = "labels"

    def __init__(self, labels):
        self._labels = list(labels)

    def __len__(self):
        return len(self._labels)

    def label(self, i):
        return self._labels[i]


def test_stratified_subset_by_hand(tmp_path):
    two = _Labels([0] * 300 + [1] * 300)                   # a 2-class set sorted by label
    sub, info = D.stratified_subset(two, 200)
    got = [two.label(i) for i in sub.indices]
    assert got.count(0) == 100 and got.count(1) == 100 and sub.indices == sorted(sub.indices)
    assert info["per_class"] == {"0": 100, "1": 100} and "2 of 2 classes, 100 per class" in info["description"]
    assert D.stratified_subset(two, 200, seed=1)[0].indices != sub.indices          # seeded
    assert D.stratified_subset(two, 200)[0].indices == sub.indices
    uneven = _Labels([0] * 2 + [1] * 50 + [2] * 50)         # a small class gives what it has; the rest fill up
    _, info = D.stratified_subset(uneven, 30)
    assert info["per_class"] == {"0": 2, "1": 14, "2": 14}
    many = _Labels(sorted(list(range(10)) * 5))
    _, info = D.stratified_subset(many, 3)
    assert info["classes_covered"] == 3 and "7 classes not evaluated" in info["description"]
    assert D.stratified_subset(many, 0)[0] is many and D.stratified_subset(many, 500)[0] is many


def test_split_halves_are_disjoint_stratified_and_cover_the_set():
    ds = _Labels([0] * 7 + [1] * 10 + [2] * 4)            # odd class sizes, sorted by label
    a, b = D.split_halves(ds, seed=3)
    assert not set(a.indices) & set(b.indices) and sorted(a.indices + b.indices) == list(range(21))
    assert len(a) == 10 and len(b) == 11 and a.indices == sorted(a.indices) and b.indices == sorted(b.indices)
    assert [[ds.label(i) for i in h.indices].count(c) for h in (a, b) for c in (0, 1, 2)] == [3, 5, 2, 4, 5, 2]
    assert a.describe().startswith("half A of ") and "(split seed 3) (10 images)" in a.describe()
    assert D.split_halves(ds, seed=4)[0].indices != a.indices and D.split_halves(ds, seed=3)[0].indices == a.indices
    with pytest.raises(UserError, match="two halves"):
        D.split_halves(_Labels([0]))


def test_lmdb_labels_from_headers(tmp_path, channel_models):
    pytest.importorskip("lmdb")
    folder = D.open_dataset(channel_models["data"])
    out = str(tmp_path / "c.lmdb")
    D.folder_to_lmdb(channel_models["data"], out, show_progress=False, log=lambda s: None)
    lm = D.open_dataset(out, preprocess=channel_models["pp"])
    assert lm.labels() == folder.labels() == [lm.raw(i)[1] for i in range(len(lm))]
    assert lm.img_size == 32 and np.array_equal(lm[5][0], channel_models["pp"](folder.image(5)))
    sub = D.Subset(lm, [1, 7])
    assert sub.preprocess == channel_models["pp"] and sub.labels() == [lm.label(1), lm.label(7)]


def test_calibration_and_reference_data_use_the_model_preprocessing(channel_models, tmp_path):
    from mobilevit_trt.backends import OnnxRuntimeBackend
    c, lines = channel_models, []
    x = calib.load_calibration_data(c["data"], limit=5, img_size=32, preprocess=c["pp"], log=lines.append)
    ds = D.open_dataset(c["data"])
    pick = sorted(D.sample_indices(len(ds), 5, 0))
    assert np.array_equal(x, np.stack([c["pp"](ds.image(i)) for i in pick]))
    assert any(c["pp"].describe() in line for line in lines) and not any("WARNING" in line for line in lines)
    lines = []
    x0 = calib.load_calibration_data(c["data"], limit=5, img_size=32, log=lines.append)   # unknown: loud
    assert sum("WARNING" in line for line in lines) == 1
    assert np.array_equal(x0[0], Preprocess.original(32)(ds.image(pick[0])))
    assert calib.model_preprocess(c["bgr"])[0] == c["pp"] and calib.model_preprocess(c["plain"])[0] is None
    # reference data record their preprocessing; a calibration .npz of another one is refused for this model
    out = str(tmp_path / "ref")
    D.write_reference_data(OnnxRuntimeBackend(c["bgr"]), D.open_dataset(c["data"], preprocess=c["pp"]), out,
                           batches=(1, 2), calib_count=3, log=lambda s: None)
    lines = []
    got = calib.load_calibration_data(os.path.join(out, "calibration.npz"), preprocess=c["pp"], log=lines.append)
    assert got.shape == (3, 3, 32, 32) and any("preprocessed as" in line for line in lines)
    with pytest.raises(UserError, match="regenerate"):
        calib.load_calibration_data(os.path.join(out, "calibration.npz"), preprocess=Preprocess.original(32))
    with np.load(os.path.join(out, "batch2.npz"), allow_pickle=False) as z:
        assert Preprocess.coerce(str(z["preprocess"][()])) == c["pp"]
    with pytest.raises(UserError, match="open both"):
        D.write_reference_data(OnnxRuntimeBackend(c["bgr"]), D.open_dataset(c["data"], preprocess=c["pp"]), out,
                               batches=(1,), calib_dataset=D.open_dataset(c["data"], img_size=32),
                               log=lambda s: None)


def test_resolve_prints_and_overrides():
    import argparse
    lines = []
    pp = resolve(None, "x.onnx", img_size=64, log=lines.append)
    assert pp == Preprocess.original(64) and len(lines) == 2 and lines[0].startswith("WARNING")
    assert lines[1] == "preprocessing: %s  [unknown -> original project's default]" % pp.describe()
    lines = []
    args = argparse.Namespace(mean=[0.0], std=None, crop_pct=None, crop_mode=None, interpolation=None,
                              channel_order="bgr")
    pp = resolve(Preprocess.original(64).to_dict(), "ckpt", args=args, log=lines.append)
    assert pp.channel_order == "bgr" and pp.mean == (0, 0, 0) and pp.std == D.IMAGENET_STD
    assert "channel_order rgb -> bgr" in lines[0] and "ckpt + command-line overrides" in lines[-1]
    # a symbolic input dimension does not resize the preprocessing
    assert resolve(Preprocess.original(64), "m", img_size="height", log=lambda s: None).img_size == 64


def test_accepts_only_pil_images():
    with pytest.raises(TypeError, match="PIL image"):
        Preprocess.original(8)(np.zeros((8, 8, 3), np.uint8))
    buf = io.BytesIO()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(buf, format="PNG")
    assert D.preprocess(buf.getvalue(), 8, pp=Preprocess.from_hf_preprocessor(
        dict(APPLE_HF, size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}))).shape == (3, 8, 8)


def test_the_record_travels_from_export_to_every_derived_graph(tmp_path):
    """convert_to_onnx.py records the model's preprocessing (here timm's for mobilevit_xxs at 128, with a
    command-line override); onnx_add_plugin.py, the FP16 conversion and the Q/DQ quantizer keep it (onnx-
    graphsurgeon and ONNX Runtime's quantizer drop metadata_props on their own); an accuracy run reads it."""
    pytest.importorskip("timm")
    from mobilevit_trt import precision
    from tests.helpers import run_script
    onnx_path, fused = str(tmp_path / "m.onnx"), str(tmp_path / "m_plugin.onnx")
    r = run_script(["convert_to_onnx.py", "--model", "timm:mobilevit_xxs", "--img-size", "128", "--dynamic",
                    "--opt", "--std", "0.5", "--save_path", onnx_path])
    assert r.returncode == 0, r.stderr
    assert "preprocessing overridden on the command line: std (1, 1, 1) -> (0.5, 0.5, 0.5)" in r.stdout
    want = Preprocess.from_dict(dict(Preprocess.cvnets(128).to_dict(), crop_offset="round", resize_size=142,
                                     crop_pct=0.9, interpolation="bicubic", std=[0.5] * 3, channel_order="rgb",
                                     source="timm+overrides"))
    assert Preprocess.from_onnx(onnx_path) == want      # timm's cfg of the model (bicubic, crop 0.9), std given
    r = run_script(["onnx_add_plugin.py", "--input_path", onnx_path, "--save_path", fused])
    assert r.returncode == 0, r.stderr
    assert Preprocess.from_onnx(fused) == want
    precision.convert_fp16(onnx_path, str(tmp_path / "m16.onnx"))
    assert Preprocess.from_onnx(str(tmp_path / "m16.onnx")) == want
    x = precision.structured_inputs(4, img_size=128, seed=0)
    precision.quantize_qdq(onnx_path, str(tmp_path / "mq.onnx"), x, method="minmax")
    assert Preprocess.from_onnx(str(tmp_path / "mq.onnx")) == want
    from mobilevit_trt.backends import make_backend
    with make_backend("onnxruntime", onnx_path=fused) as backend:
        pp, origin = A.model_preprocess(backend)
    assert pp == want and origin == "ONNX metadata of %s" % fused
