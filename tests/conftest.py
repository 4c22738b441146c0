"""Imports in the tests (``tests.helpers``, ``mobilevit_trt``, ``benchmark``) resolve from the repository root:
run ``python -m pytest`` there (it makes the root importable); the package itself is also installed editable by
scripts/setup.sh (``pip install -e .``), which the scripts the tests run as subprocesses rely on."""
