"""ONNX -> serialized TensorRT engine: network, config, optimization profiles, precision, plugins, sidecar JSON.

All TensorRT differences go through :mod:`trt_compat`; FP16/Q-DQ graph rewriting through :mod:`precision`.
"""
import datetime
import os
import shutil
import tempfile
import platform
import time

from . import plugin_spec, sidecar, trt_compat
from .errors import Unavailable, UserError
from .fileio import check_output_file, sha256_file, write_bytes, write_json

DEFAULT_DYNAMIC_PROFILE = (1, 4, 8)  # the original convert_to_trt.py: min 1, opt 4, max 8
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugin", "build")
#: accuracy checks of the rewritten ONNX against the FP32 ONNX (ONNX Runtime, CPU); printed, not enforced
CHECK_INPUTS = 16


class BuildError(UserError):
    """TensorRT refused to parse or build; ``messages`` holds the parser/logger errors, verbatim."""

    def __init__(self, message, messages):
        UserError.__init__(self, message)
        self.messages = list(messages)


def parse_profile(text):
    """'MIN:OPT:MAX' (or one number N for N:N:N) -> (min, opt, max) batch sizes."""
    parts = str(text).split(":")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UserError("--profile expects MIN:OPT:MAX batch sizes, got %r" % text)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise UserError("--profile expects MIN:OPT:MAX batch sizes, got %r" % text)
    lo, opt, hi = vals
    if not (1 <= lo <= opt <= hi):
        raise UserError("--profile %s: need 1 <= MIN <= OPT <= MAX" % text)
    return (lo, opt, hi)


def onnx_facts(path):
    """Input name/dims, plugin op types, Q/DQ presence of an ONNX file (weights not loaded)."""
    import onnx
    try:
        m = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise UserError("cannot read ONNX %s: %s" % (
            path, str(e).splitlines()[0] if str(e) else "not an ONNX file (truncated?)"))
    inits = {t.name for t in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError("%s has %d inputs; the toolkit builds single-input classifiers" % (path, len(inputs)))
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[0].type.tensor_type.shape.dim]
    plugins, legacy = {}, set()
    for n in m.graph.node:
        if any(a.name == "plugin_version" for a in n.attribute):
            if n.op_type in plugin_spec.SPECS:
                plugins[n.op_type] = plugins.get(n.op_type, 0) + 1
            elif n.op_type in plugin_spec.LEGACY_OPS:
                legacy.add(n.op_type)
    if legacy:
        raise UserError("%s has plugin nodes named %s, made by an older onnx_add_plugin.py (TensorRT 10.14+ takes "
                        "'Attention' for the ONNX op): fuse the source ONNX again with onnx_add_plugin.py"
                        % (path, " / ".join(sorted(legacy))))
    return {"input": inputs[0].name, "dims": dims, "dynamic": not isinstance(dims[0], int) or dims[0] <= 0,
            "plugins": plugins, "qdq": any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node),
            "outputs": [o.name for o in m.graph.output]}


#: the TensorRT plugin library that make -C plugin builds (the kernels-only libmvt_kernels.so beside it exports
#: the same mvt_* symbols and must not be dlopened RTLD_GLOBAL in front of it)
PLUGIN_LIBRARY = "libmvt_plugins.so"


def default_plugin_libraries():
    """[plugin/build/libmvt_plugins.so] when it is built, else []."""
    path = os.path.join(PLUGIN_DIR, PLUGIN_LIBRARY)
    return [path] if os.path.isfile(path) else []


def resolve_plugins(api, facts, plugins):
    """Libraries to load: --plugin paths (checked first: a wrong path is reported as such), else
    plugin/build/libmvt_plugins.so when the ONNX has plugin nodes."""
    if plugins:
        trt_compat.check_plugin_files(plugins)
    if not api.runs_plugins and (facts["plugins"] or plugins):
        raise Unavailable("%s does not run the toolkit's C++ plugins%s; build from the ONNX without plugin nodes "
                        "(skip onnx_add_plugin.py)" % (api.display_name, (" (the ONNX has %s)" % ", ".join(
                            "%d %s" % (v, k) for k, v in sorted(facts["plugins"].items()))) if facts["plugins"]
                                                             else ""))
    if plugins:
        return list(plugins)
    if not facts["plugins"]:
        return []
    libs = default_plugin_libraries()
    if not libs:
        raise Unavailable("the ONNX has plugin nodes (%s) but no plugin library is in %s; build it: make -C plugin"
                        % (", ".join(sorted(facts["plugins"])), PLUGIN_DIR))
    return libs


def _file_record(path):
    return {"path": os.path.abspath(path), "sha256": sha256_file(path)}


def build_engine(onnx_path, save_path, profiles=None, fp16=False, int8=False, int8_mode="auto", calib_data=None,
                 calibrator="entropy2", calib_cache=None, calib_limit=None, workspace_mib=None, plugins=None,
                 timing_cache=None, verbose=False, inspect=False, compute_capabilities=None, cuda_graph=False,
                 keep_intermediate=False, log=print):
    """Build ``onnx_path`` into ``save_path`` (atomic) and write ``<save_path>.json``; return the sidecar dict.

    Intermediate graphs (``*.qdq.onnx``, ``*.fp16.onnx``) are made in a temporary folder and deleted afterwards,
    unless ``keep_intermediate`` (then they go next to the engine)."""
    check_output_file(save_path, "the engine path")
    work = tempfile.mkdtemp(prefix="mobilevit_trt-build-")
    try:
        return _build_engine(onnx_path, save_path, profiles, fp16, int8, int8_mode, calib_data, calibrator,
                             calib_cache, calib_limit, workspace_mib, plugins, timing_cache, verbose, inspect,
                             compute_capabilities, cuda_graph, keep_intermediate, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_engine(onnx_path, save_path, profiles, fp16, int8, int8_mode, calib_data, calibrator, calib_cache,
                  calib_limit, workspace_mib, plugins, timing_cache, verbose, inspect, compute_capabilities,
                  cuda_graph, keep_intermediate, work, log):
    from . import calib, precision

    if not onnx_path or not os.path.isfile(onnx_path):
        raise UserError("ONNX file not found: %s" % onnx_path)
    if int8_mode not in ("auto", "implicit", "qdq"):
        raise UserError("--int8-mode must be auto, implicit or qdq")
    if calibrator not in calib.CALIBRATOR_CHOICES:
        raise UserError("--calibrator must be one of %s" % ", ".join(calib.CALIBRATOR_CHOICES))
    facts = onnx_facts(onnx_path)
    api = trt_compat.load("convert_to_trt.py")
    log("%s (%s)" % (api.display_name, "strongly typed: precision from the ONNX" if api.strongly_typed
                     else "precision from builder flags"))
    if verbose:
        log("code paths: %s" % ", ".join("%s=%s" % kv for kv in sorted(api.branches.items())))

    # -- shapes and profiles
    dims = facts["dims"]
    if len(dims) != 4:
        raise UserError("input %r of %s has shape %s; expected [batch, 3, H, W]" % (facts["input"], onnx_path, dims))
    if any(not isinstance(d, int) for d in dims[1:]):
        raise UserError("only the batch dimension may be dynamic; input %r is %s" % (facts["input"], dims))
    if facts["dynamic"]:
        profiles = [tuple(p) for p in (profiles or [DEFAULT_DYNAMIC_PROFILE])]
    else:
        b = dims[0]
        bad = [p for p in (profiles or []) if tuple(p) != (b, b, b)]
        if bad:
            raise UserError("%s has a static batch of %d; --profile needs a dynamic ONNX (convert_to_onnx.py "
                            "--dynamic)" % (onnx_path, b))
        profiles = [(b, b, b)]

    # -- precision plan
    if int8:
        if facts["qdq"]:
            mode = "qdq"
            log("the ONNX already carries Q/DQ nodes (QAT export?): building it as it is")
        elif int8_mode == "auto":
            mode = "implicit" if api.has_implicit_int8 else "qdq"
        else:
            mode = int8_mode
        if mode == "implicit" and not api.has_implicit_int8:
            raise UserError("--int8-mode implicit needs INT8 calibrators (TensorRT 8.x-10.x); %s has none: use "
                            "--int8-mode qdq" % api.display_name)
    else:
        mode = None
        if facts["qdq"]:
            log("note: the ONNX carries Q/DQ nodes: the engine runs those layers in INT8 although --int8 is not set")
    precision_label = "int8+fp16" if int8 and fp16 else "int8" if int8 else "fp16" if fp16 else "fp32"

    onnx_sha = sha256_file(onnx_path)
    stem = os.path.splitext(save_path)[0]
    inter_stem = stem if keep_intermediate else os.path.join(work, os.path.basename(stem))
    libs = resolve_plugins(api, facts, plugins)  # before any expensive work: a wrong --plugin fails here
    if mode == "qdq" and not facts["qdq"] and facts["plugins"]:
        raise UserError("INT8 Q/DQ is calibrated in ONNX Runtime, which cannot run the plugin nodes of %s: build "
                        "INT8 from the ONNX before onnx_add_plugin.py%s" % (
                            onnx_path, ", or use --int8-mode implicit (TensorRT 8.x-10.x)"
                            if api.has_implicit_int8 else ""))
    cache_path = calib_cache or "%s.calib-%s.cache" % (stem, calibrator)
    # implicit calibration runs at the first profile's OPT batch; the cache is keyed by it
    cache = calib.CalibrationCache(cache_path, onnx_sha, calibrator, api.version, profiles[0][1],
                                   log=log) if mode == "implicit" else None
    if mode is not None and calib_data is None and not (mode == "qdq" and facts["qdq"]):
        if not (cache is not None and cache.valid()):
            try:
                calib_data = calib.default_calibration_source(log=log)
            except UserError as e:
                raise UserError("--int8 needs calibration images: pass --calib-data (an .npz with 'input', an image "
                                "folder or an LMDB); the default dataset could not be used either: %s" % e)
            log("no --calib-data: calibrating on the default dataset's training split %s (%d images, seeded "
                "sample); pass --calib-data to calibrate on your own images" % (
                    calib_data, calib_limit or calib.DEFAULT_DATASET_IMAGES))
    calib_inputs = calib.load_calibration_data(calib_data, calib_limit, img_size=dims[2]) if calib_data else None
    if calib_inputs is not None and tuple(calib_inputs.shape[1:]) != tuple(dims[1:]):
        raise UserError("calibration data is %s per image; the ONNX input is %s" % (list(calib_inputs.shape[1:]),
                                                                                    dims[1:]))
    check_inputs = (calib_inputs[:CHECK_INPUTS] if calib_inputs is not None
                    else precision.structured_inputs(CHECK_INPUTS // 2, img_size=dims[2], seed=0))
    build_onnx = onnx_path
    transforms = []
    accuracy = {}
    if mode == "qdq" and not facts["qdq"]:
        if calib_inputs is None:
            raise UserError("--int8 with Q/DQ needs --calib-data (an .npz with 'input' [N,3,H,W] float32)")
        qdq_path = inter_stem + ".qdq.onnx"
        rep = precision.quantize_qdq(build_onnx, qdq_path, calib_inputs, method=calib.QDQ_METHOD[calibrator], log=log)
        accuracy["qdq_vs_fp32_onnx"] = _check_transform(qdq_path, onnx_path, check_inputs, "Q/DQ INT8 ONNX", log)
        transforms.append({"transform": "qdq", "report": rep})
        build_onnx = qdq_path
    if fp16 and api.strongly_typed:
        fp16_path = inter_stem + ".fp16.onnx"
        if mode == "qdq":
            log("note: %s is strongly typed: --fp16 with Q/DQ keeps the Q/DQ nodes in FP32 with Casts around them; "
                "compare its speed with --int8 alone" % api.display_name)
        rep = precision.convert_fp16(build_onnx, fp16_path, log=log)
        accuracy["fp16_vs_fp32_onnx"] = _check_transform(
            fp16_path, onnx_path, check_inputs, "Q/DQ INT8 + FP16 ONNX" if mode == "qdq" else "FP16 ONNX", log)
        transforms.append({"transform": "fp16", "report": rep})
        build_onnx = fp16_path

    # -- plugins
    logger = trt_compat.make_logger(api, verbose=verbose)
    trt_compat.load_plugin_libraries(api, logger, libs)
    for op in sorted(facts["plugins"]):
        if trt_compat.find_plugin_creator(api, op, plugin_spec.PLUGIN_VERSION, plugin_spec.PLUGIN_NAMESPACE) is None:
            raise UserError("no TensorRT plugin creator for %s (version %s) after loading %s; rebuild: make -C plugin"
                            % (op, plugin_spec.PLUGIN_VERSION, ", ".join(libs)))

    # -- network
    builder = trt_compat.new_builder(api, logger)
    network = trt_compat.create_network(api, builder)
    from onnx import defs
    parser = trt_compat.new_parser(api, network, logger,
                                   plugin_override=any(defs.has(op) for op in facts["plugins"]))
    mark = logger.mark()
    if not parser.parse_from_file(os.path.abspath(build_onnx)):
        errors = trt_compat.parser_errors(parser) or logger.errors(mark)
        for e in errors:
            log("ONNX parser: %s" % e)
        what, hint = build_onnx, ""
        if build_onnx != onnx_path and not keep_intermediate:  # a graph in the temporary folder, gone soon
            what = "the %s graph made from %s" % ("+".join(t["transform"] for t in transforms), onnx_path)
            hint = "; --keep-intermediate keeps that graph"
        raise BuildError("%s could not parse %s (%d error%s, printed above)%s" % (
            api.display_name, what, len(errors), "" if len(errors) == 1 else "s", hint), errors)
    inp = network.get_input(0)
    if network.num_inputs != 1 or inp.name != facts["input"]:
        raise UserError("parsed network has inputs %s; expected one named %r" % (
            [network.get_input(i).name for i in range(network.num_inputs)], facts["input"]))
    log("parsed %s: %d layers, input %s %s, outputs %s" % (
        build_onnx, network.num_layers, inp.name, tuple(inp.shape),
        ", ".join("%s %s" % (network.get_output(i).name, tuple(network.get_output(i).shape))
                  for i in range(network.num_outputs))))

    # -- config
    config = builder.create_builder_config()
    device_total = None
    if not workspace_mib and api.branches["workspace"] == "max_workspace_size":
        from . import cuda
        device_total = cuda.total_memory()
    workspace = trt_compat.set_workspace(api, config, workspace_mib, device_total)
    log("builder workspace: %s" % workspace["note"])
    trt_compat.set_precision_flags(api, config, fp16=fp16, int8=bool(int8))
    graph_flag = bool(cuda_graph) and trt_compat.enable_graph_capture(api, config)
    if compute_capabilities:
        trt_compat.set_compute_capabilities(api, config, compute_capabilities)
    if inspect:
        config.profiling_verbosity = api.module.ProfilingVerbosity.DETAILED
    chw = tuple(dims[1:])
    if facts["dynamic"]:
        for lo, opt, hi in profiles:
            prof = builder.create_optimization_profile()
            prof.set_shape(inp.name, (lo,) + chw, (opt,) + chw, (hi,) + chw)
            config.add_optimization_profile(prof)
    cal = None
    if mode == "implicit":
        cal_batch = profiles[0][1]
        if cache.valid():
            cache.verified_bytes()  # a corrupt cache is refused here, not inside TensorRT's callback
        if calib_inputs is None and not cache.valid():
            raise UserError("--int8 (implicit calibration) needs --calib-data, or a calibration cache made for this "
                            "ONNX and calibrator (%s)" % cache_path)
        cal = calib.make_calibrator(api, calibrator, None if cache.valid() else calib_inputs, cal_batch, cache,
                                    input_name=inp.name)
        cal_profile = None
        if facts["dynamic"]:
            cal_profile = builder.create_optimization_profile()
            shape = (cal_batch,) + chw
            cal_profile.set_shape(inp.name, shape, shape, shape)
        trt_compat.set_int8_calibrator(api, config, cal, cal_profile)
    if timing_cache:
        if api.is_rtx:
            log("note: --timing-cache is ignored by %s (no autotuning ahead of time)" % api.display_name)
            timing_cache = None
        else:
            data = b""
            if os.path.isfile(timing_cache):
                with open(timing_cache, "rb") as f:
                    data = f.read()
            config.set_timing_cache(config.create_timing_cache(data), False)

    # -- build
    log("building %s engine (%s%s) ..." % (precision_label, "profiles " + ", ".join("%d:%d:%d" % p for p in profiles)
                                            if facts["dynamic"] else "static batch %d" % profiles[0][0],
                                            ", INT8 %s" % mode if mode else ""))
    mark = logger.mark()
    t0 = time.time()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if cal is not None:
            cal.free()
    build_s = time.time() - t0
    if cal is not None:
        try:
            cal.raise_if_failed()
        except calib.CalibrationFailed as e:
            errors = logger.errors(mark)
            if errors:
                raise calib.CalibrationFailed("%s (TensorRT: %s)" % (e, errors[-1]))
            raise
    if serialized is None:
        errors = logger.errors(mark)
        raise BuildError("%s could not build the engine: %s" % (
            api.display_name, errors[-1] if errors else "no error message (see the log above)"), errors)
    data = bytes(serialized)
    write_bytes(save_path, data)
    if timing_cache:
        tc = trt_compat.serialize_timing_cache(config)
        if tc:
            write_bytes(timing_cache, tc)

    meta = {
        "format": sidecar.FORMAT,
        "engine": os.path.abspath(save_path), "engine_sha256": sha256_file(save_path), "engine_bytes": len(data),
        "tensorrt": api.describe(),
        "precision": precision_label, "int8_mode": mode,
        "calibrator": calibrator if mode else None,
        "calibration_cache": (cache.path if cache is not None else None),
        "calibration_inputs": None if calib_inputs is None or not mode else int(len(calib_inputs)),
        "calibration_source": os.path.abspath(calib_data) if calib_data and mode else None,
        "strongly_typed": api.strongly_typed,
        "input": {"name": inp.name, "shape": [d if isinstance(d, int) else -1 for d in dims]},
        "dynamic": facts["dynamic"],
        "batch": None if facts["dynamic"] else profiles[0][0],
        "profiles": [list(p) for p in profiles],
        "workspace": workspace,
        "builder_flags": trt_compat.builder_flags_set(api, config),
        "graph_capture": {"prepared": api.branches["graph_capture"] != "ask_context" or graph_flag,
                          "require_user_allocation": graph_flag},
        "plugins": [_file_record(p) for p in libs],
        "source_onnx": _file_record(onnx_path),
        "built_onnx": None if build_onnx == onnx_path else dict(
            _file_record(build_onnx), path=os.path.abspath(build_onnx) if keep_intermediate else None,
            transforms=[t["transform"] for t in transforms]),
        "accuracy": accuracy,
        "build_seconds": round(build_s, 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "hardware_target": trt_compat.hardware_target(api, config),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }
    if inspect:
        meta["inspect"] = inspect_engine_file(api, logger, data, save_path, log)
    side = sidecar.write(save_path, meta)
    log("saved %s (%.1f MB, built in %.1f s) and %s" % (save_path, len(data) / 1e6, build_s, side))
    return meta


def _check_transform(path, fp32_path, inputs, label, log):
    """The reduced-precision copy the build made, against the FP32 ONNX (ONNX Runtime, statistics only: the
    accuracy verdict belongs to the dataset)."""
    from .verify import compare_files, verdict_line
    res = compare_files(path, fp32_path, inputs)
    log(verdict_line(label, res, "the FP32 ONNX (ONNX Runtime CPU)"))
    return {k: res[k] for k in ("n", "top1_agreement", "max_abs", "mean_abs")}


def inspect_engine_file(api, logger, data, save_path, log=print):
    """Layer information (engine inspector, DETAILED) -> ``<engine>.layers.json``; needs a runtime that can
    deserialize the engine (a GPU it supports).  Returns the path, or the reason it could not be written."""
    mark = logger.mark()
    logger.quiet = True  # the reason is printed once below
    try:
        runtime = trt_compat.new_runtime(api, logger)
        engine = trt_compat.deserialize(api, runtime, data)
    finally:
        logger.quiet = False
    if engine is None:
        errors = logger.errors(mark)
        reason = errors[0] if errors else "deserialization failed"
        log("--inspect: %s cannot deserialize the engine on this machine: %s" % (api.display_name, reason))
        return {"written": None, "reason": reason}
    info = trt_compat.inspect_engine(api, engine)
    path = save_path + ".layers.json"
    write_json(path, info)
    log("layer information (%d layers) -> %s" % (len(info["layers"]), path))
    return {"written": path, "reason": None}
