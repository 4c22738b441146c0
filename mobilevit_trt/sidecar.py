"""The engine sidecar ``<engine>.json``: its one owner (path, write, read, version check).

build.py writes it after every engine build; runtime.py reads it before loading an engine (plugin libraries,
precision, graph-capture readiness) and refuses an engine another TensorRT built.  Fields are listed where they are
made (``build._build_engine``); ``FORMAT`` names the layout.
"""
import json
import os

from .errors import UserError
from .fileio import write_json

FORMAT = "mobilevit_trt.engine/1"


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
