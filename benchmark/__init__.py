"""The benchmark and data scripts, importable as modules: ``python -m benchmark.<script>`` from the repository root
runs one without installing the package; ``import benchmark.gpu_cuda_helpers_check`` is how tests/gpu uses its
checks.  Run directly (``python benchmark/<script>.py``) they import the installed package (``pip install -e .``,
which scripts/setup.sh does)."""
