"""A Triton Inference Server model repository for an engine, with its ONNX as an ONNX Runtime fallback.

    from mobilevit_trt.triton import repository_for_engine, write_triton_repository
    res = repository_for_engine("target/dyn.trt", "triton_models")     # the engine + the ONNX its sidecar names
    res = write_triton_repository("triton_models", engine_path="target/dyn.trt", onnx_path="target/dyn.onnx")

writes ::

    <out>/<name>/config.pbtxt          platform "tensorrt_plan"
    <out>/<name>/1/model.plan          the engine (its sidecar beside it as model.plan.json)
    <out>/<name>/plugins/*.so          the plugin libraries the sidecar records, if any
    <out>/<name>_onnx/config.pbtxt     platform "onnxruntime_onnx"
    <out>/<name>_onnx/1/model.onnx     the ONNX

Everything a config says comes from the engine sidecar (input name and shape, static batch or profiles) and the
ONNX (output names and shapes, data types).  How the batch is declared follows what Triton's backends check
(triton-inference-server/tensorrt_backend ``src/model_state.cc``, ``src/instance_state.cc``,
``src/tensorrt_utils.cc``; onnxruntime_backend ``src/onnxruntime.cc``, ``src/onnxruntime_utils.cc``):

* **static batch N** (any N, also 1): ``max_batch_size: 0`` and the full shape ``[N, 3, H, W]``: a request is
  exactly one N-image tensor.  With ``max_batch_size > 0`` Triton would send batches of 1..max, and the engine's
  one shape refuses every batch but N when a request arrives (``ValidateDimension`` against the profile's
  MIN/MAX); the ONNX Runtime backend refuses batching outright for a static first dimension ("the first dimension
  must be -1").  Both models of a repository so take the same request.
* **dynamic batch**: ``max_batch_size`` is the largest M such that every batch 1..M lies in some profile (Triton's
  dynamic batcher forms any batch size up to M); dims exclude the batch.  The profiles that serve those batches
  are listed in ``instance_group.profile`` -- without that list the TensorRT backend creates a context for
  profile 0 only (``InitOptimizationProfiles``).  With more than one profile the profiles' OPT batch sizes
  above 1 are the ``preferred_batch_size`` of ``dynamic_batching`` (Triton's model-configuration guide recommends
  it for TensorRT models with several profiles).  No profile admits batch 1: ``max_batch_size: 0`` with dims
  ``[-1, 3, H, W]`` (the client sends whole batches inside the profiles).

Triton's TensorRT backend links TensorRT (libnvinfer): an engine loads only in the tritonserver release with the
TensorRT version that built it, and TensorRT-RTX engines not at all; the config says so in a comment and the
result's ``notes``.  The ONNX fallback serves anywhere (ONNX Runtime, GPU instances by default).

Writing is atomic per repository: both model folders are made in a temporary folder inside ``out_dir`` and renamed
into place; an existing non-empty model folder is refused unless ``overwrite``.
"""
import os
import re
import shutil
import tempfile

from . import sidecar
from .errors import UserError
from .fileio import check_output_folder, sha256_file

PLAN_PLATFORM = "tensorrt_plan"
ONNX_PLATFORM = "onnxruntime_onnx"
#: the fallback model's name is the engine model's name + this
ONNX_SUFFIX = "_onnx"
VERSION = "1"
PLAN_FILE = "model.plan"   # Triton's default_model_filename for tensorrt_plan
ONNX_FILE = "model.onnx"   # ... and for onnxruntime_onnx
CONFIG_FILE = "config.pbtxt"
KINDS = ("KIND_GPU", "KIND_CPU")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

#: ONNX TensorProto element types -> Triton DataType names (model_config.proto)
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                   6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
                   12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}


# -- facts ------------------------------------------------------------------------------------------------------------

def onnx_io(onnx_path):
    """{"inputs": [...], "outputs": [...], "plugins": [op types]}: each tensor {name, dims (-1: symbolic),
    data_type (Triton name)}; UserError for a file that is not a single-input ONNX model."""
    import onnx

    if not onnx_path or not os.path.isfile(onnx_path):
        raise UserError("ONNX file not found: %s" % onnx_path)
    try:
        m = onnx.load(onnx_path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        raise UserError("%s is not a readable ONNX model (%s)" % (onnx_path, (str(e).strip() or "truncated")[:160]))
    inits = set(i.name for i in m.graph.initializer)
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1 or not m.graph.output:
        raise UserError("%s has %d inputs and %d outputs; the Triton repository is for single-input classifiers"
                        % (onnx_path, len(inputs), len(m.graph.output)))

    def tensor(v):
        t = v.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise UserError("%s: tensor %r has ONNX element type %d, which Triton has no type for"
                            % (onnx_path, v.name, t.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
        return {"name": v.name, "dims": dims, "data_type": _ONNX_TO_TRITON[t.elem_type]}

    from .backends import plugin_nodes
    return {"inputs": [tensor(inputs[0])], "outputs": [tensor(o) for o in m.graph.output],
            "plugins": sorted(set(n.op_type for n in plugin_nodes(m)))}


def covered_batch(profiles):
    """The largest M such that every batch size 1..M lies in one of ``profiles`` [(min, opt, max)] (0: batch 1
    is in none)."""
    reach = 0
    for lo, _, hi in sorted(tuple(p) for p in profiles):
        if lo > reach + 1:
            break
        reach = max(reach, hi)
    return reach


def batching(dynamic, static_batch=None, profiles=None, max_batch_size=None, what="the engine"):
    """How a model declares its batch: {"max_batch_size", "profiles" (indices for instance_group, or None),
    "preferred" (dynamic_batching.preferred_batch_size), "full_dims" (dims carry the batch: max_batch_size 0),
    "batch_dim" (the leading dim then: N or -1)}.  See the module docstring for the rules."""
    if max_batch_size is not None and (not isinstance(max_batch_size, int) or max_batch_size < 0):
        raise UserError("max_batch_size must be an integer >= 0, got %r" % (max_batch_size,))
    if not dynamic:
        if max_batch_size:
            raise UserError("max_batch_size %d: %s has a static batch of %d, so Triton serves it with "
                            "max_batch_size 0 and the full input shape (requests of exactly %d images); rebuild "
                            "from a dynamic ONNX for Triton's batching" % (max_batch_size, what, static_batch,
                                                                          static_batch))
        return {"max_batch_size": 0, "profiles": None, "preferred": [], "full_dims": True,
                "batch_dim": int(static_batch)}
    profiles = [tuple(int(v) for v in p) for p in (profiles or [])]
    if not profiles:  # a dynamic ONNX without an engine: ONNX Runtime runs any batch
        m = 8 if max_batch_size is None else max_batch_size
        return {"max_batch_size": m, "profiles": None, "preferred": [], "full_dims": m == 0, "batch_dim": -1}
    cover = covered_batch(profiles)
    span = ", ".join("%d:%d:%d" % p for p in profiles)
    if max_batch_size is None:
        m = cover
    elif max_batch_size > cover:
        raise UserError("max_batch_size %d: the profiles of %s (%s) accept every batch size 1..%d only; Triton's "
                        "dynamic batcher sends any size up to max_batch_size" % (max_batch_size, what, span, cover)
                        if cover else
                        "max_batch_size %d: no profile of %s (%s) accepts batch 1, which Triton's dynamic batcher "
                        "may send; use max_batch_size 0 (the client sends whole batches)"
                        % (max_batch_size, what, span))
    else:
        m = max_batch_size
    if m == 0:  # whole batches from the client, any profile
        used = list(range(len(profiles)))
        preferred = []
    else:
        used = [i for i, p in enumerate(profiles) if p[0] <= m]
        # a preferred size of 1 would dispatch single requests at once: only OPTs above 1
        preferred = sorted(set(profiles[i][1] for i in used if 1 < profiles[i][1] <= m)) if len(used) > 1 else []
    return {"max_batch_size": m, "profiles": used, "preferred": preferred, "full_dims": m == 0, "batch_dim": -1}


# -- config.pbtxt -----------------------------------------------------------------------------------------------------

def _dims_text(dims):
    return "[ %s ]" % ", ".join(str(int(d)) for d in dims)


def _quote(s):
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')


def _tensor_dims(t, plan):
    """Config dims of a tensor: without the batch dimension, or (max_batch_size 0) the full shape."""
    dims = list(t["dims"])
    if plan["full_dims"]:
        return [plan["batch_dim"]] + dims[1:]
    return dims[1:]


def config_text(name, platform, tensors, plan, instances=1, kind="KIND_GPU", dynamic_batching=True,
                max_queue_delay_us=None, comments=()):
    """The ``config.pbtxt`` text (protobuf text format of inference.ModelConfig)."""
    lines = ["# %s" % c for c in comments]
    lines += ["name: %s" % _quote(name), "platform: %s" % _quote(platform),
              "max_batch_size: %d" % plan["max_batch_size"]]
    for key, items in (("input", tensors["inputs"]), ("output", tensors["outputs"])):
        lines.append("%s [" % key)
        for i, t in enumerate(items):
            lines += ["  {", "    name: %s" % _quote(t["name"]), "    data_type: %s" % t["data_type"],
                      "    dims: %s" % _dims_text(_tensor_dims(t, plan)), "  }%s" % ("," if i + 1 < len(items) else "")]
        lines.append("]")
    if dynamic_batching and plan["max_batch_size"] > 1:
        body = []
        if plan["preferred"]:
            body.append("  preferred_batch_size: %s" % _dims_text(plan["preferred"]))
        if max_queue_delay_us is not None:
            body.append("  max_queue_delay_microseconds: %d" % int(max_queue_delay_us))
        lines += ["dynamic_batching {"] + body + ["}"]
    group = ["  {", "    count: %d" % instances, "    kind: %s" % kind]
    if platform == PLAN_PLATFORM and plan.get("profiles") and plan["profiles"] != [0]:  # profile 0 is the default
        group.append("    profile: [ %s ]" % ", ".join(_quote(p) for p in plan["profiles"]))
    lines += ["instance_group ["] + group + ["  }", "]"]
    return "\n".join(lines) + "\n"


# -- the repository ---------------------------------------------------------------------------------------------------

def _check_name(name, what="model_name"):
    if not isinstance(name, str) or not _MODEL_NAME.match(name) or name in (".", ".."):
        raise UserError("%s %r is not a usable Triton model name (letters, digits, '_', '.', '-'; not starting with "
                        "'.' or '-')" % (what, name))
    return name


def model_names(model_name="mobilevit", onnx_model_name=None):
    """(engine model name, ONNX fallback model name)."""
    return model_name, onnx_model_name or model_name + ONNX_SUFFIX


def check_repository(out_dir, names, overwrite=False, what="the Triton repository"):
    """UserError unless ``out_dir`` can hold the model folders ``names`` (each absent, empty, or ``overwrite``);
    called before any work (the build command calls it before building)."""
    check_output_folder(out_dir, what)
    for n in names:
        _check_name(n)
        p = os.path.join(out_dir, n)
        if os.path.lexists(p):
            if not os.path.isdir(p) or os.path.islink(p):
                raise UserError("%s exists and is not a folder: remove it or choose another model name" % p)
            if os.listdir(p) and not overwrite:
                raise UserError("model folder %s exists and is not empty: pass overwrite (--triton-overwrite) to "
                                "replace it, or choose another model name or folder" % p)


def _engine_facts(engine_path):
    if not engine_path or not os.path.isfile(engine_path):
        raise UserError("engine not found: %s" % engine_path)
    meta = sidecar.read(engine_path)
    if meta is None:
        raise UserError("%s has no sidecar %s: the Triton config is made from it; rebuild the engine with "
                        "convert_to_trt.py" % (engine_path, sidecar.path_of(engine_path)))
    missing = [k for k in ("input", "dynamic", "profiles") if k not in meta]
    if meta.get("format") != sidecar.FORMAT or missing:
        raise UserError("%s is not an engine sidecar of this toolkit (format %r%s)" % (
            sidecar.path_of(engine_path), meta.get("format"), ", missing " + ", ".join(missing) if missing else ""))
    digest = meta.get("engine_sha256")
    if digest and sha256_file(engine_path) != digest:
        raise UserError("%s changed since its sidecar %s was written (sha256 differs): rebuild it" % (
            engine_path, sidecar.path_of(engine_path)))
    return meta


def _runtime_notes(meta):
    trt = meta.get("tensorrt") or {}
    version = trt.get("version", "?")
    if trt.get("flavour") == "tensorrt_rtx":
        return ["built by TensorRT-RTX %s: Triton's TensorRT backend links TensorRT (libnvinfer) and cannot load "
                "it; rebuild with the TensorRT of the tritonserver release you serve with, or serve the ONNX "
                "fallback" % version]
    return ["built by TensorRT %s: serve it with the tritonserver release that ships TensorRT %s (engines load "
            "only in the TensorRT version that built them)" % (version, version)]


def _check_same_model(meta, io, engine_path, onnx_path):
    inp, t = meta["input"], io["inputs"][0]
    problems = []
    if inp.get("name") != t["name"]:
        problems.append("input %r, the engine's is %r" % (t["name"], inp.get("name")))
    if list(inp.get("shape", []))[1:] != t["dims"][1:]:
        problems.append("input shape %s, the engine's is %s" % (t["dims"], inp.get("shape")))
    if bool(meta["dynamic"]) != (t["dims"][0] == -1) or (not meta["dynamic"] and t["dims"][0] != meta.get("batch")):
        problems.append("batch %s, the engine's is %s" % ("dynamic" if t["dims"][0] == -1 else t["dims"][0],
                                                          "dynamic" if meta["dynamic"] else meta.get("batch")))
    if problems:
        raise UserError("%s is not the ONNX of %s: it has %s" % (onnx_path, engine_path, "; ".join(problems)))


def write_triton_repository(out_dir, engine_path=None, onnx_path=None, model_name="mobilevit", max_batch_size=None,
                            instances=1, onnx_model_name=None, onnx_kind="KIND_GPU", dynamic_batching=True,
                            max_queue_delay_us=None, overwrite=False, log=None):
    """Write the model folders for ``engine_path`` (``<model_name>``) and/or ``onnx_path`` (``<model_name>_onnx``,
    the ONNX Runtime fallback; with an engine it must be the engine's ONNX: same input, shape and batching).

    ``max_batch_size``: None = the most the engine's profiles allow for Triton's batching (a static batch: 0 and
    full dims; an ONNX alone: 8); ``instances``: ``instance_group.count``.  Returns {"root", "models": [{name,
    platform, path, config, max_batch_size, profiles, preferred_batch_size}], "notes": [...], "backend_config"
    (the tritonserver --backend-config for plugin libraries, or None)}.  UserError (one line) for bad input;
    nothing is written then."""
    return _write(out_dir, engine_path, onnx_path, bool(onnx_path), model_name, max_batch_size, instances,
                  onnx_model_name, onnx_kind, dynamic_batching, max_queue_delay_us, overwrite, log)


def _write(out_dir, engine_path, onnx_path, fallback, model_name, max_batch_size, instances, onnx_model_name,
           onnx_kind, dynamic_batching, max_queue_delay_us, overwrite, log):
    """write_triton_repository; ``fallback`` False: ``onnx_path`` only names the engine's outputs."""
    log = log or (lambda *a: None)
    if not engine_path and not onnx_path:
        raise UserError("a Triton repository needs an engine or an ONNX file")
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
        raise UserError("instances must be a positive integer, got %r" % (instances,))
    if onnx_kind not in KINDS:
        raise UserError("onnx_kind %r: choose from %s" % (onnx_kind, ", ".join(KINDS)))
    plan_name, onnx_name = model_names(_check_name(model_name), onnx_model_name)
    _check_name(onnx_name, "onnx_model_name")
    if engine_path and onnx_path and plan_name == onnx_name:
        raise UserError("the engine and ONNX models need different names (both %r)" % plan_name)
    names = ([plan_name] if engine_path else []) + ([onnx_name] if fallback else [])
    check_repository(out_dir, names, overwrite)

    models, notes, backend_config = [], [], None
    io = onnx_io(onnx_path) if onnx_path else None
    if fallback and io["plugins"]:
        raise UserError("%s has TensorRT plugin nodes (%s) that ONNX Runtime cannot run: give the ONNX before "
                        "onnx_add_plugin.py as the fallback, or none" % (onnx_path, ", ".join(io["plugins"])))
    meta = plan = None
    if engine_path:
        meta = _engine_facts(engine_path)
        if io is None:
            raise UserError("the Triton config of %s needs its ONNX (the sidecar records the input, not the "
                            "outputs): pass onnx_path" % engine_path)
        _check_same_model(meta, io, engine_path, onnx_path)
        plan = batching(bool(meta["dynamic"]), meta.get("batch"), meta["profiles"], max_batch_size,
                        what=engine_path)
        notes += _runtime_notes(meta)
        if meta["dynamic"] and covered_batch(meta["profiles"]) == 0:
            notes.append("no profile of %s accepts batch 1: max_batch_size 0, the client sends whole batches "
                         "inside the profiles (%s)" % (engine_path, ", ".join("%d:%d:%d" % tuple(p)
                                                                              for p in meta["profiles"])))
    if fallback:
        dynamic_onnx = io["inputs"][0]["dims"][0] == -1
        if plan is not None:  # the fallback takes the engine's requests
            onnx_plan = dict(plan, profiles=None, preferred=[])
        else:
            onnx_plan = batching(dynamic_onnx, io["inputs"][0]["dims"][0], None, max_batch_size, what=onnx_path)

    folder = os.path.abspath(out_dir)
    os.makedirs(folder, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".mobilevit-triton-", dir=folder)
    try:
        if engine_path:
            d = os.path.join(stage, plan_name)
            os.makedirs(os.path.join(d, VERSION))
            shutil.copyfile(engine_path, os.path.join(d, VERSION, PLAN_FILE))
            shutil.copyfile(sidecar.path_of(engine_path), os.path.join(d, VERSION, PLAN_FILE + ".json"))
            libs = []
            for rec in meta.get("plugins") or []:
                src = rec.get("path")
                if not src or not os.path.isfile(src):
                    raise UserError("plugin library %s (recorded in the sidecar of %s) not found; build it: make -C "
                                    "plugin" % (src, engine_path))
                os.makedirs(os.path.join(d, "plugins"), exist_ok=True)
                shutil.copyfile(src, os.path.join(d, "plugins", os.path.basename(src)))
                libs.append("/models/%s/plugins/%s" % (plan_name, os.path.basename(src)))
            if libs:
                backend_config = 'tensorrt,plugins="%s"' % ";".join(libs)
                notes.append("the engine needs its plugin libraries: run tritonserver with --backend-config=%s "
                             "(paths as mounted at /models)" % backend_config)
            comments = ["Triton model for %s (%s, %s), written by mobilevit_trt.triton from its sidecar and %s"
                        % (os.path.basename(engine_path), meta.get("precision", "?"),
                           "profiles " + ", ".join("%d:%d:%d" % tuple(p) for p in meta["profiles"])
                           if meta["dynamic"] else "static batch %s" % meta.get("batch"),
                           os.path.basename(onnx_path))] + notes[:1]
            text = config_text(plan_name, PLAN_PLATFORM, io, plan, instances, "KIND_GPU", dynamic_batching,
                               max_queue_delay_us, comments)
            with open(os.path.join(d, CONFIG_FILE), "w") as f:
                f.write(text)
            models.append({"name": plan_name, "platform": PLAN_PLATFORM, "max_batch_size": plan["max_batch_size"],
                           "profiles": plan["profiles"], "preferred_batch_size": plan["preferred"]})
        if fallback:
            d = os.path.join(stage, onnx_name)
            os.makedirs(os.path.join(d, VERSION))
            shutil.copyfile(onnx_path, os.path.join(d, VERSION, ONNX_FILE))
            comments = ["ONNX Runtime model for %s, written by mobilevit_trt.triton%s" % (
                os.path.basename(onnx_path), " (the fallback of %s)" % plan_name if engine_path else "")]
            text = config_text(onnx_name, ONNX_PLATFORM, io, onnx_plan, instances, onnx_kind, dynamic_batching,
                               max_queue_delay_us, comments)
            with open(os.path.join(d, CONFIG_FILE), "w") as f:
                f.write(text)
            models.append({"name": onnx_name, "platform": ONNX_PLATFORM, "max_batch_size": onnx_plan["max_batch_size"],
                           "profiles": None, "preferred_batch_size": []})
        for m in models:  # into place: the old folder (empty, or overwrite) goes aside first
            target = os.path.join(folder, m["name"])
            if os.path.isdir(target):
                os.rename(target, os.path.join(stage, ".old-" + m["name"]))
            os.rename(os.path.join(stage, m["name"]), target)
            m["path"] = target
            m["config"] = os.path.join(target, CONFIG_FILE)
            log("Triton model %s (%s, max_batch_size %d) -> %s" % (m["name"], m["platform"], m["max_batch_size"],
                                                                   target))
    except OSError as e:
        raise UserError("cannot write the Triton repository %s: %s" % (folder, e.strerror or e))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for n in notes:
        log("note: " + n)
    return {"root": folder, "models": models, "notes": notes, "backend_config": backend_config}


def repository_for_engine(engine_path, out_dir, model_name="mobilevit", onnx_path=None, fallback=True, log=None,
                          **kwargs):
    """The repository for one engine (the pipeline's chosen engine, convert_to_trt.py --export-triton): its ONNX
    is ``onnx_path`` or the source ONNX its sidecar records (same sha256).  The fallback model is written when
    ``fallback`` and ONNX Runtime can run that ONNX (no plugin nodes); else only the engine model, with a note.
    Other keywords: :func:`write_triton_repository`."""
    log = log or (lambda *a: None)
    meta = _engine_facts(engine_path)
    if onnx_path is None:
        src = meta.get("source_onnx") or {}
        onnx_path = src.get("path")
        if not onnx_path or not os.path.isfile(onnx_path):
            raise UserError("the ONNX %s that %s was built from is gone; pass onnx_path (the Triton config takes "
                            "the outputs from it)" % (onnx_path, engine_path))
        if src.get("sha256") and sha256_file(onnx_path) != src["sha256"]:
            raise UserError("%s changed since %s was built from it (sha256 differs); pass the engine's ONNX as "
                            "onnx_path" % (onnx_path, engine_path))
    plugins = onnx_io(onnx_path)["plugins"]
    if fallback and plugins:
        fallback = False
        log("note: no ONNX Runtime fallback model: %s has TensorRT plugin nodes (%s) that ONNX Runtime cannot run"
            % (onnx_path, ", ".join(plugins)))
    args = dict(max_batch_size=None, instances=1, onnx_model_name=None, onnx_kind="KIND_GPU", dynamic_batching=True,
                max_queue_delay_us=None, overwrite=False)
    unknown = set(kwargs) - set(args)
    if unknown:
        raise TypeError("repository_for_engine() got unexpected keywords: %s" % ", ".join(sorted(unknown)))
    args.update(kwargs)
    res = _write(out_dir, engine_path, onnx_path, fallback, model_name, args["max_batch_size"], args["instances"],
                 args["onnx_model_name"], args["onnx_kind"], args["dynamic_batching"], args["max_queue_delay_us"],
                 args["overwrite"], log)
    if plugins:
        res["notes"].append("no ONNX Runtime fallback: %s has TensorRT plugin nodes (%s)" % (
            onnx_path, ", ".join(plugins)))
    return res
