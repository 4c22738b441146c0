"""The cuda-python backend (:class:`_CudaPython`, a :class:`.api.Backend`): the CUDA runtime through
``cuda.bindings.runtime`` or, on older releases, ``cuda.cudart`` (:func:`import_cudart`); each call's result tuple
is checked by :func:`_call` (:func:`.api.check`)."""
import ctypes

from .api import _STATE, CAPTURE_MODE_THREAD_LOCAL, Backend, CudaUnavailable, check


def _call(fn, *args):
    """Call a cuda-python function and check its result tuple."""
    return check(fn(*args), fn.__name__)


def import_cudart():
    """Return (module, description) for the cuda-python runtime binding, or (None, reason)."""
    try:
        from cuda.bindings import runtime as cudart
        return cudart, "cuda-python (cuda.bindings.runtime)"
    except ImportError as e:
        first = str(e)
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 12.6.1+ warns that the old name is deprecated
            from cuda import cudart
        return cudart, "cuda-python (cuda.cudart)"
    except ImportError as e:
        return None, "cuda-python not importable (%s; %s)" % (first, e)


class _CudaPython(Backend):
    def __init__(self, cudart, description):
        self.rt = cudart
        self.description = description
        _STATE["cudart"] = cudart

    def init(self, device=0):
        n = _call(self.rt.cudaGetDeviceCount)
        if n < 1:
            raise CudaUnavailable("no CUDA device found")
        _call(self.rt.cudaSetDevice, device)
        _call(self.rt.cudaFree, 0)  # create the primary context now (TensorRT uses it)

    def device_info(self, device=0):
        prop = _call(self.rt.cudaGetDeviceProperties, device)
        name = prop.name
        name = name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
        return {"name": name, "compute_capability": "%d.%d" % (prop.major, prop.minor),
                "runtime_version": _call(self.rt.cudaRuntimeGetVersion),
                "driver_version": _call(self.rt.cudaDriverGetVersion), "backend": self.description}

    def total_memory(self, device=0):
        return _call(self.rt.cudaGetDeviceProperties, device).totalGlobalMem

    def malloc(self, nbytes):
        return int(_call(self.rt.cudaMalloc, nbytes))

    def free(self, ptr):
        _call(self.rt.cudaFree, ptr)

    def malloc_host(self, nbytes):
        ptr = int(_call(self.rt.cudaMallocHost, nbytes))
        array = _numpy_from_address(ptr, nbytes)
        return ptr, array

    def free_host(self, ptr, array):
        _call(self.rt.cudaFreeHost, ptr)

    def htod(self, dst_ptr, host_array, nbytes, stream):
        _call(self.rt.cudaMemcpyAsync, dst_ptr, host_array.ctypes.data, nbytes,
              self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def dtoh(self, host_array, src_ptr, nbytes, stream):
        _call(self.rt.cudaMemcpyAsync, host_array.ctypes.data, src_ptr, nbytes,
              self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def dtod(self, dst_ptr, src_ptr, nbytes, stream):
        _call(self.rt.cudaMemcpyAsync, dst_ptr, src_ptr, nbytes,
              self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)

    def stream_create(self):
        s = _call(self.rt.cudaStreamCreateWithFlags, 1)  # cudaStreamNonBlocking: no implicit sync with stream 0
        return s, int(s)

    def stream_sync(self, s):
        _call(self.rt.cudaStreamSynchronize, s)

    def stream_destroy(self, s):
        _call(self.rt.cudaStreamDestroy, s)

    def event_create(self):
        return _call(self.rt.cudaEventCreate)

    def event_record(self, ev, s):
        _call(self.rt.cudaEventRecord, ev, s)

    def event_sync(self, ev):
        _call(self.rt.cudaEventSynchronize, ev)

    def event_elapsed(self, start, end):
        return float(_call(self.rt.cudaEventElapsedTime, start, end))

    def event_destroy(self, ev):
        _call(self.rt.cudaEventDestroy, ev)

    def begin_capture(self, s):
        _call(self.rt.cudaStreamBeginCapture, s, self.rt.cudaStreamCaptureMode(CAPTURE_MODE_THREAD_LOCAL))

    def end_capture(self, s):
        return _call(self.rt.cudaStreamEndCapture, s)

    def graph_instantiate(self, graph):
        # cudaGraphInstantiateWithFlags(graph, flags) (CUDA 11.4+) has one signature on every cuda-python release;
        # before it, cudaGraphInstantiate(graph, logBuffer, bufferSize)
        fn = getattr(self.rt, "cudaGraphInstantiateWithFlags", None)
        if fn is not None:
            return _call(fn, graph, 0)
        res = self.rt.cudaGraphInstantiate(graph, b"", 0)
        return check(res[:2], "cudaGraphInstantiate")

    def graph_launch(self, graph_exec, s):
        _call(self.rt.cudaGraphLaunch, graph_exec, s)

    def graph_destroy(self, graph):
        _call(self.rt.cudaGraphDestroy, graph)

    def graph_exec_destroy(self, graph_exec):
        _call(self.rt.cudaGraphExecDestroy, graph_exec)


def _numpy_from_address(ptr, nbytes):
    import numpy as np
    buf = (ctypes.c_ubyte * nbytes).from_address(ptr)
    return np.frombuffer(buf, dtype=np.uint8, count=nbytes)
