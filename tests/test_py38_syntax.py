"""Every Python file of the project parses as Python 3.8 (the reference TensorRT 22.04 container)."""
import ast
import os
import subprocess

from tests.helpers import ROOT


def _python_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [p for p in out if os.path.isfile(os.path.join(ROOT, p))]


def test_all_python_files_parse_as_py38():
    files = _python_files()
    assert len(files) >= 10
    bad = []
    for rel in files:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            src = f.read()
        try:
            tree = ast.parse(src, filename=rel, feature_version=(3, 8))
        except SyntaxError as e:
            bad.append("%s:%s: %s" % (rel, e.lineno, e.msg))
            continue
        bad.extend("%s:%d: %s" % (rel, line, what) for line, what in _runtime_38_problems(tree))
    assert not bad, "\n".join(bad)


BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _runtime_38_problems(tree):
    """Annotations that parse on 3.8 but fail when evaluated there: list[int] etc. (PEP 585) and X | Y
    (PEP 604), unless the module defers annotations with `from __future__ import annotations`."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__" and \
                any(a.name == "annotations" for a in node.names):
            return
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    annotations.append(a.annotation)
            if node.returns is not None:
                annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    for ann in annotations:
        for sub in ast.walk(ann):
            if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id in BUILTIN_GENERICS:
                yield sub.lineno, "builtin generic %s[...] in an annotation (Python 3.9+)" % sub.value.id
            if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr):
                yield sub.lineno, "X | Y union in an annotation (Python 3.10+)"


def test_runtime_annotation_check_can_fail():
    assert list(_runtime_38_problems(ast.parse("def f(a: list[int]) -> None: pass\n")))
    assert list(_runtime_38_problems(ast.parse("def f(a: int | None): pass\n")))
    assert not list(_runtime_38_problems(ast.parse("from typing import List\ndef f(a: List[int]): pass\n")))


def test_py38_check_can_fail():
    """The check above is real: 3.9+ syntax is rejected with feature_version=(3, 8)."""
    for src in ("match x:\n    case 1: pass\n", "with (open('a') as f, open('b') as g): pass\n",
                "try:\n    pass\nexcept* ValueError:\n    pass\n"):
        try:
            ast.parse(src, feature_version=(3, 8))
        except SyntaxError:
            continue
        raise AssertionError("accepted as 3.8: %r" % src)
