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


def load_calibration_data(path, limit=None, img_size=256):
    """[N,3,H,W] float32 calibration inputs: an .npz holding ``input`` (e.g. benchmark/data/calibration.npz), or
    an image folder / LMDB read and preprocessed by mobilevit_trt.data (first ``limit`` images, default 256)."""
    import numpy as np
    if path is None:
        return None
    if not os.path.exists(path):
        raise UserError("calibration data not found: %s" % path)
    if os.path.isdir(path) or not path.endswith(".npz"):
        from . import data
        ds = data.open_dataset(path, img_size=img_size)
        n = min(len(ds), limit or DEFAULT_DATASET_IMAGES)
        batches = [x for x, _, _ in data.iter_batches(ds, 32, limit=n, show_progress=True,
                                                       desc="calibration images")]
        if not batches:
            raise UserError("no images in %s" % path)
        x = np.concatenate(batches)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "input" not in z.files:
                    raise UserError("%s has no 'input' array (found: %s)" % (path, ", ".join(z.files) or "nothing"))
                x = z["input"]
        except (ValueError, OSError) as e:
            raise UserError("%s is not a readable .npz file (%s)" % (path, e))
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
        raise UserError("calibration data must be [N,3,H,W] with N > 0, got %s from %s" % (x.shape, path))
    if limit:
        x = x[:limit]
    return x


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
        with open(self.path, "rb") as f:
            data = f.read()
        self.used = True
        self.log("using calibration cache %s (%d bytes)" % (self.path, len(data)))
        return data

    def write(self, data):
        write_bytes(self.path, bytes(data))
        write_json(self.key_path, self.key)
        self.written = True


def make_calibrator(api, algo, inputs, batch, cache, input_name="input"):
    """A TensorRT calibrator (Entropy2 or MinMax) feeding ``inputs`` in batches of ``batch`` from one device
    buffer, with a tqdm progress bar; ``inputs`` may be None when ``cache`` is valid."""
    from . import trt_compat
    base = trt_compat.calibrator_base(api, algo)
    return _calibrator_class(base)(inputs, batch, cache, input_name)


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
            self._dev = None
            self._host = None
            self._bar = None
            self._np = np

        def get_batch_size(self):
            return self.batch

        def get_batch(self, names, p_str=None):
            from . import cuda
            if self._i >= self.n_batches:
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None
                return None
            if self._dev is None:
                nbytes = self.batch * int(self._np.prod(self.inputs.shape[1:])) * 4
                self._dev = cuda.DeviceBuffer(nbytes)
                self._host = cuda.PinnedBuffer(nbytes)
                self._stream = cuda.Stream()
                from tqdm import tqdm
                self._bar = tqdm(total=self.n_batches, desc="calibrating", unit="batch")
            x = self.inputs[self._i * self.batch:(self._i + 1) * self.batch]
            self._host.view(self._np.float32, x.shape)[...] = x
            cuda.memcpy_htod_async(self._dev, self._host, self._stream)
            self._stream.synchronize()
            self._i += 1
            self._bar.update(1)
            return [int(self._dev.ptr)]

        def read_calibration_cache(self):
            return None if self.cache is None else self.cache.read()

        def write_calibration_cache(self, data):
            if self.cache is not None:
                self.cache.write(data)

        def free(self):
            for obj in (self._dev, self._host):
                if obj is not None:
                    obj.free()
            if self._dev is not None:
                self._stream.destroy()
            self._dev = self._host = None

    return Calibrator
