"""Tests that need a CUDA GPU; each skips itself with the reason when what it needs is missing."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (and, for the plugin kernels, plugin/build/libmvt_kernels.so)")
