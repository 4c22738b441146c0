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
    """Input name/dims, plugin op types, Q/DQ presence, the fusion target it records and its ONNX ``Attention``
    nodes, of an ONNX file (weights not loaded)."""
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
    from .surgery.targets import METADATA_KEY as FUSION_KEY
    target = next((p.value for p in m.metadata_props if p.key == FUSION_KEY), None)
    return {"input": inputs[0].name, "dims": dims, "dynamic": not isinstance(dims[0], int) or dims[0] <= 0,
            "plugins": plugins, "qdq": any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node),
            "outputs": [o.name for o in m.graph.output], "fusion_target": target,
            "attention_nodes": sum(1 for n in m.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx"))}


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


class _Job(object):
    """One build: its arguments, and what each phase of :func:`_build_engine` works out for the later ones.
    Its field names avoid TensorRT member names (``want_int8``, ``int8_path``, ``input_dims``, ``trt_builder``,
    ``engine_bytes``), so the contract test still sees every TensorRT attribute this module uses."""

    def __init__(self, **arguments):
        self.__dict__.update(arguments)


def _build_engine(onnx_path, save_path, profiles, fp16, int8, int8_mode, calib_data, calibrator, calib_cache,
                  calib_limit, workspace_mib, plugins, timing_cache, verbose, inspect, compute_capabilities,
                  cuda_graph, keep_intermediate, work, log):
    job = _Job(onnx_path=onnx_path, save_path=save_path, profiles=profiles, fp16=fp16, want_int8=int8,
               int8_mode=int8_mode, calib_data=calib_data, calibrator=calibrator, calib_cache=calib_cache,
               calib_limit=calib_limit, workspace_mib=workspace_mib, plugins=plugins, timing_cache=timing_cache,
               verbose=verbose, inspect=inspect, compute_capabilities=compute_capabilities, cuda_graph=cuda_graph,
               keep_intermediate=keep_intermediate, work=work, log=log)
    _check_arguments(job)
    _plan_profiles(job)
    _plan_int8_mode(job)
    _prepare_calibration(job)
    _transform_graph(job)
    _load_plugins(job)
    _parse_network(job)
    _configure_builder(job)
    _run_build(job)
    return _write_sidecar(job)


def _check_arguments(job):
    """Argument checks, the ONNX facts, the TensorRT API (sets ``facts``, ``api``)."""
    from . import calib

    if not job.onnx_path or not os.path.isfile(job.onnx_path):
        raise UserError("ONNX file not found: %s" % job.onnx_path)
    if job.int8_mode not in ("auto", "implicit", "qdq"):
        raise UserError("--int8-mode must be auto, implicit or qdq")
    if job.calibrator not in calib.CALIBRATOR_CHOICES:
        raise UserError("--calibrator must be one of %s" % ", ".join(calib.CALIBRATOR_CHOICES))
    job.facts = onnx_facts(job.onnx_path)
    job.api = api = trt_compat.load("convert_to_trt.py")
    job.log("%s (%s)" % (api.display_name, "strongly typed: precision from the ONNX" if api.strongly_typed
                         else "precision from builder flags"))
    if job.verbose:
        job.log("code paths: %s" % ", ".join("%s=%s" % kv for kv in sorted(api.branches.items())))
    if job.facts["attention_nodes"] and not api.is_rtx:
        from .surgery.targets import parse_trt_version, target_for
        if parse_trt_version(api.version) < (10, 14):
            raise UserError("%s has %d ONNX Attention nodes (the native fusion target), which %s cannot import "
                            "(TensorRT >= 10.14 has the Attention importer): fuse the source graph with "
                            "onnx_add_plugin.py --target %s" % (job.onnx_path, job.facts["attention_nodes"],
                                                                api.display_name,
                                                                target_for(api.flavour, api.version)))


def _plan_profiles(job):
    """-- shapes and profiles (sets ``dims``, ``profiles``)."""
    facts = job.facts
    job.input_dims = dims = facts["dims"]
    if len(dims) != 4:
        raise UserError("input %r of %s has shape %s; expected [batch, 3, H, W]" % (facts["input"], job.onnx_path,
                                                                                  dims))
    if any(not isinstance(d, int) for d in dims[1:]):
        raise UserError("only the batch dimension may be dynamic; input %r is %s" % (facts["input"], dims))
    if facts["dynamic"]:
        job.profiles = [tuple(p) for p in (job.profiles or [DEFAULT_DYNAMIC_PROFILE])]
    else:
        b = dims[0]
        bad = [p for p in (job.profiles or []) if tuple(p) != (b, b, b)]
        if bad:
            raise UserError("%s has a static batch of %d; --profile needs a dynamic ONNX (convert_to_onnx.py "
                            "--dynamic)" % (job.onnx_path, b))
        job.profiles = [(b, b, b)]


def _plan_int8_mode(job):
    """-- precision plan (sets ``mode``: None, 'implicit' or 'qdq', and ``precision_label``)."""
    facts, api, int8, fp16 = job.facts, job.api, job.want_int8, job.fp16
    if int8:
        if facts["qdq"]:
            mode = "qdq"
            job.log("the ONNX already carries Q/DQ nodes (QAT export?): building it as it is")
        elif job.int8_mode == "auto":
            mode = "implicit" if api.has_implicit_int8 else "qdq"
        else:
            mode = job.int8_mode
        if mode == "implicit" and not api.has_implicit_int8:
            raise UserError("--int8-mode implicit needs INT8 calibrators (TensorRT 8.x-10.x); %s has none: use "
                            "--int8-mode qdq" % api.display_name)
    else:
        mode = None
        if facts["qdq"]:
            job.log("note: the ONNX carries Q/DQ nodes: the engine runs those layers in INT8 although --int8 is "
                    "not set")
    job.int8_path = mode
    job.precision_label = "int8+fp16" if int8 and fp16 else "int8" if int8 else "fp16" if fp16 else "fp32"


def _prepare_calibration(job):
    """Plugin libraries, calibration cache and images, the inputs the transforms are checked on (sets
    ``inter_stem``, ``libs``, ``cache_path``, ``cache``, ``calib_data``, ``calib_inputs``, ``check_inputs``)."""
    from . import calib, precision

    facts, api, mode, dims, log = job.facts, job.api, job.int8_path, job.input_dims, job.log
    onnx_sha = sha256_file(job.onnx_path)
    stem = os.path.splitext(job.save_path)[0]
    job.inter_stem = stem if job.keep_intermediate else os.path.join(job.work, os.path.basename(stem))
    job.libs = resolve_plugins(api, facts, job.plugins)  # before any expensive work: a wrong --plugin fails here
    if mode == "qdq" and not facts["qdq"] and facts["plugins"]:
        raise UserError("INT8 Q/DQ is calibrated in ONNX Runtime, which cannot run the plugin nodes of %s: build "
                        "INT8 from the ONNX before onnx_add_plugin.py%s" % (
                            job.onnx_path, ", or use --int8-mode implicit (TensorRT 8.x-10.x)"
                            if api.has_implicit_int8 else ""))
    job.cache_path = job.calib_cache or "%s.calib-%s.cache" % (stem, job.calibrator)
    # implicit calibration runs at the first profile's OPT batch; the cache is keyed by it
    job.cache = cache = calib.CalibrationCache(job.cache_path, onnx_sha, job.calibrator, api.version,
                                               job.profiles[0][1], log=log) if mode == "implicit" else None
    calib_data = job.calib_data
    if mode is not None and calib_data is None and not (mode == "qdq" and facts["qdq"]):
        if not (cache is not None and cache.valid()):
            try:
                calib_data = calib.default_calibration_source(log=log)
            except UserError as e:
                raise UserError("--int8 needs calibration images: pass --calib-data (an .npz with 'input', an image "
                                "folder or an LMDB); the default dataset could not be used either: %s" % e)
            log("no --calib-data: calibrating on the default dataset's training split %s (%d images, seeded "
                "sample); pass --calib-data to calibrate on your own images" % (
                    calib_data, job.calib_limit or calib.DEFAULT_DATASET_IMAGES))
    job.calib_data = calib_data
    if calib_data:
        known, origin = calib.model_preprocess(job.onnx_path)
        calib_inputs = calib.load_calibration_data(calib_data, job.calib_limit, img_size=dims[2], preprocess=known,
                                                   origin=origin, log=log)
    else:
        calib_inputs = None
    if calib_inputs is not None and tuple(calib_inputs.shape[1:]) != tuple(dims[1:]):
        raise UserError("calibration data is %s per image; the ONNX input is %s" % (list(calib_inputs.shape[1:]),
                                                                                    dims[1:]))
    job.calib_inputs = calib_inputs
    job.check_inputs = (calib_inputs[:CHECK_INPUTS] if calib_inputs is not None
                        else precision.structured_inputs(CHECK_INPUTS // 2, img_size=dims[2], seed=0))


def _transform_graph(job):
    """The Q/DQ and FP16 copies of the ONNX, each checked against it (sets ``build_onnx``, ``transforms``,
    ``accuracy``)."""
    from . import calib, precision

    onnx_path, api, mode, log = job.onnx_path, job.api, job.int8_path, job.log
    build_onnx = onnx_path
    transforms = []
    accuracy = {}
    if mode == "qdq" and not job.facts["qdq"]:
        if job.calib_inputs is None:
            raise UserError("--int8 with Q/DQ needs --calib-data (an .npz with 'input' [N,3,H,W] float32)")
        qdq_path = job.inter_stem + ".qdq.onnx"
        rep = precision.quantize_qdq(build_onnx, qdq_path, job.calib_inputs, method=calib.QDQ_METHOD[job.calibrator],
                                     log=log)
        accuracy["qdq_vs_fp32_onnx"] = _check_transform(qdq_path, onnx_path, job.check_inputs, "Q/DQ INT8 ONNX", log)
        transforms.append({"transform": "qdq", "report": rep})
        build_onnx = qdq_path
    if job.fp16 and api.strongly_typed:
        fp16_path = job.inter_stem + ".fp16.onnx"
        if mode == "qdq":
            log("note: %s is strongly typed: --fp16 with Q/DQ keeps the Q/DQ nodes in FP32 with Casts around them; "
                "compare its speed with --int8 alone" % api.display_name)
        rep = precision.convert_fp16(build_onnx, fp16_path, log=log)
        accuracy["fp16_vs_fp32_onnx"] = _check_transform(
            fp16_path, onnx_path, job.check_inputs, "Q/DQ INT8 + FP16 ONNX" if mode == "qdq" else "FP16 ONNX", log)
        transforms.append({"transform": "fp16", "report": rep})
        build_onnx = fp16_path
    job.build_onnx, job.transforms, job.accuracy = build_onnx, transforms, accuracy


def _load_plugins(job):
    """-- plugins: the TensorRT logger, the plugin libraries, a creator for each plugin op (sets ``logger``)."""
    api = job.api
    job.logger = logger = trt_compat.make_logger(api, verbose=job.verbose)
    trt_compat.load_plugin_libraries(api, logger, job.libs)
    for op in sorted(job.facts["plugins"]):
        if trt_compat.find_plugin_creator(api, op, plugin_spec.PLUGIN_VERSION, plugin_spec.PLUGIN_NAMESPACE) is None:
            raise UserError("no TensorRT plugin creator for %s (version %s) after loading %s; rebuild: make -C plugin"
                            % (op, plugin_spec.PLUGIN_VERSION, ", ".join(job.libs)))


def _parse_network(job):
    """-- network: parse the ONNX to build (sets ``builder``, ``network``, ``inp``)."""
    api, facts, logger, build_onnx, log = job.api, job.facts, job.logger, job.build_onnx, job.log
    job.trt_builder = builder = trt_compat.new_builder(api, logger)
    job.network = network = trt_compat.create_network(api, builder)
    from onnx import defs
    parser = trt_compat.new_parser(api, network, logger,
                                   plugin_override=any(defs.has(op) for op in facts["plugins"]))
    mark = logger.mark()
    if not parser.parse_from_file(os.path.abspath(build_onnx)):
        errors = trt_compat.parser_errors(parser) or logger.errors(mark)
        for e in errors:
            log("ONNX parser: %s" % e)
        what, hint = build_onnx, ""
        if build_onnx != job.onnx_path and not job.keep_intermediate:  # a graph in the temporary folder, gone soon
            what = "the %s graph made from %s" % ("+".join(t["transform"] for t in job.transforms), job.onnx_path)
            hint = "; --keep-intermediate keeps that graph"
        raise BuildError("%s could not parse %s (%d error%s, printed above)%s" % (
            api.display_name, what, len(errors), "" if len(errors) == 1 else "s", hint), errors)
    job.inp = inp = network.get_input(0)
    if network.num_inputs != 1 or inp.name != facts["input"]:
        raise UserError("parsed network has inputs %s; expected one named %r" % (
            [network.get_input(i).name for i in range(network.num_inputs)], facts["input"]))
    log("parsed %s: %d layers, input %s %s, outputs %s" % (
        build_onnx, network.num_layers, inp.name, tuple(inp.shape),
        ", ".join("%s %s" % (network.get_output(i).name, tuple(network.get_output(i).shape))
                  for i in range(network.num_outputs))))
    # ONNX Attention nodes (the native fusion target) become IAttention layers; decomposable, so that a precision
    # without a dedicated kernel (TensorRT-RTX FP32) still builds
    job.decomposable_attention = trt_compat.mark_attention_decomposable(api, network)
    if job.decomposable_attention:
        log("%d IAttention layers marked decomposable (fused kernel where one fits, BMM + Softmax + BMM elsewhere)"
            % job.decomposable_attention)


def _configure_builder(job):
    """-- config: workspace, precision flags, graph capture, profiles, calibrator, timing cache (sets ``config``,
    ``workspace``, ``graph_flag``, ``cal``; ``timing_cache`` becomes None where it is ignored)."""
    api, builder, inp = job.api, job.trt_builder, job.inp
    job.config = config = builder.create_builder_config()
    device_total = None
    if not job.workspace_mib and api.branches["workspace"] == "max_workspace_size":
        from . import cuda
        device_total = cuda.total_memory()
    job.workspace = trt_compat.set_workspace(api, config, job.workspace_mib, device_total)
    job.log("builder workspace: %s" % job.workspace["note"])
    trt_compat.set_precision_flags(api, config, fp16=job.fp16, int8=bool(job.want_int8))
    job.graph_flag = bool(job.cuda_graph) and trt_compat.enable_graph_capture(api, config)
    if job.compute_capabilities:
        trt_compat.set_compute_capabilities(api, config, job.compute_capabilities)
    if job.inspect:
        config.profiling_verbosity = api.module.ProfilingVerbosity.DETAILED
    chw = tuple(job.input_dims[1:])
    if job.facts["dynamic"]:
        for lo, opt, hi in job.profiles:
            prof = builder.create_optimization_profile()
            prof.set_shape(inp.name, (lo,) + chw, (opt,) + chw, (hi,) + chw)
            config.add_optimization_profile(prof)
    job.cal = _attach_calibrator(job, chw) if job.int8_path == "implicit" else None
    if job.timing_cache:
        if api.is_rtx:
            job.log("note: --timing-cache is ignored by %s (no autotuning ahead of time)" % api.display_name)
            job.timing_cache = None
        else:
            data = b""
            if os.path.isfile(job.timing_cache):
                with open(job.timing_cache, "rb") as f:
                    data = f.read()
            config.set_timing_cache(config.create_timing_cache(data), False)


def _attach_calibrator(job, chw):
    """The implicit INT8 calibrator (and its profile, for a dynamic ONNX) set on the builder config."""
    from . import calib

    cache, inp = job.cache, job.inp
    cal_batch = job.profiles[0][1]
    if cache.valid():
        cache.verified_bytes()  # a corrupt cache is refused here, not inside TensorRT's callback
    if job.calib_inputs is None and not cache.valid():
        raise UserError("--int8 (implicit calibration) needs --calib-data, or a calibration cache made for this "
                        "ONNX and calibrator (%s)" % job.cache_path)
    cal = calib.make_calibrator(job.api, job.calibrator, None if cache.valid() else job.calib_inputs, cal_batch,
                                cache, input_name=inp.name)
    cal_profile = None
    if job.facts["dynamic"]:
        cal_profile = job.trt_builder.create_optimization_profile()
        shape = (cal_batch,) + chw
        cal_profile.set_shape(inp.name, shape, shape, shape)
    trt_compat.set_int8_calibrator(job.api, job.config, cal, cal_profile)
    return cal


def _run_build(job):
    """-- build: the engine, calibration failures, the engine and timing cache written (sets ``data``,
    ``build_s``)."""
    from . import calib

    api, logger, cal, profiles, mode = job.api, job.logger, job.cal, job.profiles, job.int8_path
    job.log("building %s engine (%s%s) ..." % (
        job.precision_label, "profiles " + ", ".join("%d:%d:%d" % p for p in profiles)
        if job.facts["dynamic"] else "static batch %d" % profiles[0][0], ", INT8 %s" % mode if mode else ""))
    mark = logger.mark()
    t0 = time.time()
    try:
        serialized = job.trt_builder.build_serialized_network(job.network, job.config)
    finally:
        if cal is not None:
            cal.free()
    job.build_s = time.time() - t0
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
    job.engine_bytes = data = bytes(serialized)
    write_bytes(job.save_path, data)
    if job.timing_cache:
        tc = trt_compat.serialize_timing_cache(job.config)
        if tc:
            write_bytes(job.timing_cache, tc)


def _write_sidecar(job):
    """The sidecar dict, written to ``<engine>.json`` (with the layer information under --inspect); returned."""
    api, config, facts, profiles, mode = job.api, job.config, job.facts, job.profiles, job.int8_path
    save_path, onnx_path, build_onnx, data = job.save_path, job.onnx_path, job.build_onnx, job.engine_bytes
    cache, calib_inputs, calib_data = job.cache, job.calib_inputs, job.calib_data
    meta = {
        "format": sidecar.FORMAT,
        "engine": os.path.abspath(save_path), "engine_sha256": sha256_file(save_path), "engine_bytes": len(data),
        "tensorrt": api.describe(),
        "precision": job.precision_label, "int8_mode": mode,
        "calibrator": job.calibrator if mode else None,
        "calibration_cache": (cache.path if cache is not None else None),
        "calibration_inputs": None if calib_inputs is None or not mode else int(len(calib_inputs)),
        "calibration_source": os.path.abspath(calib_data) if calib_data and mode else None,
        "strongly_typed": api.strongly_typed,
        "input": {"name": job.inp.name, "shape": [d if isinstance(d, int) else -1 for d in job.input_dims]},
        "dynamic": facts["dynamic"],
        "batch": None if facts["dynamic"] else profiles[0][0],
        "profiles": [list(p) for p in profiles],
        "workspace": job.workspace,
        "builder_flags": trt_compat.builder_flags_set(api, config),
        "graph_capture": {"prepared": api.branches["graph_capture"] != "ask_context" or job.graph_flag,
                          "require_user_allocation": job.graph_flag},
        "plugins": [_file_record(p) for p in job.libs],
        "source_onnx": _file_record(onnx_path),
        sidecar.PREPROCESS_KEY: sidecar.preprocess_record(onnx_path),
        "fusion_target": facts.get("fusion_target"),
        "attention_layers": job.decomposable_attention,
        "built_onnx": None if build_onnx == onnx_path else dict(
            _file_record(build_onnx), path=os.path.abspath(build_onnx) if job.keep_intermediate else None,
            transforms=[t["transform"] for t in job.transforms]),
        "accuracy": job.accuracy,
        "build_seconds": round(job.build_s, 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "hardware_target": trt_compat.hardware_target(api, config),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }
    if job.inspect:
        meta["inspect"] = inspect_engine_file(api, job.logger, data, save_path, job.log)
    side = sidecar.write(save_path, meta)
    job.log("saved %s (%.1f MB, built in %.1f s) and %s" % (save_path, len(data) / 1e6, job.build_s, side))
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
