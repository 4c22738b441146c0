"""Data layer: preprocessing pinned by hand, LMDB (own format) round trip, folder_to_lmdb, legacy LMDB message,
reference data (gen_test_data.py) against PyTorch recomputed."""
import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from mobilevit_trt import data as D
from mobilevit_trt.errors import UserError
from mobilevit_trt.preprocess import Preprocess
from tests.helpers import run_script

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------- preprocessing
def test_constant_color_image_by_hand():
    img = Image.new("RGB", (5, 3), (255, 0, 128))
    x = D.preprocess(img)
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    # (v / 255 - mean) / std, computed by hand:
    #   R: (1 - 0.485) / 0.229 = 2.2489083   G: (0 - 0.456) / 0.224 = -2.0357143
    #   B: (128/255 - 0.406) / 0.225 = (0.5019608 - 0.406) / 0.225 = 0.4264924
    expected = [2.2489083, -2.0357143, 0.4264924]
    for c in range(3):
        assert np.allclose(x[c], expected[c], atol=1e-6), (c, x[c].min(), x[c].max())


def test_bilinear_upsampling_by_hand():
    # a 2x2 grey image with columns 0 and 200, resized to 4x4: output pixel centres fall at input x = -0.25,
    # 0.25, 0.75, 1.25 (edge-clamped), so every row is [0, 0.75*0 + 0.25*200, 0.25*0 + 0.75*200, 200]
    # = [0, 50, 150, 200]; every column is constant.  Grey replicates into R, G and B.
    img = Image.fromarray(np.array([[0, 200], [0, 200]], dtype=np.uint8), mode="L")
    x = D.preprocess(img, size=4)
    assert x.shape == (3, 4, 4)
    row = np.array([0, 50, 150, 200], dtype=np.float64) / 255.0
    for c in range(3):
        want = (row - MEAN[c]) / STD[c]
        for r in range(4):
            assert np.allclose(x[c, r], want, atol=1e-6), (c, r, x[c, r], want)
    # e.g. R channel, pixel value 50: (50/255 - 0.485) / 0.229 = (0.1960784 - 0.485) / 0.229 = -1.2616664
    assert abs(float(x[0, 0, 1]) - (-1.2616664)) < 1e-6


def test_preprocess_accepts_encoded_bytes_and_modes():
    rgba = Image.new("RGBA", (7, 9), (10, 20, 30, 40))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    a = D.preprocess(buf.getvalue(), size=32)
    b = D.preprocess(rgba.convert("RGB"), size=32)
    assert np.array_equal(a, b)
    with pytest.raises(D.BadImageError):
        D.preprocess(b"not an image")


# ----------------------------------------------------------------------------------------------- helpers
def _make_folder(root, per_class=3, classes=("cat", "dog", "zebra")):
    """Class folders with PNG (RGB and grey) and JPEG files whose pixels all differ."""
    rng = np.random.default_rng(0)
    paths = []
    for ci, cls in enumerate(classes):
        os.makedirs(os.path.join(root, cls))
        for j in range(per_class):
            h, w = 10 + j, 12 + ci
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            if j % 3 == 1:
                p = os.path.join(root, cls, "img%d.jpg" % j)
                Image.fromarray(arr).save(p, quality=90)
            elif j % 3 == 2:
                p = os.path.join(root, cls, "img%d.png" % j)
                Image.fromarray(arr[:, :, 0], mode="L").save(p)
            else:
                p = os.path.join(root, cls, "img%d.png" % j)
                Image.fromarray(arr).save(p)
            paths.append((p, ci))
    return paths


# ------------------------------------------------------------------------------------------------- LMDB
def test_lmdb_round_trip_own_format(tmp_path):
    src = str(tmp_path / "folder")
    paths = _make_folder(src)
    out = str(tmp_path / "set.lmdb")
    rep = D.folder_to_lmdb(src, out, show_progress=False, log=lambda s: None)
    assert rep["written"] == len(paths) == rep["found"] and rep["skipped"] == []
    ds = D.open_dataset(out, img_size=64)
    assert isinstance(ds, D.LmdbDataset)
    assert len(ds) == len(paths)
    assert ds.classes == ["cat", "dog", "zebra"]
    folder = D.open_dataset(src, img_size=64)
    assert [s for s in folder.samples] == sorted(paths, key=lambda p: (p[1], os.path.basename(p[0])))
    for i, (path, label) in enumerate(folder.samples):
        raw, lab = ds.raw(i)
        assert lab == label
        with open(path, "rb") as f:
            assert raw == f.read()                      # the encoded bytes, stored as they were
        want = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(np.asarray(ds.image(i)), want)   # decoded pixels equal the source image's
        x, y = ds[i]
        assert y == label and np.array_equal(x, D.preprocess(Image.open(path), 64))

    # the on-disk layout: no pickle, an 8-byte little-endian label header, JSON __len__ / __meta__
    with D.shared_env(out).begin() as txn:
        assert json.loads(bytes(txn.get(b"__len__")).decode()) == len(paths)
        meta = json.loads(bytes(txn.get(b"__meta__")).decode())
        v = bytes(txn.get(b"00000004"))
    assert meta["format"] == D.LMDB_FORMAT and meta["count"] == len(paths) and meta["num_classes"] == 3
    assert struct.unpack("<q", v[:8])[0] == folder.samples[4][1]
    assert v[8:] == open(folder.samples[4][0], "rb").read()


def test_label_file_folder_and_count_check(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    labels = []
    for i in range(5):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(str(flat / ("v%d.png" % i)))
        labels.append("v%d.png %d" % (i, (i * 7) % 3))
    (tmp_path / "labels.txt").write_text("# file label\n" + "\n".join(labels) + "\n")
    ds = D.open_dataset(str(flat), label_file=str(tmp_path / "labels.txt"), img_size=16)
    assert [ds.label(i) for i in range(5)] == [0, 1, 2, 0, 1]
    out = str(tmp_path / "flat.lmdb")
    D.folder_to_lmdb(str(flat), out, label_file=str(tmp_path / "labels.txt"), show_progress=False)
    lm = D.open_dataset(out, img_size=16)
    assert [lm.label(i) for i in range(5)] == [0, 1, 2, 0, 1]
    assert all(np.array_equal(lm[i][0], ds[i][0]) for i in range(5))
    # the count check notices a record that should not be there
    import lmdb
    D.release_env(out)
    env = lmdb.open(out, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"00000005", D.encode_record(b"x", 0))
    env.close()
    with pytest.raises(UserError, match="count check failed"):
        D.verify_lmdb(out, 5)


def _leftovers(parent, name):
    return [n for n in os.listdir(parent) if n.startswith("." + name)]


def test_folder_to_lmdb_script_counts_and_corrupt_images(tmp_path):
    src = str(tmp_path / "imgs")
    paths = _make_folder(src, per_class=2, classes=("a", "b"))
    with open(os.path.join(src, "b", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)      # PNG signature, garbage after it
    out = str(tmp_path / "out.lmdb")

    r = run_script(["benchmark/folder_to_lmdb.py", "--input_path", src, "--save_path", out, "--no-progress"])
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: corrupt image") and "broken.png" in err[0], r.stderr
    assert "--skip-bad" in err[0] and "Traceback" not in r.stderr
    assert not os.path.exists(out) and _leftovers(str(tmp_path), "out.lmdb") == []

    r = run_script(["benchmark/folder_to_lmdb.py", "--input_path", src, "--save_path", out, "--no-progress",
                    "--skip-bad"])
    assert r.returncode == 0, r.stderr
    assert "%d images" % len(paths) in r.stdout and "count verified" in r.stdout and "broken.png" in r.stdout
    ds = D.open_dataset(out)
    assert len(ds) == len(paths) and D.verify_lmdb(out, len(paths)) == len(paths)

    r = run_script(["benchmark/folder_to_lmdb.py", "--input_path", src, "--save_path", out, "--skip-bad"])
    assert r.returncode == 1 and "already exists" in r.stderr


def test_legacy_lmdb_message(tmp_path):
    import lmdb

    def make(name, keys_value):
        path = str(tmp_path / name)
        env = lmdb.open(path, map_size=1 << 22)
        with env.begin(write=True) as txn:
            txn.put(b"__keys__", keys_value)
            txn.put(b"__len__", keys_value)
            txn.put(b"0", keys_value)
        env.close()
        return path

    # pickled records (the converter's later format): refused without unpickling anything
    import pickle
    pickled = make("pickled.lmdb", pickle.dumps([b"0"], protocol=2))
    with pytest.raises(UserError, match="never unpickles") as e:
        D.open_dataset(pickled)
    assert "folder_to_lmdb.py" in str(e.value)

    # pyarrow-serialised records: readable only with an old pyarrow that still has pyarrow.deserialize
    arrow = make("arrow.lmdb", b"\x00\x00\x00\x00\x10\x00\x00\x00not-a-pickle")
    try:
        import pyarrow
        can_read = hasattr(pyarrow, "deserialize")
    except ImportError:
        can_read = False
    if can_read:
        pytest.skip("this pyarrow still has pyarrow.deserialize")
    with pytest.raises(UserError) as e:
        D.open_dataset(arrow)
    msg = str(e.value)
    assert "pyarrow" in msg and "folder_to_lmdb.py" in msg
    # through the accuracy script: one line, exit 1
    r = run_script(["test_trt_precision.py", "--backend", "torch", "--data_path", arrow])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "folder_to_lmdb.py" in r.stderr


# ---------------------------------------------------------------------------------------------- reference data
def test_gen_test_data_matches_pytorch(tmp_path):
    import torch

    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model

    src = str(tmp_path / "imgs")
    _make_folder(src, per_class=7)                  # 21 images: 15 reference + calibration from the rest
    out = str(tmp_path / "ref")
    r = run_script(["benchmark/gen_test_data.py", "--data_path", src, "--calib-count", "4", "--save_path", out])
    assert r.returncode == 0, r.stderr
    assert "preprocessing: 256x256, resize to 256x256 (bilinear), scale 1/255, mean (0.485, 0.456, 0.406) std " \
           "(0.229, 0.224, 0.225), RGB" in r.stdout
    assert sorted(os.listdir(out)) == ["batch1.npz", "batch2.npz", "batch4.npz", "batch8.npz", "calibration.npz"]
    ds = D.open_dataset(src)
    model, _ = load_model(DEFAULT_WEIGHTS, quiet=True)
    seen = set()
    for b in (1, 2, 4, 8):
        with np.load(os.path.join(out, "batch%d.npz" % b), allow_pickle=False) as z:
            assert sorted(z.files) == ["index", "input", "label", "logits", "preprocess"]
            x, logits, label, index = z["input"], z["logits"], z["label"], z["index"]
            recorded = Preprocess.coerce(str(z["preprocess"][()]))
        assert recorded == Preprocess.original(256)     # this project's checkpoint: the original transform
        assert x.shape == (b, 3, 256, 256) and x.dtype == np.float32
        assert logits.shape == (b, 10) and logits.dtype == np.float32 and label.dtype == np.int64
        for j, i in enumerate(index):
            xi, yi = ds[int(i)]
            assert np.array_equal(x[j], xi) and label[j] == yi
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(ref - logits).max() < 1e-4
        seen.update(int(i) for i in index)
    assert len(seen) == 15
    with np.load(os.path.join(out, "calibration.npz"), allow_pickle=False) as z:
        assert sorted(z.files) == ["input", "preprocess"]
        calib = z["input"]
    assert calib.shape == (4, 3, 256, 256)
    rest = [ds[i][0] for i in range(len(ds)) if i not in seen]
    for c in calib:                                 # calibration images come from the non-reference ones
        assert any(np.array_equal(c, r_) for r_ in rest)


# ------------------------------------------------------------------------------------------------- the package
def test_package_reexports_and_the_data_folder_setting(tmp_path, monkeypatch):
    """mobilevit_trt.data is a package of modules; the names the rest of the project uses are on it, the shared
    state exists once, and the default dataset's folder follows $MOBILEVIT_TRT_DATA_DIR."""
    from mobilevit_trt.data import datasets, default_dataset, lmdb_writer, reference
    from tests.helpers import ROOT

    assert D.REPO_ROOT == ROOT and D.DEFAULT_DATASET_DIR == os.path.join(ROOT, "benchmark", "data", "default")
    assert D.open_dataset is datasets.open_dataset and D.folder_to_lmdb is lmdb_writer.folder_to_lmdb
    assert D.make_default_dataset is default_dataset.make_default_dataset
    assert D.write_reference_data is reference.write_reference_data
    assert lmdb_writer.shared_env is datasets.shared_env and not hasattr(lmdb_writer, "_ENVS")
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    assert D.default_root() == D.DEFAULT_DATASET_DIR
    os.makedirs(str(tmp_path / "train"))
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    assert D.default_root() == str(tmp_path) and D.default_split("train") == str(tmp_path / "train")
    with pytest.raises(UserError, match="default dataset is not there"):
        D.default_split("val")
