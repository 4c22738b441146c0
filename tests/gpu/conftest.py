"""Tests that need a CUDA GPU; each skips itself with the reason when what it needs is missing."""
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (and, for the plugin kernels, plugin/build/libmvt_kernels.so)")


@pytest.fixture(scope="module")
def chk():
    """benchmark/gpu_cuda_helpers_check.py as a module (``benchmark`` is a package: the repository root is on
    the import path under ``python -m pytest``), once cuda-python, a GPU and CuPy are there."""
    from mobilevit_trt import cuda
    cudart, why = cuda.import_cudart()
    if cudart is None:
        pytest.skip(why)
    try:
        cuda.backend()
    except cuda.CudaUnavailable as e:
        pytest.skip(str(e))
    pytest.importorskip("cupy", reason="needs CuPy for the test kernels")
    from benchmark import gpu_cuda_helpers_check
    return gpu_cuda_helpers_check


@pytest.fixture(scope="module")
def kernels(chk):
    """The CuPy test kernels of that module."""
    return chk.Kernels()
