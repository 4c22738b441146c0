"""The plugin library in a real TensorRT plugin registry (TensorRT 11.4 lean runtime, CPU only, no GPU needed).

A module fixture builds plugin/ (``make -C plugin plugins SM=90 PTX=0``, into a temporary BUILD_DIR) against the
TensorRT headers in the folder named by the environment variable ``MVT_TRT_INCLUDE`` (the folder holding NvInfer.h),
links it to ``libnvinfer_lean.so.11`` of the pip wheel tensorrt-lean-cu13-libs (``TRT_LIB=<its folder>
TRT_LINK_LIB=nvinfer_lean``) and loads it with ``tensorrt_lean_bindings.get_plugin_registry().load_library()``.
Headers come from a clone of NVIDIA/TensorRT, extracted outside this repository, e.g.::

    git --git-dir=<NVIDIA/TensorRT bare clone> archive v11.1 include | tar x -C /tmp/trt-v11.1
    MVT_TRT_INCLUDE=/tmp/trt-v11.1/include python -m pytest -q tests/test_plugin_lean_registry.py

Skipped, with the reason, when MVT_TRT_INCLUDE is unset (as in CI, which cannot fetch headers), when
tensorrt_lean_bindings / tensorrt_lean_libs are not importable, or when nvcc or make is absent. A MVT_TRT_INCLUDE
without NvInfer.h is an error, not a skip.

Everything is compared with mobilevit_trt/plugin_spec.py and the payload layout documented in plugin/README.md
("Serialized payload": the spec's fields in spec order, each one little-endian scalar, FLOAT32 -> float32,
INT32 -> int32, nothing else), never with copies of the contract:

* every spec plugin has a creator under (name, PLUGIN_VERSION, PLUGIN_NAMESPACE), and none of ours under "";
* each creator's field names and types equal the spec's;
* a plugin made from fields built the way the ONNX parser builds them from node attributes (its fallback plugin
  importer walks the creator's getFieldNames() and turns each ONNX attribute present on the node into a field:
  FLOAT -> FLOAT32, INT -> INT32, length 1) serialises to the values given; serialize -> deserialize_plugin ->
  serialize and clone() -> serialize give identical bytes; plugin type, version and namespace are the spec's;
* bad fields (a required one missing, a wrong type, out-of-range values) give no plugin and the plugin's own error
  line on stderr; malformed serialized blobs (truncated, too long, out-of-range values) are refused.
"""
import math
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mobilevit_trt import plugin_spec
from tests.plugin_helpers import PLUGIN, find_nvcc

ENV_VAR = "MVT_TRT_INCLUDE"
BUILD_ARCH = "90"  # one architecture keeps the build short; nothing runs on a GPU here

# The payload layout of plugin/README.md: one little-endian scalar per TensorRT field type.
PAYLOAD_FORMAT = {"FLOAT32": "f", "INT32": "i"}
# The ONNX parser's attribute -> plugin field conversion (FallbackPluginImporter / loadFields).
ONNX_TO_FIELD = {"FLOAT": ("FLOAT32", np.float32), "INT": ("INT32", np.int32)}
# Valid example values per ONNX attribute type (an INT differs from the spec default 1 to prove it is carried).
EXAMPLE = {"FLOAT": 0.1767766952966369, "INT": 4}


SPEC = plugin_spec
OPS = list(SPEC.SPECS)


def trt_version(include):
    text = (include / "NvInferVersion.h").read_text() if (include / "NvInferVersion.h").is_file() else ""
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        m = (re.search(r"#define TRT_%s_ENTERPRISE (\d+)" % part, text)
             or re.search(r"#define NV_TENSORRT_%s (\d+)" % part, text))
        parts.append(m.group(1) if m else "?")
    return ".".join(parts)


@pytest.fixture(scope="module")
def lean(tmp_path_factory):
    """(tensorrt_lean_bindings, registry, build info) with libmvt_plugins.so built and loaded."""
    include = os.environ.get(ENV_VAR)
    if not include:
        pytest.skip("%s is not set: no TensorRT headers to build the plugin library against (set it to a folder "
                    "holding NvInfer.h, e.g. include/ of `git archive v11.1 include` of NVIDIA/TensorRT)" % ENV_VAR)
    include = Path(include)
    if not (include / "NvInfer.h").is_file():
        pytest.fail("%s=%s holds no NvInfer.h" % (ENV_VAR, include))
    try:
        import tensorrt_lean_bindings as trt
        import tensorrt_lean_libs
    except ImportError as e:
        pytest.skip("TensorRT lean runtime not importable (pip install tensorrt-lean-cu13-libs "
                    "tensorrt-lean-cu13-bindings): %s" % e)
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, $CUDA_PATH/bin, /usr/local/cuda/bin): cannot build the plugin library")
    if shutil.which("make") is None:
        pytest.skip("make not found")
    lean_dir = Path(tensorrt_lean_libs.__file__).resolve().parent
    if not sorted(lean_dir.glob("libnvinfer_lean.so*")):
        pytest.skip("no libnvinfer_lean.so* in %s" % lean_dir)

    build_dir = tmp_path_factory.mktemp("plugin-lean-build")
    cmd = ["make", "-C", str(PLUGIN), "plugins", "SM=" + BUILD_ARCH, "PTX=0", "TRT_INC=" + str(include),
           "TRT_LIB=" + str(lean_dir), "TRT_LINK_LIB=nvinfer_lean", "BUILD_DIR=" + str(build_dir),
           "-j%d" % max(1, min(4, os.cpu_count() or 1))]
    env = dict(os.environ)
    cuda_path = Path(nvcc).resolve().parent.parent
    if (cuda_path / "include" / "cuda_runtime.h").is_file() and "CUDA_PATH" not in env:
        env["CUDA_PATH"] = str(cuda_path)  # else nvcc is a wrapper script: let the Makefile find the toolkit
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                          timeout=900)
    lib = build_dir / "libmvt_plugins.so"
    if proc.returncode != 0 or not lib.is_file():
        pytest.fail("`%s` failed (rc %d):\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-8000:]))

    registry = trt.get_plugin_registry()
    # The library has no getCreators / getPluginCreators entry point: its static registrars (MVT_REGISTER_PLUGIN)
    # register the creators when load_library dlopens it, and the 11.4 binding then returns None as the handle.
    handle = registry.load_library(str(lib))
    info = {"lib": lib, "handle": handle, "headers": "%s (TensorRT %s)" % (include, trt_version(include)),
            "log": proc.stdout}
    return trt, registry, info


def creator_of(lean, op_type):
    trt, registry, info = lean
    creator = registry.get_creator(op_type, SPEC.PLUGIN_VERSION, SPEC.PLUGIN_NAMESPACE)
    assert creator is not None, "no creator (%r, %r, %r) after loading %s built with %s" % (
        op_type, SPEC.PLUGIN_VERSION, SPEC.PLUGIN_NAMESPACE, info["lib"], info["headers"])
    return creator


def field_collection(trt, fields):
    """PluginFieldCollection of [(name, numpy array, field type name)]; the arrays stay referenced by the caller."""
    return trt.PluginFieldCollection([trt.PluginField(name, data, getattr(trt.PluginFieldType, type_name))
                                      for name, data, type_name in fields])


def parser_fields(creator, attrs):
    """Fields the way the ONNX parser makes them from a node's attributes (see the module docstring)."""
    fields = []
    for f in creator.field_names:
        if f.name not in attrs:
            continue  # optional attribute left out: the creator's default applies
        value = attrs[f.name]
        onnx_type = "FLOAT" if isinstance(value, float) else "INT" if isinstance(value, int) else None
        assert onnx_type is not None, "attribute %s=%r is neither FLOAT nor INT" % (f.name, value)
        type_name, dtype = ONNX_TO_FIELD[onnx_type]
        fields.append((f.name, np.array([value], dtype=dtype), type_name))
    return fields


def example_values(op_type):
    return {attr: EXAMPLE[onnx_type] for attr, (onnx_type, _, _) in SPEC.SPECS[op_type].items()}


def expected_payload(op_type, values):
    """The bytes the documented layout gives for these attribute values (defaults filled from the spec)."""
    fmt, args = "<", []
    for attr, (onnx_type, trt_type, default) in SPEC.SPECS[op_type].items():
        fmt += PAYLOAD_FORMAT[trt_type]
        args.append(values.get(attr, default))
    return struct.pack(fmt, *args)


def decode_payload(op_type, blob):
    fmt = "<" + "".join(PAYLOAD_FORMAT[trt_type] for _, trt_type, _ in SPEC.SPECS[op_type].values())
    assert len(blob) == struct.calcsize(fmt), "%s payload is %d bytes, the layout says %d" % (
        op_type, len(blob), struct.calcsize(fmt))
    return dict(zip(SPEC.SPECS[op_type], struct.unpack(fmt, blob)))


def make_plugin(lean, op_type, name, **values):
    trt, _, _ = lean
    creator = creator_of(lean, op_type)
    fields = parser_fields(creator, SPEC.node_attrs(op_type, **values))
    plugin = creator.create_plugin(name, field_collection(trt, fields))
    assert plugin is not None, "create_plugin(%s, %s) failed" % (op_type, fields)
    return plugin


def no_plugin(call):
    """True when `call` gives no plugin: None (what the 11.4 binding returns for nullptr) or an exception."""
    try:
        return call() is None
    except Exception:
        return True


def own_error_lines(capfd, op_type, name=None):
    err = capfd.readouterr().err
    prefix = "[mvt_plugins] ERROR %s plugin%s" % (op_type, " '%s'" % name if name is not None else "")
    return [line for line in err.splitlines() if line.startswith(prefix)], err


# ------------------------------------------------------------------------------------------------ registration
@pytest.mark.parametrize("op_type", OPS)
def test_creator_registered_under_spec_name_version_namespace(lean, op_type):
    creator = creator_of(lean, op_type)
    assert creator.name == op_type
    assert creator.plugin_version == SPEC.PLUGIN_VERSION
    assert creator.plugin_namespace == SPEC.PLUGIN_NAMESPACE


def test_no_creator_of_ours_outside_the_spec_namespace(lean):
    _, registry, _ = lean
    ours = [(c.name, c.plugin_version, c.plugin_namespace) for c in registry.all_creators if c.name in SPEC.SPECS]
    assert sorted(ours) == sorted((op, SPEC.PLUGIN_VERSION, SPEC.PLUGIN_NAMESPACE) for op in OPS), ours
    for op_type in OPS:
        assert registry.get_creator(op_type, SPEC.PLUGIN_VERSION, "") is None, "%s also under namespace ''" % op_type


@pytest.mark.parametrize("op_type", OPS)
def test_creator_fields_are_the_spec_fields(lean, op_type):
    creator = creator_of(lean, op_type)
    got = [(f.name, f.type.name, f.size) for f in creator.field_names]
    assert got == [(attr, trt_type, 1) for attr, (_, trt_type, _) in SPEC.SPECS[op_type].items()]


# ------------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("op_type", OPS)
def test_plugin_from_node_attributes_round_trips(lean, op_type):
    values = example_values(op_type)
    plugin = make_plugin(lean, op_type, "node_" + op_type, **values)
    assert (plugin.plugin_type, plugin.plugin_version, plugin.plugin_namespace) == (
        op_type, SPEC.PLUGIN_VERSION, SPEC.PLUGIN_NAMESPACE)
    blob = bytes(plugin.serialize())
    assert blob == expected_payload(op_type, values)
    decoded = decode_payload(op_type, blob)
    for attr, (onnx_type, _, _) in SPEC.SPECS[op_type].items():
        want = float(np.float32(values[attr])) if onnx_type == "FLOAT" else values[attr]
        assert decoded[attr] == want, "%s.%s: serialized %r, given %r" % (op_type, attr, decoded[attr], want)

    again = creator_of(lean, op_type).deserialize_plugin("deserialized_" + op_type, blob)
    assert again is not None
    assert bytes(again.serialize()) == blob
    assert (again.plugin_type, again.plugin_namespace) == (op_type, SPEC.PLUGIN_NAMESPACE)

    copy = plugin.clone()
    assert copy is not None
    assert bytes(copy.serialize()) == blob
    assert (copy.plugin_type, copy.plugin_version, copy.plugin_namespace) == (
        op_type, SPEC.PLUGIN_VERSION, SPEC.PLUGIN_NAMESPACE)


@pytest.mark.parametrize("op_type", OPS)
def test_optional_fields_take_the_spec_default(lean, op_type):
    """A node without an optional attribute (node_attrs always writes them; a hand-made node may not)."""
    trt, _, _ = lean
    creator = creator_of(lean, op_type)
    optional = {attr for attr, (_, _, default) in SPEC.SPECS[op_type].items() if default is not None}
    fields = [f for f in parser_fields(creator, SPEC.node_attrs(op_type, **example_values(op_type)))
              if f[0] not in optional]
    plugin = creator.create_plugin("defaults_" + op_type, field_collection(trt, fields))
    assert plugin is not None, "create_plugin(%s) without %s failed" % (op_type, sorted(optional))
    decoded = decode_payload(op_type, bytes(plugin.serialize()))
    for attr, (_, _, default) in SPEC.SPECS[op_type].items():
        if default is not None:
            assert decoded[attr] == default, "%s.%s defaults to %r, spec says %r" % (
                op_type, attr, decoded[attr], default)


# ------------------------------------------------------------------------------------------------ bad fields
def bad_create(lean, capfd, op_type, name, fields):
    """create_plugin with these fields; asserts no plugin and returns the plugin's own error lines."""
    trt, _, _ = lean
    creator = creator_of(lean, op_type)
    capfd.readouterr()
    assert no_plugin(lambda: creator.create_plugin(name, field_collection(trt, fields))), \
        "%s accepted %s" % (op_type, [(n, d.tolist(), t) for n, d, t in fields])
    lines, err = own_error_lines(capfd, op_type, name)
    assert lines, "no '[mvt_plugins] ERROR %s plugin ...' line on stderr:\n%s" % (op_type, err)
    return lines


REQUIRED = [(op, attr) for op in OPS for attr, (_, _, default) in SPEC.SPECS[op].items() if default is None]
ALL_FIELDS = [(op, attr) for op in OPS for attr in SPEC.SPECS[op]]


@pytest.mark.parametrize("op_type,attr", REQUIRED)
def test_missing_required_field_gives_no_plugin(lean, capfd, op_type, attr):
    creator = creator_of(lean, op_type)
    fields = [f for f in parser_fields(creator, SPEC.node_attrs(op_type, **example_values(op_type))) if f[0] != attr]
    lines = bad_create(lean, capfd, op_type, "missing_" + attr, fields)
    assert any("missing required field '%s'" % attr in line for line in lines), lines


@pytest.mark.parametrize("op_type,attr", ALL_FIELDS)
def test_wrong_field_type_gives_no_plugin(lean, capfd, op_type, attr):
    creator = creator_of(lean, op_type)
    fields = parser_fields(creator, SPEC.node_attrs(op_type, **example_values(op_type)))
    trt_type = SPEC.SPECS[op_type][attr][1]
    wrong = "INT32" if trt_type == "FLOAT32" else "FLOAT32"  # e.g. scale passed as INT32
    dtype = np.int32 if wrong == "INT32" else np.float32
    fields = [(n, np.array([1], dtype=dtype), wrong) if n == attr else (n, d, t) for n, d, t in fields]
    lines = bad_create(lean, capfd, op_type, "wrongtype_" + attr, fields)
    assert any("field '%s' must be one %s" % (attr, trt_type) in line for line in lines), lines


OUT_OF_RANGE = [
    (SPEC.ATTENTION_OP, "num_heads", 0),
    (SPEC.ATTENTION_OP, "num_heads", -1),
    (SPEC.ATTENTION_OP, "scale", math.inf),
    (SPEC.ATTENTION_OP, "scale", -math.inf),
    (SPEC.ATTENTION_OP, "scale", math.nan),
    (SPEC.LAYERNORM_OP, "epsilon", -1e-5),
    (SPEC.LAYERNORM_OP, "epsilon", math.nan),
    (SPEC.LAYERNORM_OP, "epsilon", math.inf),
]


@pytest.mark.parametrize("op_type,attr,value", OUT_OF_RANGE, ids=lambda v: str(v))
def test_out_of_range_field_gives_no_plugin(lean, capfd, op_type, attr, value):
    assert attr in SPEC.SPECS[op_type], "%s has no field %r in plugin_spec" % (op_type, attr)
    values = dict(example_values(op_type), **{attr: value})
    fields = parser_fields(creator_of(lean, op_type), SPEC.node_attrs(op_type, **values))
    lines = bad_create(lean, capfd, op_type, "range_%s_%s" % (attr, value), fields)
    assert any(attr in line for line in lines), lines


# ------------------------------------------------------------------------------------------------ bad blobs
def malformed_blobs(op_type):
    good = expected_payload(op_type, example_values(op_type))
    blobs = {"empty": b"", "truncated": good[:-1], "one byte too many": good + b"\0"}
    for attr, (_, trt_type, _) in SPEC.SPECS[op_type].items():
        if trt_type == "FLOAT32":
            blobs[attr + " NaN"] = expected_payload(op_type, dict(example_values(op_type), **{attr: math.nan}))
    return good, blobs


@pytest.mark.parametrize("op_type", OPS)
def test_deserialize_refuses_malformed_blobs(lean, capfd, op_type):
    creator = creator_of(lean, op_type)
    good, blobs = malformed_blobs(op_type)
    assert creator.deserialize_plugin("good", good) is not None  # the reference layout itself is accepted
    for what, blob in blobs.items():
        capfd.readouterr()
        assert no_plugin(lambda: creator.deserialize_plugin("bad", blob)), "%s: accepted %s blob %r" % (
            op_type, what, blob)
        lines, err = own_error_lines(capfd, op_type)
        assert any("malformed serialized %s plugin (%d bytes)" % (op_type, len(blob)) in line for line in lines), \
            "%s blob: no error line of %s on stderr:\n%s" % (what, op_type, err)
