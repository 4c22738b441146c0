"""Reading evaluation data: preprocessing (PIL + NumPy, no torchvision), image-folder, label-file and LMDB datasets
(this toolkit's format and the legacy pyarrow one), :func:`open_dataset`, subsets and seeded picks, batching, and the
progress display the data code shares.

Preprocessing belongs to the model (:mod:`mobilevit_trt.preprocess`): every dataset takes ``preprocess=`` (a
:class:`~mobilevit_trt.preprocess.Preprocess`, or its dict), or ``img_size=`` meaning the original project's
evaluation transform at that size (``Preprocess.original(img_size)``: ``T.Resize((S, S))``, ``T.ToTensor()``,
``T.Normalize(ImageNet mean, std)`` written with PIL and NumPy); neither: the original's at 256.
:func:`preprocess` is that original transform as a function.

Datasets (all index-ordered, so every run sees the same images in the same order):

* :class:`ImageFolderDataset` -- one sub-folder per class; class names sorted give the label ids.
* :class:`LabelFileDataset` -- a flat folder of images plus a label file (``<file name> <label>`` per line).
* :class:`LmdbDataset` -- this toolkit's LMDB format (below; written by :mod:`.lmdb_writer`).
* :class:`LegacyLmdbDataset` -- the pyarrow-serialised LMDB written by the converter the original project pointed
  to (pytorch_lmdb_imagenet); read only where an old pyarrow with ``pyarrow.deserialize`` is installed.  Records
  that are pickles (that converter's later versions) are never unpickled.

The toolkit's LMDB format (no pickle anywhere):

* ``b"%08d" % index`` -> 8-byte little-endian signed label, then the encoded image file's bytes (PNG/JPEG/...)
* ``b"__len__"`` -> JSON integer, the record count
* ``b"__meta__"`` -> JSON object: ``{"format": "mobilevit_trt-lmdb", "version": 1, "count", "classes", ...}``

LMDB environments are opened once per (process, path) and shared: :func:`shared_env` / :func:`release_env`.
"""
import io
import json
import os
import struct
import sys
import threading

from ..errors import UserError
from ..preprocess import DEFAULT_IMG_SIZE, Preprocess
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")

LMDB_FORMAT = "mobilevit_trt-lmdb"
LMDB_VERSION = 1
LABEL_HEADER = struct.Struct("<q")
KEY_FORMAT = "%08d"
CONVERT_HINT = ("convert the images with: python benchmark/folder_to_lmdb.py --input_path <image folder> "
                "--save_path <new.lmdb> (or pass the image folder itself as --data_path)")


# ----------------------------------------------------------------------------------------------- preprocessing
class BadImageError(UserError):
    """An image that cannot be decoded."""


def decode_image(data, name="image"):
    """Decode encoded image bytes (or a file path) to a fully loaded PIL RGB image."""
    from PIL import Image

    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(data)))
        else:
            img = Image.open(data)
        img.load()
        return img.convert("RGB")
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        raise BadImageError("cannot decode %s: %s" % (name, str(e).splitlines()[0] if str(e)
                                                      else "not an image file PIL can read"))


def preprocess(img, size=DEFAULT_IMG_SIZE, pp=None):
    """PIL image (any mode) or encoded bytes -> float32 array ``[3, S, S]``: ``pp`` (a Preprocess), by default
    the original project's transform at ``size`` (torchvision's ``Resize((size, size))`` (PIL bilinear) +
    ``ToTensor()`` + ``Normalize(ImageNet mean, std)``)."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = decode_image(img)
    return (Preprocess.coerce(pp) if pp is not None else Preprocess.original(size))(img)


def resolve_preprocess(img_size=None, preprocess=None):
    """The Preprocess a dataset applies: ``preprocess`` (a Preprocess or its dict), else the original project's
    at ``img_size`` (default 256); UserError when both are given and disagree on the size."""
    pp = Preprocess.coerce(preprocess)
    if pp is None:
        return Preprocess.original(int(img_size) if img_size else DEFAULT_IMG_SIZE)
    if img_size and int(img_size) != pp.img_size:
        raise UserError("img_size %d contradicts the preprocessing's %dx%d (%s)"
                        % (int(img_size), pp.img_size, pp.img_size, pp.describe()))
    return pp


# -------------------------------------------------------------------------------------------- progress display
def progress(iterable, total=None, desc="", enabled=True, unit="it"):
    """tqdm where installed (it is optional); otherwise a plain counter on stderr every ~10%."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)


def _plain_progress(iterable, total, desc):
    step = max(1, (total or 0) // 10) if total else 100
    n = 0
    for item in iterable:
        yield item
        n += 1
        if n % step == 0 or (total and n == total):
            print("%s %d/%s" % (desc, n, total if total else "?"), file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- datasets
class Dataset(object):
    """Index-ordered labelled images: ``raw(i) -> (encoded bytes, label)``, ``ds[i] -> (CHW float32, label)``."""

    classes = None
    preprocess = Preprocess.original(DEFAULT_IMG_SIZE)
    kind = "dataset"

    @property
    def img_size(self):
        """The model input size (H = W) this dataset's preprocessing makes."""
        return self.preprocess.img_size

    def __len__(self):
        raise NotImplementedError

    def raw(self, index):
        raise NotImplementedError

    def name(self, index):
        return "%s[%d]" % (self.path, index)

    def label(self, index):
        return self.raw(index)[1]

    def labels(self):
        """Every image's label, in index order (cheaper than :meth:`raw` where the format allows)."""
        return [int(self.label(i)) for i in range(len(self))]

    def image(self, index):
        data, _ = self.raw(index)
        return decode_image(data, self.name(index))

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        data, label = self.raw(index)
        return self.preprocess(decode_image(data, self.name(index))), int(label)

    def describe(self):
        return "%s %s (%d images%s)" % (self.kind, self.path, len(self),
                                        ", %d classes" % len(self.classes) if self.classes else "")


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _is_image_file(name):
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def scan_image_folder(root):
    """``(samples, classes)`` of an image folder: sub-folders sorted by name -> label 0..K-1, files sorted."""
    if not os.path.isdir(root):
        raise UserError("image folder not found: %s" % root)
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise UserError("%s has no class sub-folders (expected <root>/<class name>/<image files>; for a flat "
                        "folder pass a label file)" % root)
    samples = []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if _is_image_file(fn):
                    samples.append((os.path.join(dirpath, fn), label))
    if not samples:
        raise UserError("no image files (%s) found under %s" % (", ".join(IMG_EXTENSIONS), root))
    return samples, classes


def read_label_file(path):
    """``[(file name, label)]`` from lines ``<file name> <int label>`` (whitespace or comma separated; '#' comments)."""
    if not os.path.isfile(path):
        raise UserError("label file not found: %s" % path)
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            try:
                if len(parts) != 2:
                    raise ValueError
                out.append((parts[0], int(parts[1])))
            except ValueError:
                raise UserError("%s:%d: expected '<file name> <integer label>', got %r" % (path, lineno, line))
    if not out:
        raise UserError("label file %s lists no images" % path)
    return out


class ImageFolderDataset(Dataset):
    kind = "image folder"

    def __init__(self, root, img_size=None, preprocess=None):
        self.path = root
        self.preprocess = resolve_preprocess(img_size, preprocess)
        self.samples, self.classes = scan_image_folder(root)

    def __len__(self):
        return len(self.samples)

    def name(self, index):
        return self.samples[index][0]

    def raw(self, index):
        path, label = self.samples[index]
        return _read_bytes(path), label

    def label(self, index):
        return self.samples[index][1]

    def labels(self):
        return [int(lab) for _, lab in self.samples]


class LabelFileDataset(ImageFolderDataset):
    kind = "image folder + label file"

    def __init__(self, root, label_file, img_size=None, preprocess=None):
        if not os.path.isdir(root):
            raise UserError("image folder not found: %s" % root)
        self.path = root
        self.preprocess = resolve_preprocess(img_size, preprocess)
        entries = read_label_file(label_file)
        missing = [n for n, _ in entries if not os.path.isfile(os.path.join(root, n))]
        if missing:
            raise UserError("%d file(s) named in %s are not in %s (first: %s)"
                            % (len(missing), label_file, root, missing[0]))
        self.samples = [(os.path.join(root, n), lab) for n, lab in entries]
        self.classes = None


def _import_lmdb():
    try:
        import lmdb
    except ImportError:
        raise UserError("reading/writing LMDB needs the lmdb package (pip install lmdb), or pass an image folder")
    return lmdb


def _open_env(path, readonly=True):
    lmdb = _import_lmdb()
    if not os.path.exists(path):
        raise UserError("LMDB not found: %s" % path)
    try:
        return lmdb.open(path, subdir=os.path.isdir(path), readonly=readonly, lock=False, readahead=False,
                         meminit=False, max_readers=64)
    except lmdb.Error as e:
        raise UserError("%s is not a readable LMDB: %s" % (path, e))


_ENVS = {}
_ENVS_LOCK = threading.Lock()


def shared_env(path):
    """One read-only environment per (process, LMDB path): py-lmdb refuses to open the same path twice in a
    process, and an environment must not be used across fork()."""
    key = (os.getpid(), os.path.realpath(path))
    with _ENVS_LOCK:
        env = _ENVS.get(key)
        if env is None:
            env = _ENVS[key] = _open_env(path)
        return env


def release_env(path):
    """Close and forget this process's shared environment of ``path`` (before it is replaced on disk)."""
    key = (os.getpid(), os.path.realpath(path))
    with _ENVS_LOCK:
        env = _ENVS.pop(key, None)
    if env is not None:
        env.close()


class LmdbDataset(Dataset):
    """This toolkit's LMDB format (see the module docstring).  Opens its environment lazily, once per process."""

    kind = "LMDB"

    def __init__(self, path, img_size=None, preprocess=None):
        self.path = path
        self.preprocess = resolve_preprocess(img_size, preprocess)
        with shared_env(path).begin() as txn:
            meta_raw = txn.get(b"__meta__")
            len_raw = txn.get(b"__len__")
        meta = _parse_meta(meta_raw)
        if meta is None:
            raise UserError("%s is not in the toolkit's LMDB format (no valid __meta__ key)" % path)
        try:
            self.length = int(json.loads(len_raw.decode("ascii")))
        except (AttributeError, ValueError, UnicodeDecodeError):
            raise UserError("%s: __len__ is missing or not a JSON integer" % path)
        self.meta = meta
        self.classes = meta.get("classes") or None

    def __len__(self):
        return self.length

    def raw(self, index):
        if not 0 <= index < self.length:
            raise IndexError(index)
        with shared_env(self.path).begin() as txn:
            value = txn.get((KEY_FORMAT % index).encode("ascii"))
        if value is None or len(value) < LABEL_HEADER.size:
            raise UserError("%s: record %d is missing or truncated" % (self.path, index))
        value = bytes(value)
        return value[LABEL_HEADER.size:], LABEL_HEADER.unpack_from(value)[0]

    def labels(self):
        """The labels from the records' 8-byte headers (no image bytes are copied)."""
        out = []
        with shared_env(self.path).begin(buffers=True) as txn:
            for i in range(self.length):
                value = txn.get((KEY_FORMAT % i).encode("ascii"))
                if value is None or len(value) < LABEL_HEADER.size:
                    raise UserError("%s: record %d is missing or truncated" % (self.path, i))
                out.append(int(LABEL_HEADER.unpack_from(bytes(value[:LABEL_HEADER.size]))[0]))
        return out


class LegacyLmdbDataset(Dataset):
    """pytorch_lmdb_imagenet's pyarrow-serialised LMDB (``pa.serialize((image bytes, label))``, ``__keys__``)."""

    kind = "legacy (pyarrow) LMDB"

    def __init__(self, path, img_size=None, preprocess=None):
        self.path = path
        self.preprocess = resolve_preprocess(img_size, preprocess)
        with shared_env(path).begin() as txn:
            keys_raw = txn.get(b"__keys__")
        self._deserialize = legacy_deserializer(path, keys_raw)
        self.keys = list(self._deserialize(keys_raw))

    def __len__(self):
        return len(self.keys)

    def raw(self, index):
        with shared_env(self.path).begin() as txn:
            value = txn.get(self.keys[index])
        if value is None:
            raise UserError("%s: record %r is missing" % (self.path, self.keys[index]))
        img, label = self._deserialize(bytes(value))[:2]
        return bytes(img), int(label)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_deserialize"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._deserialize = legacy_deserializer(self.path, None)


def _is_pickle(raw):
    return raw is not None and len(raw) >= 2 and raw[:1] == b"\x80" and 2 <= bytearray(raw[1:2])[0] <= 5


def legacy_deserializer(path, sample=None):
    """Return ``pyarrow.deserialize`` for a legacy LMDB, or raise a UserError that says how to convert it."""
    if sample is not None and _is_pickle(sample):
        raise UserError("%s stores pickled records (a later pytorch_lmdb_imagenet format); this toolkit never "
                        "unpickles data files: %s" % (path, CONVERT_HINT))
    try:
        import pyarrow
    except ImportError:
        pyarrow = None
    deserialize = getattr(pyarrow, "deserialize", None) if pyarrow is not None else None
    if deserialize is None:
        have = "pyarrow %s has no pyarrow.deserialize (removed in newer pyarrow releases)" % pyarrow.__version__ \
            if pyarrow is not None else "pyarrow is not installed"
        raise UserError("%s is a legacy pyarrow-serialised LMDB (pytorch_lmdb_imagenet), which needs an old pyarrow "
                        "with pyarrow.deserialize (< 12; %s): %s" % (path, have, CONVERT_HINT))
    return deserialize


def _parse_meta(raw):
    if raw is None:
        return None
    try:
        meta = json.loads(bytes(raw).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != LMDB_FORMAT:
        return None
    if int(meta.get("version", 0)) > LMDB_VERSION:
        raise UserError("LMDB format version %s is newer than this toolkit reads (%d)"
                        % (meta.get("version"), LMDB_VERSION))
    return meta


def _is_lmdb(path):
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "data.mdb"))
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(32)
        # LMDB meta page: magic 0xBEEFC0DE (little-endian) at offset 16 on 64-bit builds
        return len(head) >= 20 and head[16:20] == b"\xde\xc0\xef\xbe"
    return False


def open_lmdb(path, img_size=None, preprocess=None):
    """Open an LMDB in the toolkit's format, or a legacy one where it can be read (else a UserError).
    ``preprocess``/``img_size``: as :func:`open_dataset`."""
    with shared_env(path).begin() as txn:
        meta_raw = txn.get(b"__meta__")
        keys_raw = txn.get(b"__keys__")
    if _parse_meta(meta_raw) is not None:
        return LmdbDataset(path, img_size, preprocess)
    if keys_raw is not None:
        return LegacyLmdbDataset(path, img_size, preprocess)
    raise UserError("%s is an LMDB in an unknown layout (neither __meta__ nor __keys__): %s" % (path, CONVERT_HINT))


def open_dataset(path, label_file=None, img_size=None, preprocess=None):
    """LMDB (either format), image folder with class sub-folders, or flat folder + ``label_file``.

    ``preprocess``: the model's preprocessing (a Preprocess or its dict); ``img_size`` alone: the original
    project's at that size; neither: the original's at 256 (see the module docstring)."""
    if not path or not os.path.exists(path):
        raise UserError("data path not found: %s" % path)
    if label_file:
        return LabelFileDataset(path, label_file, img_size, preprocess)
    if _is_lmdb(path):
        return open_lmdb(path, img_size, preprocess)
    if os.path.isdir(path):
        return ImageFolderDataset(path, img_size, preprocess)
    raise UserError("%s is neither an LMDB nor an image folder" % path)


class Subset(Dataset):
    def __init__(self, base, indices, what=None):
        self.base = base
        self.indices = list(indices)
        self.what = what  # how describe() names the subset (default: as its base, with its own count)
        self.path = base.path
        self.classes = base.classes
        self.preprocess = base.preprocess
        self.kind = base.kind

    def __len__(self):
        return len(self.indices)

    def raw(self, index):
        return self.base.raw(self.indices[index])

    def name(self, index):
        return self.base.name(self.indices[index])

    def label(self, index):
        return self.base.label(self.indices[index])

    def labels(self):
        base = self.base.labels()
        return [base[i] for i in self.indices]

    def describe(self):
        if self.what:
            return "%s (%d images)" % (self.what, len(self))
        return super(Subset, self).describe()


def with_preprocess(ds, preprocess):
    """``ds`` (a dataset or Subset) reading its images with another preprocessing, without re-opening it."""
    import copy

    out = copy.copy(ds)
    out.preprocess = Preprocess.coerce(preprocess)
    if isinstance(out, Subset):
        out.base = with_preprocess(ds.base, preprocess)
    return out


def limit_dataset(ds, limit):
    """The first ``limit`` images (``None``/0: all).  For an evaluation subset see :func:`stratified_subset`:
    datasets are stored class by class, so the first N images are a few classes only."""
    if limit and limit < len(ds):
        return Subset(ds, range(limit))
    return ds


def stratified_subset(ds, limit, seed=0):
    """``(subset, info)``: ``limit`` images of ``ds`` spread over its classes as evenly as possible (every class
    gets ``limit // K`` or one more, a class with fewer images gives all it has), each class's pick a seeded
    random one, the subset in dataset order.  With fewer images than classes, a seeded random choice of
    ``limit`` classes is covered (one image each).  ``limit`` None/0 or >= len(ds): ``ds`` itself.

    ``info``: ``{"limit", "of", "seed", "classes_total", "classes_covered", "per_class": {label: n},
    "per_class_min", "per_class_max", "description"}``."""
    import numpy as np

    n = len(ds)
    labels = np.asarray(ds.labels(), dtype=np.int64)
    all_classes = sorted(set(labels.tolist()))
    if not limit or limit >= n:
        counts = {int(c): int((labels == c).sum()) for c in all_classes}
        return ds, _subset_info(n, n, seed, all_classes, counts, subset=False)
    rng = np.random.default_rng(seed)
    class_order = [all_classes[i] for i in rng.permutation(len(all_classes))]
    pools = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in all_classes}
    picked, counts, depth = [], {}, 0
    while len(picked) < limit:
        took = False
        for c in class_order:                  # round robin: class by class, one image per round
            if depth < len(pools[c]) and len(picked) < limit:
                picked.append(pools[c][depth])
                counts[int(c)] = counts.get(int(c), 0) + 1
                took = True
        if not took:
            break
        depth += 1
    return Subset(ds, sorted(picked)), _subset_info(len(picked), n, seed, all_classes, counts, subset=True)


def split_halves(ds, seed=0):
    """``(a, b)``: ``ds`` split into two disjoint halves that together hold every image, each class split in two
    (a seeded random half of its images in ``a``; of a class with an odd count the extra image goes to ``a`` and
    ``b`` in turn), both in dataset order.  One half chooses (the float layers of a mixed INT8 graph), the other
    reports a result the choice never saw."""
    import numpy as np

    if len(ds) < 2:
        raise UserError("cannot split %s into two halves: %d image(s)" % (ds.describe(), len(ds)))
    labels = np.asarray(ds.labels(), dtype=np.int64)
    rng = np.random.default_rng(seed)
    a, odd = [], 0
    for c in sorted(set(labels.tolist())):
        pool = rng.permutation(np.flatnonzero(labels == c)).tolist()
        take = len(pool) // 2
        if len(pool) % 2:
            take += odd
            odd = 1 - odd
        a += pool[:take]
    taken = set(a)
    what = "half %%s of %s (split seed %d)" % (ds.describe(), seed)
    return (Subset(ds, sorted(a), what=what % "A"),
            Subset(ds, [i for i in range(len(ds)) if i not in taken], what=what % "B"))


def _subset_info(count, of, seed, all_classes, counts, subset):
    per = sorted(counts.values()) or [0]
    covered = len(counts)
    if per[0] == per[-1]:
        each = "%d per class" % per[0]
    else:
        each = "%d to %d per class" % (per[0], per[-1])
    if subset:
        desc = "%d of %d images, stratified by class (seed %d): %d of %d classes, %s" % (
            count, of, seed, covered, len(all_classes), each)
        if covered < len(all_classes):
            desc += " (%d classes not evaluated)" % (len(all_classes) - covered)
    else:
        desc = "all %d images: %d classes, %s" % (count, covered, each)
    if covered <= 20:
        desc += " [%s]" % ", ".join("%d: %d" % (c, counts[c]) for c in sorted(counts))
    return {"limit": count if subset else None, "of": of, "seed": seed, "classes_total": len(all_classes),
            "classes_covered": covered, "per_class": {str(c): counts[c] for c in sorted(counts)},
            "per_class_min": per[0], "per_class_max": per[-1], "description": desc}


def sample_indices(n, count, seed=0, exclude=()):
    """``count`` distinct indices of ``range(n)`` (minus ``exclude``) in a seeded random order: a fixed,
    class-balanced-in-expectation pick from a dataset stored class by class."""
    import numpy as np

    excl = set(int(i) for i in exclude)
    order = [int(i) for i in np.random.default_rng(seed).permutation(n) if int(i) not in excl]
    if count > len(order):
        raise UserError("asked for %d images but only %d are available" % (count, len(order)))
    return order[:count]


def iter_batches(ds, batch, limit=None, workers=None, show_progress=False, desc="images"):
    """Yield ``(inputs [b,3,S,S] float32, labels [b] int64, first index)`` in dataset order; the last batch may be
    short.  Decoding/resizing runs on a thread pool (PIL releases the GIL)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    ds = limit_dataset(ds, limit)
    n = len(ds)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    starts = list(range(0, n, batch))
    bar = progress(range(n), total=n, desc=desc, enabled=show_progress, unit="img")
    bar_iter = iter(bar)

    def load(start):
        items = [ds[i] for i in range(start, min(start + batch, n))]
        return (np.stack([x for x, _ in items]), np.asarray([y for _, y in items], dtype=np.int64), start)

    try:
        if workers <= 1:
            for s in starts:
                out = load(s)
                _advance(bar_iter, len(out[1]))
                yield out
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = []
            it = iter(starts)
            for s in it:
                pending.append(pool.submit(load, s))
                if len(pending) >= workers * 2:
                    break
            while pending:
                out = pending.pop(0).result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(load, nxt))
                _advance(bar_iter, len(out[1]))
                yield out
    finally:
        close = getattr(bar, "close", None)
        if close is not None:
            close()


def _advance(bar_iter, k):
    for _ in range(k):
        next(bar_iter, None)
