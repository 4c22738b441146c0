"""Every TensorRT call that differs between 8.2, 8.6, 10.x, 11.x and TensorRT-RTX, in one place.

Nothing else in the toolkit checks a TensorRT version.  Code paths are chosen by *feature*, never by version
number: :func:`select_branches` takes a ``has(class_name, attribute)`` predicate and returns, per topic, the
branch to take.  At run time the predicate asks the imported module; in the tests it asks the Python-API tables
of TensorRT 8.2.4 / 8.6.1 / 10.16 / 11.1 (``tests/data/trt_python_api.json``), so the selection logic itself is
checked against every release without a fake module.

Each branch declares, as data (:data:`BRANCHES`), the releases it serves and the ``(class, attribute)`` names it
touches; :data:`COMMON` lists the names used on every release.  ``tests/test_trt_compat_contract.py`` checks that
every declared name exists in each served release's table and, for TensorRT-RTX, on the real ``tensorrt_rtx``
classes, and that every TensorRT attribute used in build.py / runtime.py / calib.py / this file is declared.

Importing this module imports no TensorRT; :func:`load` does.
"""
import ctypes
import json
import os
import sys

from .errors import Unavailable, UserError

# -- the declared API surface -------------------------------------------------------------------------------------

#: API tables (keys of tests/data/trt_python_api.json) plus "rtx" for the installed ``tensorrt_rtx`` module.
RELEASES = ("8.2.4", "8.6.1", "10.16", "11.1", "rtx")

#: topic -> branch -> {"serves": releases, "names": [(class, attribute), ...]}.  The names are exactly what the
#: branch's code below touches (besides COMMON).  A branch never runs on a release it does not serve.
BRANCHES = {
    "network": {
        # 8.x: ONNX needs an explicit-batch network; the flag is built from its enum member, never a bit value.
        "explicit_batch": {"serves": ("8.2.4", "8.6.1"),
                           "names": [("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH")]},
        # 10.x: explicit batch is implied (EXPLICIT_BATCH deprecated and ignored); weakly typed with builder flags.
        "default": {"serves": ("10.16",), "names": []},
        # 11.x and TensorRT-RTX: always strongly typed; asked for by name and read back.
        "strongly_typed": {"serves": ("11.1", "rtx"),
                           "names": [("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
                                     ("INetworkDefinition", "get_flag")]},
    },
    "workspace": {
        "max_workspace_size": {"serves": ("8.2.4",), "names": [("IBuilderConfig", "max_workspace_size")]},
        "memory_pool": {"serves": ("8.6.1", "10.16", "11.1", "rtx"),
                        "names": [("IBuilderConfig", "set_memory_pool_limit"), ("MemoryPoolType", "WORKSPACE")]},
    },
    "precision": {
        # reduced precision through builder flags (FP16 deprecated from 10.12 but working)
        "builder_flags": {"serves": ("8.2.4", "8.6.1", "10.16"),
                          "names": [("BuilderFlag", "FP16"), ("BuilderFlag", "INT8"), ("IBuilderConfig", "set_flag")]},
        # no precision flags: FP16 tensors or Q/DQ nodes must be in the ONNX (precision.py)
        "strongly_typed_onnx": {"serves": ("11.1", "rtx"), "names": []},
    },
    "calibration": {
        "implicit": {"serves": ("8.2.4", "8.6.1", "10.16"),
                     "names": [("IInt8EntropyCalibrator2", "get_batch_size"), ("IInt8EntropyCalibrator2", "get_batch"),
                               ("IInt8EntropyCalibrator2", "read_calibration_cache"),
                               ("IInt8EntropyCalibrator2", "write_calibration_cache"),
                               ("IInt8MinMaxCalibrator", "get_batch_size"), ("IInt8MinMaxCalibrator", "get_batch"),
                               ("IInt8MinMaxCalibrator", "read_calibration_cache"),
                               ("IInt8MinMaxCalibrator", "write_calibration_cache"),
                               ("IBuilderConfig", "int8_calibrator"), ("IBuilderConfig", "set_calibration_profile")]},
        "qdq_only": {"serves": ("11.1", "rtx"), "names": []},
    },
    "io": {
        # 8.2-8.4: bindings, replicated once per optimization profile
        "bindings": {"serves": ("8.2.4",),
                     "names": [("ICudaEngine", "num_bindings"), ("ICudaEngine", "binding_is_input"),
                               ("ICudaEngine", "get_binding_name"), ("ICudaEngine", "get_binding_dtype"),
                               ("ICudaEngine", "get_binding_shape"), ("ICudaEngine", "get_profile_shape"),
                               ("IExecutionContext", "set_binding_shape"), ("IExecutionContext", "get_binding_shape"),
                               ("IExecutionContext", "all_binding_shapes_specified"),
                               ("IExecutionContext", "execute_async_v2")]},
        # 8.5+: tensors by name
        "tensor_names": {"serves": ("8.6.1", "10.16", "11.1", "rtx"),
                         "names": [("ICudaEngine", "num_io_tensors"), ("ICudaEngine", "get_tensor_name"),
                                   ("ICudaEngine", "get_tensor_mode"), ("ICudaEngine", "get_tensor_dtype"),
                                   ("ICudaEngine", "get_tensor_shape"), ("ICudaEngine", "get_tensor_profile_shape"),
                                   ("TensorIOMode", "INPUT"), ("IExecutionContext", "set_input_shape"),
                                   ("IExecutionContext", "get_tensor_shape"),
                                   ("IExecutionContext", "set_tensor_address"),
                                   ("IExecutionContext", "execute_async_v3")]},
    },
    "plugin_registry": {
        "get_plugin_creator": {"serves": ("8.2.4", "8.6.1"),
                               "names": [("IPluginRegistry", "get_plugin_creator")]},
        "get_creator": {"serves": ("10.16", "11.1", "rtx"), "names": [("IPluginRegistry", "get_creator")]},
    },
    "hardware_target": {
        # the engine runs on the GPU it was built on (same compute capability)
        "build_gpu": {"serves": ("8.2.4",), "names": []},
        "compatibility_level": {"serves": ("8.6.1", "10.16", "11.1"),
                                "names": [("IBuilderConfig", "hardware_compatibility_level")]},
        # TensorRT-RTX: ahead-of-time build for a list of compute capabilities
        "compute_capabilities": {"serves": ("rtx",),
                                 "names": [("IBuilderConfig", "num_compute_capabilities"),
                                           ("IBuilderConfig", "get_compute_capability"),
                                           ("IBuilderConfig", "set_compute_capability"),
                                           ("ComputeCapability", "NONE")]},
    },
    "graph_capture": {
        # TensorRT-RTX compiles kernels lazily and can say whether a stream may be captured right now; stream
        # capture needs an engine built with REQUIRE_USER_ALLOCATION (TensorRT-RTX 1.2 release notes: "This is
        # required when using CUDA stream capture"), so the builder sets it when graphs are wanted
        # and a context whose dynamic-shape kernels are specialised eagerly: the default (LAZY) swaps kernels in
        # mid-run, "use a fallback kernel till compilation is complete" (tensorrt_rtx 1.7 binding docstring),
        # which would invalidate a captured graph (Torch-TensorRT requires strategy != kLazy for capture too)
        "ask_context": {"serves": ("rtx",), "names": [("IExecutionContext", "is_stream_capturable"),
                                                      ("BuilderFlag", "REQUIRE_USER_ALLOCATION"),
                                                      ("ICudaEngine", "create_runtime_config"),
                                                      ("IRuntimeConfig", "dynamic_shapes_kernel_specialization_strategy"),
                                                      ("DynamicShapesKernelSpecializationStrategy", "EAGER")]},
        "after_plain_enqueue": {"serves": ("8.2.4", "8.6.1", "10.16", "11.1"), "names": []},
    },
    "parser_flags": {
        # 10.15+: OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE -- a registered plugin wins over a built-in importer of
        # the same op name (10.14 added a built-in importer for the ONNX Attention op).  The toolkit's plugin
        # names collide with no op (plugin_spec) and its nodes carry plugin_namespace, which sends them to the
        # plugin importer anyway; the flag would also hand *standard* nodes to same-named plugins (TensorRT's own
        # "Split", "ScatterND", "ScatterElements" register in namespace "": plugin/api/inferPlugin.cpp at v10.16),
        # so it is set only for a graph whose plugin nodes are named like an ONNX op.
        "plugin_override": {"serves": ("10.16", "11.1", "rtx"),
                            "names": [("OnnxParserFlag", "ENABLE_PLUGIN_OVERRIDE"), ("OnnxParser", "set_flag")]},
        "none": {"serves": ("8.2.4", "8.6.1"), "names": []},
    },
    "attention": {
        # the ONNX Attention importer (10.14+) builds IAttention (ATTENTION_INPUT / ATTENTION_OUTPUT layers);
        # mark_attention_decomposable sets IAttention.decomposable through IAttentionInputLayer.attention, which
        # the TensorRT-RTX binding has (RTX has no dedicated FP32 attention kernel).  The 10.16 and 11.1 API
        # tables list no members of IAttentionInputLayer: there the layers stay as parsed (none).
        "iattention": {"serves": ("rtx",),
                       "names": [("INetworkDefinition", "get_layer"), ("ILayer", "type"),
                                 ("LayerType", "ATTENTION_INPUT"), ("IAttentionInputLayer", "attention"),
                                 ("IAttention", "decomposable")]},
        "none": {"serves": ("8.2.4", "8.6.1", "10.16", "11.1"), "names": []},
    },
}

#: Names used on every release, by build.py / runtime.py / calib.py / this module.
COMMON = {
    "build": [("Builder", None), ("OnnxParser", None), ("ILogger", None),
              ("Builder", "create_network"), ("Builder", "create_builder_config"),
              ("Builder", "create_optimization_profile"), ("Builder", "build_serialized_network"),
              ("IBuilderConfig", "add_optimization_profile"), ("IBuilderConfig", "profiling_verbosity"),
              ("IBuilderConfig", "get_flag"), ("BuilderFlag", None),
              ("IBuilderConfig", "create_timing_cache"), ("IBuilderConfig", "set_timing_cache"),
              ("IBuilderConfig", "get_timing_cache"), ("ITimingCache", "serialize"),
              ("IOptimizationProfile", "set_shape"),
              ("INetworkDefinition", "num_inputs"), ("INetworkDefinition", "get_input"),
              ("INetworkDefinition", "num_outputs"), ("INetworkDefinition", "get_output"),
              ("INetworkDefinition", "num_layers"),
              ("ITensor", "name"), ("ITensor", "shape"), ("ITensor", "dtype"),
              ("OnnxParser", "parse_from_file"), ("OnnxParser", "num_errors"), ("OnnxParser", "get_error"),
              ("ParserError", "__str__"), ("ProfilingVerbosity", "DETAILED"), ("IHostMemory", "nbytes"),
              ("ILogger", "log"), ("ILogger", "Severity")],
    "run": [("Runtime", None), ("IProfiler", None), ("Runtime", "deserialize_cuda_engine"), ("ICudaEngine", "create_execution_context"),
            ("ICudaEngine", "num_optimization_profiles"), ("ICudaEngine", "num_layers"),
            ("ICudaEngine", "create_engine_inspector"),
            ("IExecutionContext", "set_optimization_profile_async"),
            ("IExecutionContext", "active_optimization_profile"), ("IExecutionContext", "profiler"),
            ("IExecutionContext", "enqueue_emits_profile"), ("IExecutionContext", "report_to_profiler"),
            ("IProfiler", "report_layer_time"), ("EngineInspector", "get_engine_information"),
            ("EngineInspector", "get_layer_information"), ("EngineInspector", "execution_context"),
            ("LayerInformationFormat", "JSON")],
}

#: Module-level functions (defined outside the class tables; checked on the real module and, by hand, in the
#: binding sources: see docs/TRT_COMPAT.md).
MODULE_FUNCTIONS = ("init_libnvinfer_plugins", "get_plugin_registry", "__version__")

#: Keys of the engine inspector's JSON that changed name between releases (11.x: "Bindings" -> "I/O Tensors").
INSPECTOR_IO_KEYS = ("Bindings", "I/O Tensors")

# Attribute names that build.py / runtime.py / calib.py / this module use on non-TensorRT objects (numpy, os,
# ctypes, json, argparse, ...) and that happen to be TensorRT member names too.  The contract test allows exactly
# these besides the declared names.
NON_TRT_ATTRIBUTES = frozenset([
    "__name__",  # function names (cuda-python error reporting)
    "deserialize", "execute", "destroy", "free", "logger", "engine",  # this toolkit's own helpers/attributes
    "append", "read", "write", "update", "clear",  # list, file, calibration cache, dict, GraphCache
    "float32", "itemsize",  # numpy
    "node", "type", "value",  # onnx GraphProto / ValueInfoProto / metadata_props entries
])


def select_branches(has):
    """Return {topic: branch} for the API described by ``has(class_name, attribute_or_None) -> bool``."""
    sel = {}
    if has("BuilderFlag", "FP16"):
        sel["precision"] = "builder_flags"
    else:
        sel["precision"] = "strongly_typed_onnx"
    if sel["precision"] == "strongly_typed_onnx" and has("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"):
        sel["network"] = "strongly_typed"
    elif has("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH") and \
            not has("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"):
        sel["network"] = "explicit_batch"
    else:
        sel["network"] = "default"
    if has("IBuilderConfig", "set_memory_pool_limit") and has("MemoryPoolType", "WORKSPACE"):
        sel["workspace"] = "memory_pool"
    else:
        sel["workspace"] = "max_workspace_size"
    if has("IInt8EntropyCalibrator2", None) and has("IBuilderConfig", "int8_calibrator"):
        sel["calibration"] = "implicit"
    else:
        sel["calibration"] = "qdq_only"
    if has("ICudaEngine", "num_io_tensors") and has("IExecutionContext", "execute_async_v3"):
        sel["io"] = "tensor_names"
    else:
        sel["io"] = "bindings"
    sel["plugin_registry"] = "get_creator" if has("IPluginRegistry", "get_creator") else "get_plugin_creator"
    if has("IBuilderConfig", "set_compute_capability"):
        sel["hardware_target"] = "compute_capabilities"
    elif has("IBuilderConfig", "hardware_compatibility_level"):
        sel["hardware_target"] = "compatibility_level"
    else:
        sel["hardware_target"] = "build_gpu"
    sel["graph_capture"] = ("ask_context" if has("IExecutionContext", "is_stream_capturable")
                            else "after_plain_enqueue")
    sel["parser_flags"] = ("plugin_override" if has("OnnxParserFlag", "ENABLE_PLUGIN_OVERRIDE")
                           and has("OnnxParser", "set_flag") else "none")
    sel["attention"] = ("iattention" if has("IAttentionInputLayer", "attention") and has("IAttention", "decomposable")
                        else "none")
    return sel


# -- loading ------------------------------------------------------------------------------------------------------

MODULE_ENV = "MOBILEVIT_TRT_MODULE"  # "tensorrt" or "tensorrt_rtx" to pick one when both are installed
_FLAVOURS = ("tensorrt", "tensorrt_rtx")
_API = {}


def flavour_name(flavour):
    """What a Python module flavour is called: "TensorRT-RTX" for ``tensorrt_rtx``, else "TensorRT"."""
    return "TensorRT-RTX" if flavour == "tensorrt_rtx" else "TensorRT"


class TrtApi(object):
    """The imported TensorRT module with its flavour, version and selected branches."""

    def __init__(self, module, flavour):
        self.module = module
        self.flavour = flavour
        self.version = str(getattr(module, "__version__", "unknown"))
        self.branches = select_branches(self.has)

    def has(self, cls, attr=None):
        obj = getattr(self.module, cls, None)
        if obj is None:
            return False
        return attr is None or hasattr(obj, attr)

    @property
    def display_name(self):
        return "%s %s" % (flavour_name(self.flavour), self.version)

    @property
    def strongly_typed(self):
        return self.branches["precision"] == "strongly_typed_onnx"

    @property
    def has_implicit_int8(self):
        return self.branches["calibration"] == "implicit"

    @property
    def runs_plugins(self):
        """Whether this TensorRT loads the toolkit's C++ plugin library (TensorRT-RTX does not)."""
        return self.flavour != "tensorrt_rtx"

    @property
    def is_rtx(self):
        return self.flavour == "tensorrt_rtx"

    def describe(self):
        return {"flavour": self.flavour, "version": self.version}


def _import(name):
    import importlib
    return importlib.import_module(name)


def load(purpose=None, prefer=None, needs="TensorRT"):
    """Import ``tensorrt`` else ``tensorrt_rtx`` (or ``prefer`` / $MOBILEVIT_TRT_MODULE first); return a TrtApi.

    Raises UserError "<purpose> needs <needs>: ..." when neither imports.
    """
    prefer = prefer or os.environ.get(MODULE_ENV) or None
    if prefer and prefer not in _FLAVOURS:
        raise UserError("%s must be one of %s, got %r" % (MODULE_ENV, ", ".join(_FLAVOURS), prefer))
    order = [prefer] + [f for f in _FLAVOURS if f != prefer] if prefer else list(_FLAVOURS)
    problems = []
    for name in order:
        if name in _API:
            return _API[name]
        try:
            mod = _import(name)
        except ImportError as e:
            problems.append("%s: %s" % (name, e))
            continue
        except Exception as e:  # a broken install (missing libnvinfer, wrong CUDA) raises other errors
            problems.append("%s: broken install (%s)" % (name, str(e).splitlines()[0] if str(e) else "import failed"))
            continue
        _API[name] = TrtApi(mod, name)
        return _API[name]
    what = purpose or "this step"
    raise Unavailable("%s needs %s: no usable TensorRT Python module (%s); install TensorRT (pip install tensorrt, "
                    "or pip install tensorrt-rtx)" % (what, needs, "; ".join(problems)))


# -- logging ------------------------------------------------------------------------------------------------------

def _severity_name(severity):
    s = str(severity)
    return s.rsplit(".", 1)[-1]


def make_logger(api, verbose=False, stream=None):
    """An ILogger that records every message and prints errors/warnings (and info with ``verbose``)."""
    trt = api.module
    out = stream or sys.stderr

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = []
            self.verbose = verbose
            self.quiet = False

        def log(self, severity, msg):
            name = _severity_name(severity)
            self.messages.append((name, msg))
            if self.quiet:
                return
            if name in ("INTERNAL_ERROR", "ERROR", "WARNING") or (self.verbose and name in ("INFO", "VERBOSE")):
                print("[%s] %s: %s" % (api.display_name, name, msg), file=out)

        def mark(self):
            return len(self.messages)

        def errors(self, since=0):
            return [m for s, m in self.messages[since:] if s in ("INTERNAL_ERROR", "ERROR")]

    return CapturingLogger()


# -- building -----------------------------------------------------------------------------------------------------

def create_network(api, builder):
    """Create the network definition with the flags this release needs for ONNX parsing."""
    trt = api.module
    branch = api.branches["network"]
    if branch == "explicit_batch":
        return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    if branch == "strongly_typed":
        flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
        network = builder.create_network(1 << int(flag))
        if not network.get_flag(flag):
            raise RuntimeError("%s did not create a strongly typed network" % api.display_name)
        return network
    return builder.create_network(0)


def mark_attention_decomposable(api, network, decomposable=True):
    """Mark every IAttention of a parsed network decomposable; return how many (0: no attention layers, or a
    binding without ``IAttentionInputLayer.attention``: TensorRT before 10.14, and the 10.16 / 11.1 tables).

    TensorRT-RTX 1.7 has no dedicated FP32 attention kernel ("Attention operation was not supported by a
    dedicated kernel ... may be marked as decomposable, using the TensorRT IAttention::setDecomposable method");
    a decomposable IAttention runs as BMM + Softmax + BMM where no fused kernel fits and as the fused kernel
    where one does, so the builder marks them always.  The ONNX importer would do the same for a node carrying
    the non-standard attribute ``TRT_decomposable=1``, which ``onnx.checker`` rejects.  ``network.get_layer``
    returns plain ILayer objects: each ``ATTENTION_INPUT`` layer is viewed as ``IAttentionInputLayer`` to reach
    its ``attention`` (the Python binding's downcast idiom)."""
    if api.branches["attention"] != "iattention":
        return 0
    kind = api.module.LayerType.ATTENTION_INPUT
    cls = api.module.IAttentionInputLayer
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != kind:
            continue
        layer.__class__ = cls
        layer.attention.decomposable = bool(decomposable)
        count += 1
    return count


#: builder workspace when --workspace is not given, on releases whose default is 0 (8.2: max_workspace_size)
DEFAULT_WORKSPACE_BYTES = 1 << 30


def workspace_plan(branch, requested_mib=None, device_total_bytes=None):
    """(bytes to set or None, note) for the builder workspace.

    TensorRT 8.2's default workspace is 0 ("By default the workspace size is 0, which means there is no temporary
    memory", include/NvInfer.h at tag 22.04, IBuilderConfig::setMaxWorkspaceSize), which makes Myelin/transformer
    tactics fail or fall back to slow ones; there the toolkit sets 1 GiB, capped at half the device memory when
    that is known.  8.4+ (memory pools) default to the device's memory: set only what the user asked for."""
    if requested_mib:
        return int(requested_mib) << 20, "--workspace %d MiB" % int(requested_mib)
    if branch == "memory_pool":
        return None, "TensorRT default (the device memory)"
    nbytes = DEFAULT_WORKSPACE_BYTES
    if device_total_bytes:
        nbytes = min(nbytes, int(device_total_bytes) // 2)
    return nbytes, "toolkit default %d MiB (this TensorRT defaults to 0)" % (nbytes >> 20)


def set_workspace(api, config, requested_mib=None, device_total_bytes=None):
    """Set the builder workspace per :func:`workspace_plan`; return {"bytes": n or None, "note": ...}."""
    nbytes, note = workspace_plan(api.branches["workspace"], requested_mib, device_total_bytes)
    if nbytes is not None:
        if api.branches["workspace"] == "memory_pool":
            config.set_memory_pool_limit(api.module.MemoryPoolType.WORKSPACE, int(nbytes))
        else:
            config.max_workspace_size = int(nbytes)
    return {"bytes": nbytes, "note": note}


def builder_flags_set(api, config):
    """Names of the BuilderFlag members set on ``config``, read back from TensorRT (what the build really used)."""
    flags = api.module.BuilderFlag
    members = getattr(flags, "__members__", {})
    return sorted(name for name, value in members.items() if config.get_flag(value))


def enable_graph_capture(api, config):
    """Build so that CUDA stream capture works: TensorRT-RTX needs BuilderFlag.REQUIRE_USER_ALLOCATION; other
    releases capture any engine (returns whether a flag was set)."""
    if api.branches["graph_capture"] != "ask_context":
        return False
    config.set_flag(api.module.BuilderFlag.REQUIRE_USER_ALLOCATION)
    return True


def set_precision_flags(api, config, fp16=False, int8=False):
    """Set FP16/INT8 builder flags; on strongly typed releases precision comes from the ONNX (returns False)."""
    if api.branches["precision"] != "builder_flags":
        return False
    trt = api.module
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    return True


CALIBRATORS = {"entropy2": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}


def calibrator_base(api, algo):
    """The TensorRT calibrator class to subclass for ``algo`` ('entropy2' or 'minmax')."""
    if api.branches["calibration"] != "implicit":
        raise UserError("%s has no INT8 calibrators (implicit INT8 was removed): use --int8-mode qdq"
                        % api.display_name)
    return getattr(api.module, CALIBRATORS[algo])


def set_int8_calibrator(api, config, calibrator, calibration_profile=None):
    config.int8_calibrator = calibrator
    if calibration_profile is not None:
        config.set_calibration_profile(calibration_profile)


def set_compute_capabilities(api, config, names):
    """TensorRT-RTX only: build ahead of time for these compute capabilities (e.g. ['SM86'])."""
    if api.branches["hardware_target"] != "compute_capabilities":
        raise UserError("--compute-capability is a TensorRT-RTX option; %s builds for the GPU it runs on"
                        % api.display_name)
    trt = api.module
    members = [m for m in dir(trt.ComputeCapability) if m.isupper() and m != "NONE"]
    values = []
    for n in names:
        key = n.upper()
        if not hasattr(trt.ComputeCapability, key) or key == "NONE":
            raise UserError("unknown compute capability %r (choose from %s)" % (n, ", ".join(members)))
        values.append(getattr(trt.ComputeCapability, key))
    config.num_compute_capabilities = len(values)
    for i, v in enumerate(values):
        if not config.set_compute_capability(v, i):
            raise UserError("%s refused compute capability %s" % (api.display_name, names[i]))


def hardware_target(api, config):
    """What the engine is built for, as a JSON-able dict."""
    branch = api.branches["hardware_target"]
    if branch == "compute_capabilities":
        n = config.num_compute_capabilities
        caps = [_severity_name(config.get_compute_capability(i)) for i in range(n)]
        return {"kind": "compute_capabilities", "compute_capabilities": caps or ["default"],
                "note": "TensorRT-RTX ahead-of-time build" + ("" if caps else " for its default set")}
    target = {"kind": "build_gpu", "note": "runs on GPUs of the build GPU's compute capability"}
    if branch == "compatibility_level":
        target["hardware_compatibility_level"] = _severity_name(config.hardware_compatibility_level)
    return target


def parser_errors(parser):
    return [str(parser.get_error(i)) for i in range(parser.num_errors)]


def serialize_timing_cache(config):
    cache = config.get_timing_cache()
    return None if cache is None else bytes(cache.serialize())


# -- plugins ------------------------------------------------------------------------------------------------------

def check_plugin_files(paths):
    """UserError unless every path is an existing shared library (ELF, or Mach-O / PE by magic)."""
    for p in paths:
        if not os.path.isfile(p):
            raise UserError("plugin library not found: %s; build it: make -C plugin" % p)
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic not in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe") and magic[:2] != b"MZ":
            raise UserError("%s is not a shared library (a plugin library is a .so built by make -C plugin)" % p)


def load_plugin_libraries(api, logger, paths):
    """dlopen each library (its static registration runs) and initialise TensorRT's own plugins."""
    handles = []
    check_plugin_files(paths)
    for p in paths:
        try:
            handles.append(ctypes.CDLL(os.path.abspath(p), mode=getattr(ctypes, "RTLD_GLOBAL", 0)))
        except OSError as e:
            raise UserError("cannot load plugin library %s (%s); rebuild it against this TensorRT: make -C plugin"
                            % (p, str(e).splitlines()[0]))
    if paths:
        api.module.init_libnvinfer_plugins(logger, "")
    return handles


def find_plugin_creator(api, name, version="1", namespace=""):
    registry = api.module.get_plugin_registry()
    if api.branches["plugin_registry"] == "get_creator":
        return registry.get_creator(name, version, namespace)
    return registry.get_plugin_creator(name, version, namespace)


# -- running ------------------------------------------------------------------------------------------------------

_NP_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
              "BOOL": "bool", "UINT8": "uint8", "BF16": None, "FP8": None}


def np_dtype(trt_dtype):
    import numpy as np
    name = _severity_name(trt_dtype)
    np_name = _NP_DTYPES.get(name)
    if np_name is None:
        raise UserError("I/O tensors of type %s are not supported by this runner" % name)
    return np.dtype(np_name)


class TensorInfo(object):
    def __init__(self, name, is_input, dtype, shape):
        self.name, self.is_input, self.dtype, self.shape = name, is_input, dtype, tuple(shape)

    def __repr__(self):
        return "TensorInfo(%r, %s, %s, %s)" % (self.name, "in" if self.is_input else "out", self.dtype, self.shape)


class _IOBase(object):
    def _static(self, name):
        return all(d >= 0 for t in self.tensors if t.name == name for d in t.shape)


class _TensorNameIO(_IOBase):
    """8.5+: I/O tensors by name; addresses are set once per change, then execute_async_v3(stream)."""

    def __init__(self, api, engine):
        self.api, self.engine = api, engine
        mode_in = api.module.TensorIOMode.INPUT
        self.tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            self.tensors.append(TensorInfo(name, engine.get_tensor_mode(name) == mode_in,
                                           np_dtype(engine.get_tensor_dtype(name)), engine.get_tensor_shape(name)))
        self.num_profiles = engine.num_optimization_profiles

    def profile_shapes(self, profile, name):
        return [tuple(s) for s in self.engine.get_tensor_profile_shape(name, profile)]

    def bind(self, context, profile, input_shapes, addresses):
        """Set input shapes and every tensor address; return {output name: shape}."""
        for name, shape in input_shapes.items():
            if self._static(name):
                continue  # a static input's shape is fixed (the caller selected a matching profile)
            if not context.set_input_shape(name, tuple(shape)):
                raise UserError("TensorRT rejected input shape %s for %r (profile %d)" % (tuple(shape), name, profile))
        for name, ptr in addresses.items():
            if not context.set_tensor_address(name, int(ptr)):
                raise RuntimeError("TensorRT refused the address of tensor %r (see the TensorRT messages above)"
                                   % name)
        return {t.name: tuple(context.get_tensor_shape(t.name)) for t in self.tensors if not t.is_input}

    def execute(self, context, stream_handle):
        if not context.execute_async_v3(stream_handle):
            raise RuntimeError("execute_async_v3 failed (see the TensorRT messages above)")


class _BindingIO(_IOBase):
    """8.2-8.4: bindings, replicated per optimization profile (profile p owns indices p*n .. p*n+n-1)."""

    def __init__(self, api, engine):
        self.api, self.engine = api, engine
        self.num_profiles = engine.num_optimization_profiles
        self.per_profile = engine.num_bindings // self.num_profiles
        self.tensors = []
        for i in range(self.per_profile):
            self.tensors.append(TensorInfo(engine.get_binding_name(i), engine.binding_is_input(i),
                                           np_dtype(engine.get_binding_dtype(i)), engine.get_binding_shape(i)))
        self._bindings = [0] * engine.num_bindings

    def _index(self, profile, name):
        for i, t in enumerate(self.tensors):
            if t.name == name:
                return profile * self.per_profile + i
        raise KeyError(name)

    def profile_shapes(self, profile, name):
        return [tuple(s) for s in self.engine.get_profile_shape(profile, self._index(profile, name))]

    def bind(self, context, profile, input_shapes, addresses):
        for name, shape in input_shapes.items():
            if self._static(name):
                continue
            if not context.set_binding_shape(self._index(profile, name), tuple(shape)):
                raise UserError("TensorRT rejected input shape %s for %r (profile %d)" % (tuple(shape), name, profile))
        if not context.all_binding_shapes_specified:
            raise RuntimeError("not every input shape is set")
        self._bindings = [0] * self.engine.num_bindings
        for name, ptr in addresses.items():
            self._bindings[self._index(profile, name)] = int(ptr)
        return {t.name: tuple(context.get_binding_shape(self._index(profile, t.name)))
                for t in self.tensors if not t.is_input}

    def execute(self, context, stream_handle):
        if not context.execute_async_v2(self._bindings, stream_handle):
            raise RuntimeError("execute_async_v2 failed (see the TensorRT messages above)")


def engine_io(api, engine):
    """An adapter over the engine's I/O: .tensors, .num_profiles, .profile_shapes(), .bind(), .execute()."""
    if api.branches["io"] == "tensor_names":
        return _TensorNameIO(api, engine)
    return _BindingIO(api, engine)


def stream_capturable(api, context, stream_handle):
    """Whether a CUDA graph may be captured on this stream now (always after a plain enqueue, except RTX asks)."""
    if api.branches["graph_capture"] == "ask_context":
        return bool(context.is_stream_capturable(stream_handle))
    return True


def make_profiler(api, sink):
    """An IProfiler that forwards (layer_name, ms) to ``sink(layer_name, ms)``."""
    trt = api.module

    class _Profiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name, ms):
            sink(layer_name, ms)

    return _Profiler()


def set_profiler(context, profiler, emits_profile=True):
    context.profiler = profiler
    context.enqueue_emits_profile = bool(emits_profile)


def report_to_profiler(context):
    if not context.report_to_profiler():
        raise RuntimeError("report_to_profiler failed")


def set_profile(context, profile, stream_handle):
    """Make ``profile`` active.  The binding raises RuntimeError when TensorRT refuses (pyCore.cpp: 22.04
    lines 295-301, v8.6.1 353-358, v10.16 346-352 throw instead of returning false); both mean the same here."""
    if context.active_optimization_profile != profile:
        try:
            ok = context.set_optimization_profile_async(profile, stream_handle)
        except RuntimeError as e:
            ok, why = False, str(e).strip().splitlines()[0] if str(e).strip() else "refused"
        else:
            why = "refused"
        if not ok:
            raise UserError("TensorRT refused optimization profile %d (%s)" % (profile, why))


def inspect_engine(api, engine, context=None):
    """Layer information as a dict: {"layers": [...], "io_tensors": [...], "io_key": key used by this release}."""
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    fmt = api.module.LayerInformationFormat.JSON
    info = json.loads(inspector.get_engine_information(fmt))
    if not info.get("Layers"):
        info["Layers"] = [json.loads(inspector.get_layer_information(i, fmt)) for i in range(engine.num_layers)]
    return normalize_inspector_json(info)


def normalize_inspector_json(info):
    io_key = next((k for k in INSPECTOR_IO_KEYS if k in info), None)
    layers = []
    for layer in info.get("Layers", []):
        layers.append(layer if isinstance(layer, dict) else {"Name": layer})
    return {"layers": layers, "io_tensors": info.get(io_key, []) if io_key else [], "io_key": io_key}


def deserialize(api, runtime, data):
    return runtime.deserialize_cuda_engine(data)


def new_runtime(api, logger):
    return api.module.Runtime(logger)


def new_builder(api, logger):
    return api.module.Builder(logger)


def new_parser(api, network, logger, plugin_override=False):
    """The ONNX parser; ``plugin_override``: set ENABLE_PLUGIN_OVERRIDE where the release has it (10.15+,
    TensorRT-RTX; see BRANCHES["parser_flags"]).  Returns the parser (``parser.plugin_override`` says if set)."""
    parser = api.module.OnnxParser(network, logger)
    if plugin_override and api.branches["parser_flags"] == "plugin_override":
        parser.set_flag(api.module.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    return parser


def create_context(api, engine, for_graphs=False):
    """An execution context; for CUDA-graph capture on TensorRT-RTX one whose dynamic-shape kernels are
    specialised eagerly (see BRANCHES["graph_capture"])."""
    if for_graphs and api.branches["graph_capture"] == "ask_context":
        config = engine.create_runtime_config()
        config.dynamic_shapes_kernel_specialization_strategy = \
            api.module.DynamicShapesKernelSpecializationStrategy.EAGER
        return engine.create_execution_context(config)
    return engine.create_execution_context()
