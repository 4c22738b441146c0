"""The engine sidecar ``<engine>.json``: its one owner (path, write, read, version check).

build.py writes it after every engine build; runtime.py reads it before loading an engine (plugin libraries,
precision, graph-capture readiness) and refuses an engine another TensorRT built.  Fields are listed where they are
made (``build._build_engine``); ``FORMAT`` names the layout.

``preprocess`` (:data:`PREPROCESS_KEY`) is the model's input preprocessing (:meth:`mobilevit_trt.preprocess.
Preprocess.to_dict`, or None when the ONNX recorded none): the builder sets it to :func:`preprocess_record` of the
ONNX it built from; :func:`engine_preprocess` reads it back for the accuracy and calibration runs.
"""
import json
import os

from .errors import UserError
from .fileio import write_json

FORMAT = "mobilevit_trt.engine/1"
#: the sidecar key holding the model's preprocessing (a Preprocess dict, or None: unknown)
PREPROCESS_KEY = "preprocess"


def path_of(engine_path):
    return engine_path + ".json"


def write(engine_path, meta):
    """Write ``meta`` (whose ``format`` is FORMAT) atomically beside the engine; return the sidecar path."""
    if meta.get("format") != FORMAT:
        raise ValueError("an engine sidecar has format %r, got %r" % (FORMAT, meta.get("format")))
    p = path_of(engine_path)
    write_json(p, meta)
    return p


def read(engine_path):
    """The sidecar dict, or None when there is none; UserError when it is not valid JSON."""
    p = path_of(engine_path)
    if not os.path.isfile(p):
        return None
    try:
        with open(p) as f:
            meta = json.load(f)
    except ValueError as e:
        raise UserError("engine sidecar %s is not valid JSON (%s)" % (p, e))
    if not isinstance(meta, dict):
        raise UserError("engine sidecar %s is not an engine description (a JSON object)" % p)
    return meta


def check_version(api, meta, engine_path):
    """UserError when the sidecar says another TensorRT (flavour or version) built the engine."""
    if not meta:
        return
    built = meta.get("tensorrt") or {}
    if built.get("flavour") != api.flavour or built.get("version") != api.version:
        from .trt_compat import flavour_name
        name = flavour_name(built.get("flavour"))
        raise UserError("%s was built by %s %s; this is %s: rebuild it with convert_to_trt.py (engines only load "
                        "in the TensorRT version that built them)" % (engine_path, name, built.get("version", "?"),
                                                                      api.display_name))


def preprocess_record(onnx_or_preprocess):
    """What the sidecar records under :data:`PREPROCESS_KEY`: the preprocessing of an ONNX file (its metadata) or
    a given Preprocess / dict, as a JSON-ready dict; None when the ONNX records none."""
    from .preprocess import Preprocess

    if onnx_or_preprocess is None:
        return None
    if isinstance(onnx_or_preprocess, str):
        pp = Preprocess.from_onnx(onnx_or_preprocess)
    else:
        pp = Preprocess.coerce(onnx_or_preprocess)
    return None if pp is None else pp.to_dict()


def preprocess_of(meta, where="engine sidecar"):
    """The Preprocess a sidecar dict records, or None (no sidecar, no key, or null); UserError when invalid."""
    from .preprocess import Preprocess

    if not meta or meta.get(PREPROCESS_KEY) is None:
        return None
    try:
        return Preprocess.coerce(meta[PREPROCESS_KEY])
    except UserError as e:
        raise UserError("%s: its '%s' record is invalid: %s" % (where, PREPROCESS_KEY, e))


def engine_preprocess(engine_path, meta=None):
    """``(Preprocess or None, where it came from)`` for an engine: its sidecar's record; for a sidecar written
    before the record existed, the metadata of the ONNX it was built from when that file is still there
    unchanged (same sha256)."""
    if meta is None:
        meta = read(engine_path)
    p = path_of(engine_path)
    if meta is None:
        return None, "%s (no sidecar %s)" % (engine_path, p)
    pp = preprocess_of(meta, p)
    if pp is not None:
        return pp, "engine sidecar %s" % p
    src = meta.get("source_onnx") or {}
    path, digest = src.get("path"), src.get("sha256")
    if PREPROCESS_KEY not in meta and path and os.path.isfile(path) and digest:
        from .fileio import sha256_file
        from .preprocess import Preprocess
        if sha256_file(path) == digest:
            pp = Preprocess.from_onnx(path)
            if pp is not None:
                return pp, "ONNX metadata of %s (the engine's source; its sidecar %s predates the record)" % (path, p)
    return None, "engine sidecar %s" % p
