"""CPU checks of plugin/ (no GPU, no TensorRT needed).

1. The kernels-only library builds with this machine's nvcc (``make -C plugin kernels SM=80`` into a temporary
   BUILD_DIR) and exports exactly the C ABI that plugin/kernels/mvt_kernels.h declares (``nm -D``).
   Skipped only when nvcc is absent.
2. The C++ plugin creators (plugin/trt/*.cpp) declare the plugin names, version, namespace and fields of
   mobilevit_trt/plugin_spec.py, in order and with their TensorRT field types, so the two cannot drift.
   (tests/test_plugin_lean_registry.py checks the same against a real TensorRT plugin registry.)
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mobilevit_trt import plugin_spec
from tests.plugin_helpers import PLUGIN, find_nvcc

HEADER = PLUGIN / "kernels" / "mvt_kernels.h"
BUILD_ARCH = "80"  # one architecture keeps the build short (tensor-core paths need sm_80+)


def header_api():
    """Names of the functions declared with MVT_API in mvt_kernels.h."""
    text = HEADER.read_text()
    return set(re.findall(r"MVT_API\s+[\w\s\*]+?\b(mvt_\w+)\s*\(", text))


@pytest.fixture(scope="module")
def kernels_build(tmp_path_factory):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, $CUDA_PATH/bin, /usr/local/cuda/bin): cannot build the kernels")
    if shutil.which("make") is None:
        pytest.skip("make not found")
    build_dir = tmp_path_factory.mktemp("plugin-build")
    cuda_path = str(Path(nvcc).resolve().parent.parent)
    cmd = ["make", "-C", str(PLUGIN), "kernels", "SM=" + BUILD_ARCH, "BUILD_DIR=" + str(build_dir), "-j2"]
    if not (Path(cuda_path) / "include" / "cuda_runtime.h").is_file():
        cuda_path = None  # nvcc is a wrapper script: let the Makefile find the toolkit
    env = dict(os.environ)
    if cuda_path and "CUDA_PATH" not in env:
        env["CUDA_PATH"] = cuda_path
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=env, timeout=900)
    if proc.returncode != 0:
        pytest.fail("`%s` failed (rc %d):\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-6000:]))
    return build_dir, proc.stdout


def test_header_declares_the_c_abi():
    assert header_api() >= {"mvt_layernorm", "mvt_attention", "mvt_status_string"}


def test_kernels_library_builds_and_exports_c_abi(kernels_build):
    build_dir, log = kernels_build
    lib = build_dir / "libmvt_kernels.so"
    assert lib.is_file(), log
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not found")
    out = subprocess.run([nm, "-D", "--defined-only", str(lib)], stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout
    exported = {parts[-1] for parts in (line.split() for line in out.splitlines()) if len(parts) >= 3
                and parts[1] == "T"}
    api = header_api()
    assert api <= exported, "not exported: %s" % sorted(api - exported)
    ours = {name for name in exported if name.startswith("mvt_")}
    assert ours == api, "exported but not declared in mvt_kernels.h: %s" % sorted(ours - api)
    # dependency files exist, so a header edit rebuilds what includes it
    assert (build_dir / "kernels" / "attention.d").is_file()
    assert "mvt_kernels.h" in (build_dir / "kernels" / "attention.d").read_text()


def test_kernels_build_has_no_warnings_in_our_sources(kernels_build):
    _, log = kernels_build
    ours = [line for line in log.splitlines() if "warning" in line.lower() and "plugin/kernels/" in line]
    assert not ours, "\n".join(ours)


# ------------------------------------------------------------------------------------------------ contract
FIELD_RE = re.compile(r'PluginField\(\s*"([^"]+)"\s*,\s*[^,]+,\s*(?:nvinfer1::)?PluginFieldType::k(\w+)\s*,\s*(\d+)\s*\)')


def parse_creator(path):
    """(plugin name, version, [(field, type)], text) from one plugin/trt/*.cpp, or None if it defines no plugin."""
    text = path.read_text()
    name = re.search(r'kPLUGIN_NAME\[\]\s*=\s*"([^"]*)"', text)
    if name is None:
        return None
    version = re.search(r'kPLUGIN_VERSION\[\]\s*=\s*"([^"]*)"', text)
    fields = [(f, t) for f, t, length in FIELD_RE.findall(text)]
    return name.group(1), version.group(1) if version else None, fields, text


def creators():
    found = {}
    for path in sorted((PLUGIN / "trt").glob("*.cpp")):
        parsed = parse_creator(path)
        if parsed is not None:
            assert parsed[0] not in found, "plugin %s defined twice" % parsed[0]
            found[parsed[0]] = parsed + (path.name,)
    return found


def namespace_constants():
    """[(value, file name)] of every ``kPLUGIN_NAMESPACE[] = "..."`` in plugin/trt/*.h / *.cpp."""
    found = []
    for path in sorted((PLUGIN / "trt").glob("*.[hc]*")):
        for value in re.findall(r'kPLUGIN_NAMESPACE\[\]\s*=\s*"([^"]*)"', path.read_text()):
            found.append((value, path.name))
    return found


def test_creators_cover_every_plugin_of_the_spec():
    spec = plugin_spec
    assert set(creators()) == set(spec.SPECS)


@pytest.mark.parametrize("op_type", list(plugin_spec.SPECS))
def test_creator_fields_match_spec(op_type):
    spec = plugin_spec
    name, version, fields, text, filename = creators()[op_type]
    expected = [(attr, trt_type) for attr, (_, trt_type, _) in spec.SPECS[op_type].items()]
    assert fields == expected, "%s declares %s, plugin_spec.py says %s" % (filename, fields, expected)
    assert version == spec.PLUGIN_VERSION
    for attr, (_, _, default) in spec.SPECS[op_type].items():
        # createPlugin reads every field by its contract name
        assert 'findField(fc, "%s")' % attr in text, "%s never reads field %r" % (filename, attr)
        if default is None:
            assert "missing required field '%s'" % attr in text, "%s does not require %r" % (filename, attr)
    assert re.search(r"MVT_REGISTER_PLUGIN\(\s*\w+Creator\s*\)", text), "%s registers no creator" % filename


def test_creator_namespace_is_the_spec_namespace():
    """One C++ namespace constant, equal to plugin_spec.PLUGIN_NAMESPACE; plugins, creators and the registrar use it.

    REGISTER_TENSORRT_PLUGIN registers under namespace "" (its PluginRegistrar calls registerCreator(instance, "")
    in TensorRT 8.2 .. 11.x), so no glue file may use it; MVT_REGISTER_PLUGIN must set and register kPLUGIN_NAMESPACE.
    """
    spec = plugin_spec
    assert spec.PLUGIN_NAMESPACE, "plugin_spec.PLUGIN_NAMESPACE is empty"
    constants = namespace_constants()
    assert [value for value, _ in constants] == [spec.PLUGIN_NAMESPACE], \
        "expected one kPLUGIN_NAMESPACE = %r, found %s" % (spec.PLUGIN_NAMESPACE, constants)
    common = (PLUGIN / "trt" / "mvtPluginCommon.h").read_text()
    # plugins and creators start in the namespace (clone / deserialize keep it)
    assert len(re.findall(r"std::string mNamespace\{kPLUGIN_NAMESPACE\};", common)) == 2, \
        "PluginBase and PluginCreatorBase must both initialise mNamespace to kPLUGIN_NAMESPACE"
    # the registrar sets the creator's namespace, then registers it under the same one
    registrar = re.search(r"class PluginRegistrar\b(.*?)\n};", common, re.S)
    assert registrar, "mvtPluginCommon.h defines no PluginRegistrar"
    body = registrar.group(1)
    set_at = body.find("mCreator.setPluginNamespace(kPLUGIN_NAMESPACE)")
    register_at = body.find("registerCreator(mCreator, kPLUGIN_NAMESPACE)")
    assert 0 <= set_at < register_at, "PluginRegistrar must set, then register under, kPLUGIN_NAMESPACE"
    assert re.search(r"#define MVT_REGISTER_PLUGIN\(Creator\)\s+static ::mvt::plugin::PluginRegistrar<Creator>",
                     common), "MVT_REGISTER_PLUGIN must instantiate mvt::plugin::PluginRegistrar"
    for path in sorted((PLUGIN / "trt").glob("*.cpp")):
        code = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())  # not comments
        assert "REGISTER_TENSORRT_PLUGIN" not in code, "%s registers under namespace \"\"" % path.name
        assert not re.search(r'registerCreator\([^;]*""', code), "%s registers under namespace \"\"" % path.name
