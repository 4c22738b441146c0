"""Contract between trt_compat's declared API surface and the real TensorRT Python APIs.

* Selection: evaluating trt_compat.select_branches on each release's API table (tests/data/trt_python_api.json:
  TensorRT 8.2.4, 8.6.1, 10.16, 11.1) picks, per topic, a branch that declares it serves that release.
* Names: every (class, attribute) a branch declares exists in each release it serves (table + the hand-checked
  supplement), COMMON names in every release, and, for TensorRT-RTX, on the real ``tensorrt_rtx`` classes.
* Completeness: every attribute that build.py / runtime.py / calib.py / trt_compat.py use and that is a TensorRT
  member name somewhere is declared (or listed in trt_compat.NON_TRT_ATTRIBUTES).
* Sources (only with $TRT_SOURCE_GIT_DIR = a git dir of NVIDIA/TensorRT): the names each branch declares for
  8.2.4 / 8.6.1 (and 10.16 / 11.1) are bound in python/src at tags 22.04 / v8.6.1 (/ v10.16 / v11.1).
No fake TensorRT module is involved: tables are data, and the RTX checks use the installed module.
"""
import ast
import json
import os
import re
import subprocess

import pytest

from mobilevit_trt import trt_compat as tc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
TABLE_RELEASES = ("8.2.4", "8.6.1", "10.16", "11.1")
SOURCE_TAGS = {"8.2.4": "22.04", "8.6.1": "v8.6.1", "10.16": "v10.16", "11.1": "v11.1"}
CODE = ["mobilevit_trt/trt_compat.py", "mobilevit_trt/build.py", "mobilevit_trt/runtime.py", "mobilevit_trt/calib.py"]
#: the classes the build and runtime code must find on the real TensorRT-RTX module
RTX_CLASSES = ("Builder", "IBuilderConfig", "INetworkDefinition", "OnnxParser", "ICudaEngine", "IExecutionContext",
               "Runtime", "IProfiler")


def _tables():
    with open(os.path.join(DATA, "trt_python_api.json")) as f:
        tables = json.load(f)
    with open(os.path.join(DATA, "trt_python_api_supplement.json")) as f:
        extra = json.load(f)
    for rel, classes in extra.items():
        if rel.startswith("_"):
            continue
        for cls, entry in classes.items():
            members = tables[rel].setdefault(cls, [])
            members.extend(m for m in entry["members"] if m not in members)
    return tables


TABLES = _tables()


def table_has(release):
    t = TABLES[release]

    def has(cls, attr=None):
        return cls in t and (attr is None or attr in t[cls])
    return has


def _all_names():
    for topic, branches in tc.BRANCHES.items():
        for branch, d in branches.items():
            for cls, attr in d["names"]:
                yield topic, branch, d["serves"], cls, attr
    for group, names in tc.COMMON.items():
        for cls, attr in names:
            yield "common", group, tc.RELEASES, cls, attr


def _rtx():
    try:
        import tensorrt_rtx
    except ImportError as e:  # pragma: no cover - CI installs it
        pytest.skip("tensorrt_rtx not importable (pip install tensorrt-rtx): %s" % e)
    return tensorrt_rtx


def test_every_branch_declares_known_releases():
    for topic, branches in tc.BRANCHES.items():
        served = [r for d in branches.values() for r in d["serves"]]
        for r in served:
            assert r in tc.RELEASES, (topic, r)
        assert sorted(served) == sorted(tc.RELEASES), "%s: each release served by exactly one branch" % topic


@pytest.mark.parametrize("release", TABLE_RELEASES)
def test_selection_on_each_release_table(release):
    sel = tc.select_branches(table_has(release))
    assert set(sel) == set(tc.BRANCHES)
    for topic, branch in sel.items():
        assert release in tc.BRANCHES[topic][branch]["serves"], (
            "%s picks %s.%s, which does not declare it serves %s" % (release, topic, branch, release))


@pytest.mark.parametrize("release", TABLE_RELEASES)
def test_declared_names_exist_in_release_table(release):
    has = table_has(release)
    missing = [(topic, branch, cls, attr) for topic, branch, serves, cls, attr in _all_names()
               if release in serves and not has(cls, attr)]
    assert not missing, "names missing from the %s API table: %s" % (release, missing)


def test_expected_branches_per_release():
    """The facts of shared/TRT_API.md, as the tables show them."""
    expect = {
        "8.2.4": {"network": "explicit_batch", "workspace": "max_workspace_size", "precision": "builder_flags",
                  "calibration": "implicit", "io": "bindings", "plugin_registry": "get_plugin_creator"},
        "8.6.1": {"network": "explicit_batch", "workspace": "memory_pool", "precision": "builder_flags",
                  "calibration": "implicit", "io": "tensor_names", "plugin_registry": "get_plugin_creator"},
        "10.16": {"network": "default", "workspace": "memory_pool", "precision": "builder_flags",
                  "calibration": "implicit", "io": "tensor_names", "plugin_registry": "get_creator"},
        "11.1": {"network": "strongly_typed", "workspace": "memory_pool", "precision": "strongly_typed_onnx",
                 "calibration": "qdq_only", "io": "tensor_names", "plugin_registry": "get_creator"},
    }
    for release, want in expect.items():
        sel = tc.select_branches(table_has(release))
        assert {k: sel[k] for k in want} == want, release


def test_real_tensorrt_rtx_module():
    mod = _rtx()
    api = tc.TrtApi(mod, "tensorrt_rtx")
    for topic, branch in api.branches.items():
        assert "rtx" in tc.BRANCHES[topic][branch]["serves"], (topic, branch)
    assert api.branches["precision"] == "strongly_typed_onnx" and api.branches["io"] == "tensor_names"
    checked = set()
    missing = []
    for topic, branch, serves, cls, attr in _all_names():
        if "rtx" not in serves or (topic != "common" and api.branches[topic] != branch):
            continue
        obj = getattr(mod, cls, None)
        checked.add(cls)
        if obj is None or (attr is not None and not hasattr(obj, attr)):
            missing.append((topic, branch, cls, attr))
    assert not missing, "declared names missing on the real tensorrt_rtx classes: %s" % missing
    for cls in RTX_CLASSES:
        assert cls in checked, "%s is not covered by the declared names" % cls
    for fn in tc.MODULE_FUNCTIONS:
        assert hasattr(mod, fn), fn


def test_live_rtx_objects_have_the_build_names():
    """Instances (not only classes) of Builder, IBuilderConfig, INetworkDefinition, OnnxParser carry the names."""
    mod = _rtx()
    api = tc.TrtApi(mod, "tensorrt_rtx")
    logger = tc.make_logger(api)
    builder = tc.new_builder(api, logger)
    network = tc.create_network(api, builder)
    config = builder.create_builder_config()
    parser = tc.new_parser(api, network, logger)
    live = {"Builder": builder, "INetworkDefinition": network, "IBuilderConfig": config, "OnnxParser": parser,
            "IOptimizationProfile": builder.create_optimization_profile()}
    for topic, branch, serves, cls, attr in _all_names():
        if cls in live and attr and "rtx" in serves and (topic == "common" or api.branches[topic] == branch):
            assert hasattr(live[cls], attr), (cls, attr)
    flag = mod.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert network.get_flag(flag)


def _code_attributes(path):
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read(), path)
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def _trt_universe():
    names = set()
    for t in TABLES.values():
        for cls, members in t.items():
            names.add(cls)
            names.update(members)
    try:
        import tensorrt_rtx as mod
    except ImportError:
        return names
    for n in dir(mod):
        names.add(n)
        obj = getattr(mod, n)
        if isinstance(obj, type):
            names.update(m for m in dir(obj) if not m.startswith("__"))
    return names


def test_code_uses_only_declared_trt_names():
    declared = set(tc.MODULE_FUNCTIONS)
    for _, _, _, cls, attr in _all_names():
        declared.add(cls)
        if attr:
            declared.add(attr)
    universe = _trt_universe()
    for path in CODE:
        undeclared = sorted(a for a in _code_attributes(path)
                            if a in universe and a not in declared and a not in tc.NON_TRT_ATTRIBUTES)
        assert not undeclared, "%s uses TensorRT member names not declared in trt_compat: %s" % (path, undeclared)


def test_only_trt_compat_imports_or_versions_tensorrt():
    pat = re.compile(r"^\s*(import|from)\s+tensorrt(_rtx)?\b|import_module\(\s*['\"]tensorrt|"
                     r"\b(trt|tensorrt|tensorrt_rtx)\.__version__", re.M)
    offenders = []
    for folder, _, names in os.walk(os.path.join(ROOT, "mobilevit_trt")):
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path == os.path.join(ROOT, "mobilevit_trt", "trt_compat.py"):
                continue
            with open(path) as f:
                if pat.search(f.read()):
                    offenders.append(os.path.relpath(path, ROOT))
    for script in ("convert_to_trt.py", "test_trt.py"):
        with open(os.path.join(ROOT, script)) as f:
            if pat.search(f.read()):
                offenders.append(script)
    assert not offenders, "TensorRT imports/version checks outside trt_compat: %s" % offenders


def test_inspector_io_key_is_normalised():
    old = {"Layers": [{"Name": "conv"}], "Bindings": ["input", "class"]}
    new = {"Layers": ["conv"], "I/O Tensors": ["input", "class"]}
    a, b = tc.normalize_inspector_json(old), tc.normalize_inspector_json(new)
    assert a["io_tensors"] == b["io_tensors"] == ["input", "class"]
    assert (a["io_key"], b["io_key"]) == ("Bindings", "I/O Tensors")
    assert a["layers"] == b["layers"] == [{"Name": "conv"}]


# -- binding sources (run where a checkout of NVIDIA/TensorRT is available) -------------------------------------------

_CLASS_RE = re.compile(r'py::(?:class_|enum_)<.{0,300}?[({]\s*(\w+)\s*,\s*"(\w+)"', re.S)
_MEMBER_RE = re.compile(r'\.(?:def\w*|value)\(\s*"(\w+)"')
_MODULE_DEF_RE = re.compile(r'\bm\.def\(\s*"(\w+)"')
_BINDING_VAR_RE = re.compile(r'py::class_<[^;{]{0,300}?>\s*(\w+)\s*[({]\s*m\s*,\s*"(\w+)"')


def _git(gitdir, *args):
    return subprocess.run(["git", "--git-dir=%s" % gitdir] + list(args), check=True, stdout=subprocess.PIPE,
                          universal_newlines=True).stdout


def binding_source_names(gitdir, tag):
    """{class: set(members)} and set(module functions) bound in python/src/*.cpp at ``tag``."""
    classes, functions = {}, set()
    files = [f for f in _git(gitdir, "ls-tree", "-r", "--name-only", tag, "python/").split()
             if f.startswith("python/src/") and f.endswith(".cpp")]
    for path in files:
        text = _git(gitdir, "show", "%s:%s" % (tag, path))
        functions.update(_MODULE_DEF_RE.findall(text))
        for var, name in _BINDING_VAR_RE.findall(text):  # e.g. baseLoggerBinding.def("log", ...) later on
            for stmt in re.findall(r'\b%s\s*\.[^;]*;' % re.escape(var), text):
                classes.setdefault(name, set()).update(_MEMBER_RE.findall(stmt))
        starts = list(_CLASS_RE.finditer(text))
        last_top = None
        for i, m in enumerate(starts):
            parent, name = m.group(1), m.group(2)
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            members = classes.setdefault(name, set())
            members.update(_MEMBER_RE.findall(text[m.end():end]))
            if parent == "m":
                last_top = name
            elif last_top:  # a nested enum, e.g. ILogger.Severity
                classes[last_top].add(name)
    for path in _git(gitdir, "ls-tree", "-r", "--name-only", tag, "python/packaging/").split():
        if path.endswith("__init__.py") and "__version__ =" in _git(gitdir, "show", "%s:%s" % (tag, path)):
            functions.add("__version__")
    return classes, functions


@pytest.mark.skipif(not os.environ.get("TRT_SOURCE_GIT_DIR"),
                    reason="set TRT_SOURCE_GIT_DIR to a git dir of NVIDIA/TensorRT to check the binding sources")
@pytest.mark.parametrize("release", TABLE_RELEASES)
def test_declared_names_are_bound_in_sources(release):
    classes, functions = binding_source_names(os.environ["TRT_SOURCE_GIT_DIR"], SOURCE_TAGS[release])
    missing = [(topic, branch, cls, attr) for topic, branch, serves, cls, attr in _all_names()
               if release in serves and (cls not in classes or (attr and attr != "__str__"
                                                                and attr not in classes[cls]))]
    assert not missing, "not bound in python/src at %s: %s" % (SOURCE_TAGS[release], missing)
    assert set(tc.MODULE_FUNCTIONS) <= functions


#: names that must NOT be bound at a tag: proves the source reader discriminates (it is not vacuous)
ABSENT_AT = {"8.2.4": [("ICudaEngine", "num_io_tensors"), ("IExecutionContext", "execute_async_v3"),
                       ("IBuilderConfig", "set_memory_pool_limit")],
             "10.16": [("IBuilderConfig", "max_workspace_size"), ("ICudaEngine", "num_bindings")],
             "11.1": [("BuilderFlag", "FP16"), ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),
                      ("IPluginRegistry", "get_plugin_creator"), ("IBuilderConfig", "int8_calibrator")]}


@pytest.mark.skipif(not os.environ.get("TRT_SOURCE_GIT_DIR"),
                    reason="set TRT_SOURCE_GIT_DIR to a git dir of NVIDIA/TensorRT to check the binding sources")
@pytest.mark.parametrize("release", sorted(ABSENT_AT))
def test_source_reader_sees_removals(release):
    classes, _ = binding_source_names(os.environ["TRT_SOURCE_GIT_DIR"], SOURCE_TAGS[release])
    for cls, attr in ABSENT_AT[release]:
        assert attr not in classes.get(cls, set()), (release, cls, attr)


# -- the TensorRT 11.4 lean runtime: the real runtime classes of the 10+/11 branch, on a CPU machine -------------------

#: every runtime call the 10+/11 code path (trt_compat's tensor_names / get_creator / after_plain_enqueue branches
#: and COMMON["run"]) makes, with the kinds of the positional arguments it passes.  The AST check below keeps this
#: list equal to the calls in the code; the lean check keeps it equal to the real binding's signatures.
LEAN_CALLS = {
    ("Runtime", "deserialize_cuda_engine"): ("buffer",),
    ("ICudaEngine", "create_execution_context"): (),
    ("ICudaEngine", "get_tensor_name"): ("int",),
    ("ICudaEngine", "get_tensor_mode"): ("str",),
    ("ICudaEngine", "get_tensor_dtype"): ("str",),
    ("ICudaEngine", "get_tensor_shape"): ("str",),
    ("ICudaEngine", "get_tensor_profile_shape"): ("str", "int"),
    ("IExecutionContext", "set_input_shape"): ("str", "shape"),
    ("IExecutionContext", "get_tensor_shape"): ("str",),
    ("IExecutionContext", "set_tensor_address"): ("str", "int"),
    ("IExecutionContext", "execute_async_v3"): ("int",),
    ("IExecutionContext", "set_optimization_profile_async"): ("int", "int"),
    ("IExecutionContext", "report_to_profiler"): (),
    ("IPluginRegistry", "get_creator"): ("str", "str", "str"),
}
#: calls only the TensorRT-RTX branches make (checked on the real tensorrt_rtx classes)
RTX_CALLS = {
    ("ICudaEngine", "create_execution_context"): ("runtime_config",),
    ("ICudaEngine", "create_runtime_config"): (),
    ("IExecutionContext", "is_stream_capturable"): ("int",),
}
#: attributes read or assigned, not called
LEAN_PROPERTIES = [("ICudaEngine", "num_io_tensors"), ("ICudaEngine", "num_optimization_profiles"),
                   ("ICudaEngine", "num_layers"), ("IExecutionContext", "active_optimization_profile"),
                   ("IExecutionContext", "profiler"), ("IExecutionContext", "enqueue_emits_profile")]
#: enum members and overridable methods the runtime path uses
LEAN_OTHER = [("TensorIOMode", "INPUT"), ("IProfiler", "report_layer_time"), ("ILogger", "log"),
              ("ILogger", "Severity")]
_KIND_TYPES = {"str": ("str",), "int": ("SupportsInt", "int"), "shape": ("tuple", "list", "Dims"),
               "buffer": ("Buffer", "buffer", "bytes"), "runtime_config": ("IRuntimeConfig",)}


def _lean():
    try:
        import tensorrt_lean_bindings
    except ImportError as e:  # pragma: no cover - CI installs it (requirements-engine.txt)
        pytest.skip("tensorrt_lean_bindings not importable (pip install tensorrt-lean-cu13-libs "
                    "tensorrt-lean-cu13-bindings): %s" % e)
    return tensorrt_lean_bindings


def _split_params(text):
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def pybind_overloads(func, name):
    """[[(param name, type text, has default)], ...] from a pybind11 docstring (every overload), self dropped."""
    overloads = []
    for line in (func.__doc__ or "").splitlines():
        m = re.match(r"^\s*(?:\d+\.\s*)?%s\((.*)\)\s*->" % re.escape(name), line)
        if not m or m.group(1) == "*args, **kwargs":
            continue
        params = []
        for p in _split_params(m.group(1))[1:]:
            pname, _, rest = p.partition(":")
            ptype, eq, _ = rest.partition("=")
            params.append((pname.strip(), ptype.strip(), bool(eq)))
        overloads.append(params)
    return overloads


def _accepts(overload, kinds):
    required = sum(1 for _, _, d in overload if not d)
    if not required <= len(kinds) <= len(overload):
        return False
    return all(any(t == ptype or ptype.endswith("." + t) for t in _KIND_TYPES[k])
               for k, (_, ptype, _) in zip(kinds, overload))


def test_lean_runtime_has_every_runtime_call_with_a_compatible_signature():
    mod = _lean()
    assert mod.__version__.startswith("11."), mod.__version__
    bad = []
    for (cls, meth), kinds in sorted(LEAN_CALLS.items()):
        func = getattr(getattr(mod, cls, None), meth, None)
        if func is None:
            bad.append("%s.%s missing" % (cls, meth))
            continue
        overloads = pybind_overloads(func, meth)
        assert overloads, "%s.%s: no signature in its docstring" % (cls, meth)
        if not any(_accepts(o, kinds) for o in overloads):
            bad.append("%s.%s%s fits none of %s" % (cls, meth, kinds, overloads))
    for cls, attr in LEAN_PROPERTIES:
        if not isinstance(getattr(getattr(mod, cls, None), attr, None), property):
            bad.append("%s.%s is not a property" % (cls, attr))
    for cls, attr in LEAN_OTHER:
        if not hasattr(getattr(mod, cls, None), attr):
            bad.append("%s.%s missing" % (cls, attr))
    assert not bad, bad


def test_rtx_only_calls_have_a_compatible_signature():
    mod = _rtx()
    for (cls, meth), kinds in sorted(RTX_CALLS.items()):
        func = getattr(getattr(mod, cls), meth)
        assert any(_accepts(o, kinds) for o in pybind_overloads(func, meth)), (cls, meth, kinds)


def test_lean_calls_cover_the_runtime_branches():
    """Every (class, attribute) the 10+/11 runtime branches and COMMON["run"] declare is checked above (or is an
    engine-inspector name: the lean runtime has no inspector), and the code's calls pass as many positional
    arguments as LEAN_CALLS says."""
    checked = set(LEAN_CALLS) | set(LEAN_PROPERTIES) | set(LEAN_OTHER)
    declared = set(tc.COMMON["run"])
    for topic, branch in (("io", "tensor_names"), ("plugin_registry", "get_creator")):
        declared |= set(tc.BRANCHES[topic][branch]["names"])
    inspector = {n for n in declared if n[0] in ("EngineInspector", "LayerInformationFormat")
                 or n[1] == "create_engine_inspector"}
    classes_only = {n for n in declared if n[1] is None}
    assert declared - inspector - classes_only <= checked, sorted(declared - inspector - classes_only - checked)
    by_method = {}
    for (cls, meth), kinds in list(LEAN_CALLS.items()) + list(RTX_CALLS.items()):
        by_method.setdefault(meth, set()).add(len(kinds))
    for path in ("mobilevit_trt/trt_compat.py", "mobilevit_trt/runtime.py"):
        with open(os.path.join(ROOT, path)) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in by_method \
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "trt_compat"):
                assert len(node.args) in by_method[node.func.attr], (path, node.lineno, node.func.attr)
