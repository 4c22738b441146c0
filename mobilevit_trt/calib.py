"""Calibration data and TensorRT's implicit INT8 calibrators (8.x-10.x), with a cache that is never stale.

The calibration cache written by TensorRT is keyed by the ONNX file's sha256, the calibrator and the TensorRT
version: a key file ``<cache>.key.json`` sits beside it, and a cache whose key does not match is ignored (and
overwritten after recalibrating), so a cache made for another model or calibrator is never reused.
"""
import json
import os

from .errors import UserError
from .fileio import write_bytes, write_json

CALIBRATOR_CHOICES = ("entropy2", "minmax")
#: calibrator name (CLI) -> ONNX Runtime method name used for Q/DQ calibration
QDQ_METHOD = {"entropy2": "entropy", "minmax": "minmax"}


#: images taken from an image folder or LMDB when --calib-limit is not given
DEFAULT_DATASET_IMAGES = 256


def default_calibration_source(log=print):
    """The default dataset's training split (never the held-out split the accuracy is measured on); made first
    (a few seconds, from the wheel that ships it) when it is not there yet."""
    from . import data
    try:
        return data.default_split("train")
    except UserError:
        pass
    root = data.default_root()
    log("the default dataset is not there: making it in %s" % root)
    try:
        data.make_default_dataset(root, show_progress=False)
    except (ImportError, OSError) as e:
        raise UserError("cannot make the default dataset in %s (%s)" % (root, e))
    return data.default_split("train")


def model_preprocess(onnx_path):
    """``(Preprocess or None, origin)`` the ONNX to calibrate records in its metadata (the builder passes it to
    :func:`load_calibration_data` as ``preprocess=``)."""
    from .preprocess import Preprocess
    return Preprocess.from_onnx(onnx_path), "ONNX metadata of %s" % onnx_path


def load_calibration_data(path, limit=None, img_size=None, seed=0, preprocess=None, origin=None, log=print):
    """[N,3,H,W] float32 calibration inputs: an .npz holding ``input`` (e.g. benchmark/data/calibration.npz), or
    an image folder / LMDB read and preprocessed by mobilevit_trt.data (a seeded sample of ``limit`` images,
    default 256: datasets are stored class by class, so the first N would be a few classes only).

    ``preprocess``: the model's preprocessing (a Preprocess or its dict; :func:`model_preprocess` of the ONNX),
    ``origin`` where it came from; ``img_size``: the model's input size (the ONNX input; default: the
    preprocessing's own, else 256).  An image folder is preprocessed with it (None: unknown -> one WARNING line
    and the original project's transform at ``img_size``); the one used is printed.  An .npz written by
    benchmark/gen_test_data.py records the preprocessing it was made with (``preprocess``): UserError when it
    differs from the model's."""
    import numpy as np
    from .preprocess import Preprocess, resolve
    if path is None:
        return None
    if not os.path.exists(path):
        raise UserError("calibration data not found: %s" % path)
    if os.path.isdir(path) or not path.endswith(".npz"):
        from . import data
        pp = resolve(preprocess, origin or "the model being calibrated", img_size=img_size, log=log)
        log("calibration images from %s, preprocessed: %s" % (path, pp.describe()))
        ds = data.open_dataset(path, preprocess=pp)
        n = min(len(ds), limit or DEFAULT_DATASET_IMAGES)
        if n == 0:
            raise UserError("no images in %s" % path)
        pick = data.Subset(ds, sorted(data.sample_indices(len(ds), n, seed)))
        x = np.concatenate([x for x, _, _ in data.iter_batches(pick, 32, show_progress=True,
                                                                desc="calibration images")])
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "input" not in z.files:
                    raise UserError("%s has no 'input' array (found: %s)" % (path, ", ".join(z.files) or "nothing"))
                x = z["input"]
                stored = str(z["preprocess"][()]) if "preprocess" in z.files else None
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated zip (BadZipFile, EOFError), bad header (ValueError), I/O
            raise UserError("%s is not a readable .npz file (%s); regenerate it with benchmark/gen_test_data.py"
                            % (path, str(e).strip() or "truncated, or not a zip archive"))
        _check_npz_preprocess(path, stored, Preprocess.coerce(preprocess), origin, log)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
        raise UserError("calibration data must be [N,3,H,W] with N > 0, got %s from %s" % (x.shape, path))
    if limit:
        x = x[:limit]
    return x


def _check_npz_preprocess(path, stored, model_pp, origin, log):
    from .preprocess import Preprocess
    data_pp = Preprocess.coerce(stored) if stored else None
    if data_pp is None:
        log("calibration inputs %s: already preprocessed; the file records no preprocessing%s" % (
            path, ", so it cannot be checked against the model's (%s)" % model_pp.describe() if model_pp else ""))
        return
    if model_pp is not None and not data_pp.same_transform(model_pp):
        raise UserError("calibration inputs %s were preprocessed as %s, but the model expects %s (%s): regenerate "
                        "them with the model's preprocessing (benchmark/gen_test_data.py)"
                        % (path, data_pp.describe(), model_pp.describe(), origin or "its record"))
    log("calibration inputs %s: preprocessed as %s" % (path, data_pp.describe()))


class CalibrationCache(object):
    """A TensorRT calibration cache file plus its key (ONNX sha256, calibrator, TensorRT version, batch)."""

    def __init__(self, path, onnx_sha256, calibrator, trt_version, batch, log=print):
        self.path = path
        self.key = {"onnx_sha256": onnx_sha256, "calibrator": calibrator, "tensorrt": trt_version, "batch": batch}
        self.log = log
        self.used = False
        self.written = False

    @property
    def key_path(self):
        return self.path + ".key.json"

    def stored_key(self):
        try:
            with open(self.key_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def valid(self):
        return os.path.isfile(self.path) and self.stored_key() == self.key

    def read(self):
        if not os.path.isfile(self.path):
            return None
        stored = self.stored_key()
        if stored != self.key:
            diff = sorted(k for k in self.key if (stored or {}).get(k) != self.key[k])
            self.log("calibration cache %s is stale (%s differ%s): recalibrating" % (
                self.path, ", ".join(diff) if stored else "no key file", "s" if len(diff) == 1 else ""))
            return None
        data = self.verified_bytes()
        self.used = True
        self.log("using calibration cache %s (%d bytes)" % (self.path, len(data)))
        return data

    def verified_bytes(self):
        """The cache file's bytes; UserError when they are not a TensorRT calibration cache (TensorRT would
        reject it, or worse read it, deep inside the build: build.py calls this before building)."""
        with open(self.path, "rb") as f:
            data = f.read()
        problem = cache_problem(data)
        if problem:
            raise UserError("calibration cache %s is not a TensorRT calibration cache (%s); delete it (and %s) to "
                            "recalibrate" % (self.path, problem, self.key_path))
        return data

    def write(self, data):
        write_bytes(self.path, bytes(data))
        write_json(self.key_path, self.key)
        self.written = True


def cache_problem(data):
    """Why ``data`` is not a TensorRT calibration cache, or None.  The cache is text: a header line
    ``TRT-<version>-<Calibrator>`` then ``<tensor name>: <hex scale>`` lines (TensorRT writes it through
    writeCalibrationCache; e.g. ``TRT-8601-EntropyCalibration2``)."""
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError:
        return "not text"
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TRT-"):
        return "no 'TRT-<version>-<calibrator>' header line"
    for line in lines[1:]:
        if line.strip() and ":" not in line:
            return "line %r is not '<tensor>: <scale>'" % line[:60]
    return None


class CalibrationFailed(UserError):
    """An exception inside a calibrator callback, re-raised after the build (see make_calibrator)."""


def make_calibrator(api, algo, inputs, batch, cache, input_name="input", progress=True):
    """A TensorRT calibrator (Entropy2 or MinMax) feeding ``inputs`` in batches of ``batch`` from one device
    buffer; ``inputs`` may be None when ``cache`` is valid.

    Everything that can fail -- the CUDA backend, the device and pinned buffers, the stream, imports -- happens
    here, before the build, not in TensorRT's callbacks: on 8.2 ``getBatch`` is ``noexcept`` and calls Python
    without a try/catch (python/src/infer/pyInt8.cpp at tag 22.04), so any exception there is std::terminate;
    on 8.6+ the binding catches it, prints "[ERROR] Exception caught in get_batch()" and returns false, which
    TensorRT reads as "no more batches" -- a silently truncated calibration.  The callbacks therefore catch
    every exception, record it, and end the calibration; :meth:`Calibrator.raise_if_failed` (called by
    build.py after ``build_serialized_network``) re-raises it as one clear error."""
    from . import trt_compat
    base = trt_compat.calibrator_base(api, algo)
    cal = _calibrator_class(base)(inputs, batch, cache, input_name)
    if inputs is not None:
        from . import cuda
        cal.prepare_buffers(cuda, progress)
    return cal


def _calibrator_class(base):
    class Calibrator(base):
        def __init__(self, inputs, batch, cache, input_name):
            base.__init__(self)
            import numpy as np
            self.inputs, self.batch, self.cache, self.input_name = inputs, int(batch), cache, input_name
            self.n_batches = 0 if inputs is None else len(inputs) // self.batch
            if inputs is not None and self.n_batches == 0:
                raise UserError("calibration needs at least one full batch of %d inputs, got %d"
                                % (self.batch, len(inputs)))
            self._i = 0
            self._dev = self._host = self._stream = None
            self._bar = None
            self._np = np
            self._cuda = None
            self.batches_fed = 0
            self.failure = None  # (callback name, exception) of the first exception in a callback

        # the methods are the module-level _calibrator_* functions below (the MRO stays Calibrator, base)
        prepare_buffers = _calibrator_prepare_buffers
        _fail = _calibrator_fail
        get_batch_size = _calibrator_get_batch_size
        get_batch = _calibrator_get_batch
        _next_batch = _calibrator_next_batch
        read_calibration_cache = _calibrator_read_calibration_cache
        write_calibration_cache = _calibrator_write_calibration_cache
        raise_if_failed = _calibrator_raise_if_failed
        free = _calibrator_free

    return Calibrator


# -- the methods of _calibrator_class's Calibrator ------------------------------------------------------------------

def _calibrator_prepare_buffers(self, cuda, progress=True):
    """Device/pinned buffers and the stream for one batch, made before the build."""
    self._cuda = cuda
    nbytes = self.batch * int(self._np.prod(self.inputs.shape[1:])) * 4
    cuda.backend("INT8 calibration needs a CUDA GPU")
    self._dev = cuda.DeviceBuffer(nbytes)
    self._host = cuda.PinnedBuffer(nbytes)
    self._stream = cuda.Stream()
    if progress:
        from tqdm import tqdm
        self._bar = tqdm(total=self.n_batches, desc="calibrating", unit="batch")


def _calibrator_fail(self, where, exc):
    if self.failure is None:
        self.failure = (where, exc)
    return None


def _calibrator_get_batch_size(self):
    return self.batch


def _calibrator_get_batch(self, names, p_str=None):
    try:
        return self._next_batch()
    except BaseException as e:  # noqa: BLE001 - nothing may escape into TensorRT (see make_calibrator)
        return self._fail("get_batch", e)


def _calibrator_next_batch(self):
    if self.failure is not None or self.inputs is None or self._i >= self.n_batches:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return None
    x = self.inputs[self._i * self.batch:(self._i + 1) * self.batch]
    self._host.view(self._np.float32, x.shape)[...] = x
    self._cuda.memcpy_htod_async(self._dev, self._host, self._stream)
    self._stream.synchronize()
    self._i += 1
    self.batches_fed += 1
    if self._bar is not None:
        self._bar.update(1)
    return [int(self._dev.ptr)]


def _calibrator_read_calibration_cache(self):
    try:
        return None if self.cache is None else self.cache.read()
    except BaseException as e:  # noqa: BLE001
        return self._fail("read_calibration_cache", e)


def _calibrator_write_calibration_cache(self, data):
    try:
        if self.cache is not None and self.failure is None:
            self.cache.write(data)
    except BaseException as e:  # noqa: BLE001
        self._fail("write_calibration_cache", e)


def _calibrator_raise_if_failed(self):
    """After the build: the recorded callback exception as one error (UserErrors keep their text)."""
    if self.failure is None:
        if self.inputs is not None and not (self.cache is not None and self.cache.used) \
                and self.batches_fed < self.n_batches:
            raise CalibrationFailed("TensorRT stopped calibration after %d of %d batches"
                                    % (self.batches_fed, self.n_batches))
        return
    where, e = self.failure
    if isinstance(e, KeyboardInterrupt):
        raise e
    msg = str(e).strip().splitlines()[0] if str(e).strip() else "an error without a message"
    raise CalibrationFailed("calibration failed in %s after %d of %d batches: %s"
                            % (where, self.batches_fed, self.n_batches, msg))


def _calibrator_free(self):
    for obj in (self._dev, self._host):
        if obj is not None:
            obj.free()
    if self._stream is not None:
        self._stream.destroy()
    if self._bar is not None:
        self._bar.close()
    self._dev = self._host = self._stream = self._bar = None
