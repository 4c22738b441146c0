"""A small CUDA interface for the TensorRT runtime: device and pinned buffers, a stream, events, CUDA graphs.

* :mod:`.api` -- errors (:class:`CudaError`, :class:`CudaUnavailable`, :func:`check`), the :class:`Backend`
  interface, backend selection (:func:`backend`, ``MOBILEVIT_TRT_CUDA``, :func:`driver_problem`,
  :func:`device_info`, :func:`total_memory`) and the owner objects (:class:`DeviceBuffer`, :class:`PinnedBuffer`,
  :class:`Stream`, :class:`Event`, :class:`Graph`, :class:`GraphExec`, :class:`GraphCache`, ``memcpy_*_async``).
* :mod:`.cuda_python` -- the cuda-python (cudart) backend and :func:`import_cudart`.
* :mod:`.pycuda_impl` -- the PyCUDA backend and the driver-API graph calls it uses.

This package re-exports those names (``cuda.Stream()``, ``cuda.backend()``, ...).  The selected backend is one
object per process, kept in :mod:`.api`.  Nothing here imports a CUDA binding at import time.
"""
from . import api, cuda_python, pycuda_impl
from .api import (BACKEND_ENV, CAPTURE_MODE_THREAD_LOCAL, Backend, CudaError, CudaUnavailable, DeviceBuffer, Event,
                  Graph, GraphCache, GraphExec, PinnedBuffer, Stream, backend, check, device_info, driver_problem,
                  memcpy_dtod_async, memcpy_dtoh_async, memcpy_htod_async, total_memory)
from .cuda_python import _call, import_cudart
from .pycuda_impl import _DriverGraphs

__all__ = [
    "api", "cuda_python", "pycuda_impl",
    "BACKEND_ENV", "CAPTURE_MODE_THREAD_LOCAL", "Backend", "CudaError", "CudaUnavailable", "DeviceBuffer", "Event",
    "Graph", "GraphCache", "GraphExec", "PinnedBuffer", "Stream", "backend", "check", "device_info",
    "driver_problem", "memcpy_dtod_async", "memcpy_dtoh_async", "memcpy_htod_async", "total_memory",
    "import_cudart",
    # private, used by benchmark/gpu_cuda_helpers_check.py (cuda._call, cuda._DriverGraphs)
    "_call", "_DriverGraphs",
]
