"""The PyCUDA backend (:class:`_PyCuda`, a :class:`.api.Backend`): buffers, streams and events through PyCUDA,
CUDA graphs through the driver API (libcuda) with ctypes (:class:`_DriverGraphs`; PyCUDA has no graph API), its
CUresult codes checked by :func:`_check_driver`."""
import atexit
import ctypes
import sys

from .api import CAPTURE_MODE_THREAD_LOCAL, Backend, CudaError, CudaUnavailable


def _check_driver(lib, code, call):
    """Check a driver-API CUresult (ctypes int) the same way as :func:`.api.check`."""
    code = int(code)
    if code != 0:
        name = ctypes.c_char_p()
        try:
            lib.cuGetErrorName(code, ctypes.byref(name))
            text = name.value.decode() if name.value else "CUresult %d" % code
        except Exception:  # pragma: no cover
            text = "CUresult %d" % code
        raise CudaError(call, code, text)


class _DriverGraphs(object):
    """CUDA graphs through the driver API with ctypes (for PyCUDA, which has no graph API)."""

    def __init__(self, lib=None):
        if lib is None:
            name = "nvcuda.dll" if sys.platform.startswith("win") else "libcuda.so.1"
            lib = ctypes.CDLL(name)
        self.lib = lib

    def _c(self, name, *args):
        _check_driver(self.lib, getattr(self.lib, name)(*args), name)

    def begin_capture(self, stream_handle):
        self._c("cuStreamBeginCapture_v2", ctypes.c_void_p(stream_handle), ctypes.c_int(CAPTURE_MODE_THREAD_LOCAL))

    def end_capture(self, stream_handle):
        graph = ctypes.c_void_p()
        self._c("cuStreamEndCapture", ctypes.c_void_p(stream_handle), ctypes.byref(graph))
        return graph

    def graph_instantiate(self, graph):
        exe = ctypes.c_void_p()
        self._c("cuGraphInstantiateWithFlags", ctypes.byref(exe), graph, ctypes.c_ulonglong(0))
        return exe

    def graph_launch(self, graph_exec, stream_handle):
        self._c("cuGraphLaunch", graph_exec, ctypes.c_void_p(stream_handle))

    def graph_destroy(self, graph):
        self._c("cuGraphDestroy", graph)

    def graph_exec_destroy(self, graph_exec):
        self._c("cuGraphExecDestroy", graph_exec)


class _PyCuda(Backend):
    def __init__(self, drv):
        self.drv = drv
        version = getattr(drv, "get_version", lambda: ())()  # the CUDA version PyCUDA was built for, a tuple
        self.description = "PyCUDA (CUDA %s; graphs: driver API via ctypes)" % ".".join(str(v) for v in version)
        self._ctx = None
        self._graphs = None

    def init(self, device=0):
        self.drv.init()
        if self.drv.Device.count() < 1:
            raise CudaUnavailable("no CUDA device found")
        # TensorRT uses the primary context: retain it instead of creating a new one (pycuda.autoinit would).
        # PyCUDA aborts the process at exit when its context stack is not empty ("PyCUDA ERROR: The context stack
        # was not empty upon module cleanup", abort() in src/cpp/cuda.hpp context_stack::~context_stack), so the
        # push is undone at exit, as pycuda.autoprimaryctx does.
        self._ctx = self.drv.Device(device).retain_primary_context()
        self._ctx.push()
        atexit.register(self.release)
        self._graphs = _DriverGraphs()

    def release(self):
        """Pop and release the primary context pushed by :meth:`init` (idempotent; registered with atexit)."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            ctx.pop()
        finally:
            ctx.detach()

    def device_info(self, device=0):
        d = self.drv.Device(device)
        major, minor = d.compute_capability()
        return {"name": d.name(), "compute_capability": "%d.%d" % (major, minor),
                "driver_version": self.drv.get_driver_version(), "backend": self.description}

    def total_memory(self, device=0):
        return self.drv.Device(device).total_memory()

    def malloc(self, nbytes):
        alloc = self.drv.mem_alloc(nbytes)
        ptr = int(alloc)
        self.__dict__.setdefault("_allocs", {})[ptr] = alloc
        return ptr

    def free(self, ptr):
        self._allocs.pop(ptr).free()

    def malloc_host(self, nbytes):
        import numpy as np
        array = self.drv.pagelocked_empty(nbytes, np.uint8)
        return array.ctypes.data, array

    def free_host(self, ptr, array):
        base = array.base
        if base is not None and hasattr(base, "free"):
            base.free()

    def htod(self, dst_ptr, host_array, nbytes, stream):
        self.drv.memcpy_htod_async(dst_ptr, host_array.reshape(-1).view("uint8")[:nbytes], stream)

    def dtoh(self, host_array, src_ptr, nbytes, stream):
        self.drv.memcpy_dtoh_async(host_array.reshape(-1).view("uint8")[:nbytes], src_ptr, stream)

    def dtod(self, dst_ptr, src_ptr, nbytes, stream):
        self.drv.memcpy_dtod_async(dst_ptr, src_ptr, nbytes, stream)

    def stream_create(self):
        s = self.drv.Stream()
        return s, int(s.handle)

    def stream_sync(self, s):
        s.synchronize()

    def stream_destroy(self, s):
        pass  # PyCUDA frees the stream with the object

    def event_create(self):
        return self.drv.Event()

    def event_record(self, ev, s):
        ev.record(s)

    def event_sync(self, ev):
        ev.synchronize()

    def event_elapsed(self, start, end):
        return float(start.time_till(end))

    def event_destroy(self, ev):
        pass

    def begin_capture(self, s):
        self._graphs.begin_capture(int(s.handle))

    def end_capture(self, s):
        return self._graphs.end_capture(int(s.handle))

    def graph_instantiate(self, graph):
        return self._graphs.graph_instantiate(graph)

    def graph_launch(self, graph_exec, s):
        self._graphs.graph_launch(graph_exec, int(s.handle))

    def graph_destroy(self, graph):
        self._graphs.graph_destroy(graph)

    def graph_exec_destroy(self, graph_exec):
        self._graphs.graph_exec_destroy(graph_exec)
