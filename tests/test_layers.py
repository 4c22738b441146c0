"""The import layers, checked on the source (AST, every import including those inside functions).

    scripts            convert_to_onnx.py ... pipeline.py, benchmark/*.py    may import everything below
    commands           mobilevit_trt.commands (the CLI of every stage),     may import the model package, library
                       mobilevit_trt.__main__
    model package      MobileViT_Pytorch (model, checkpoints, QAT, train)   may import the library
    library            mobilevit_trt (everything but .commands)             imports none of the above

and nowhere a ``sys.path`` edit or a module loaded by file path.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("convert_to_onnx", "onnx_add_plugin", "convert_to_trt", "test_trt", "test_trt_precision", "pipeline")


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _layer(module):
    if module.split(".")[0] in SCRIPTS or module.startswith("benchmark"):
        return 3, "scripts"
    if module in ("mobilevit_trt.commands", "mobilevit_trt.__main__") or module.startswith("mobilevit_trt.commands."):
        return 2, "commands"
    if module.split(".")[0] == "MobileViT_Pytorch":
        return 1, "model package"
    if module.split(".")[0] == "mobilevit_trt":
        return 0, "library"
    return None, "external"


def _imports(path):
    """(line, imported module) of every import in ``path``, relative imports resolved."""
    mod = _module_name(path)
    pkg = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(parts + ([base] if base else []))
            yield node.lineno, base
            for a in node.names:  # "from . import data" imports mobilevit_trt.data
                yield node.lineno, base + "." + a.name


def _sources():
    out = []
    for top in ("mobilevit_trt", "MobileViT_Pytorch", "benchmark"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            out += [os.path.join(d, f) for f in files if f.endswith(".py")]
    out += [os.path.join(ROOT, s + ".py") for s in SCRIPTS]
    return sorted(p for p in out if os.path.isfile(p))


def test_the_layer_rules_can_fail():
    # the checker itself: an upward import from the library is seen, a downward one is not
    assert _layer("mobilevit_trt.pipeline")[0] == 0 and _layer("MobileViT_Pytorch.checkpoint")[0] == 1
    assert _layer("mobilevit_trt.commands.export")[0] == 2 and _layer("benchmark.accuracy_table")[0] == 3
    assert _layer("convert_to_onnx")[0] == 3 and _layer("numpy")[0] is None


@pytest.mark.parametrize("path", _sources(), ids=lambda p: os.path.relpath(p, ROOT))
def test_no_upward_import(path):
    me, my_name = _layer(_module_name(path))
    bad = []
    for line, target in _imports(path):
        layer, name = _layer(target)
        if layer is not None and layer > me:
            bad.append("line %d: %s (%s) imports %s (%s)" % (line, os.path.relpath(path, ROOT), my_name, target, name))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _sources() + [os.path.join(ROOT, "tests", f) for f in sorted(os.listdir(
    os.path.join(ROOT, "tests"))) if f.endswith(".py") and f != "test_layers.py"], ids=lambda p: os.path.relpath(p, ROOT))
def test_no_sys_path_edits_or_loading_by_path(path):
    tree = ast.parse(open(path).read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("spec_from_file_location", "SourceFileLoader"):
            found.append("line %d: %s" % (node.lineno, node.attr))
        if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
                and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
            found.append("line %d: sys.path.%s" % (node.lineno, node.attr))
    assert not found, found
