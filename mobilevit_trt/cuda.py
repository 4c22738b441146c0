"""A small CUDA interface for the TensorRT runtime: device and pinned buffers, a stream, events, CUDA graphs.

Backends, chosen once (first that imports):
  * cuda-python: ``from cuda.bindings import runtime`` (12.6.1+/11.8.4+, the only name in 13.x), else
    ``from cuda import cudart`` (older releases, e.g. the tensorrt:22.04 container).  Every call returns a tuple
    whose first item is the error code; :func:`check` turns a bad code into :class:`CudaError`.
  * PyCUDA: buffers, streams and events through PyCUDA (which raises on errors itself); PyCUDA has no CUDA-graph
    API, so graphs go through the driver API (libcuda) with ctypes, its CUresult codes checked by :func:`check`.

Nothing here is imported at module import time; ``--help`` and the CPU stages never touch CUDA.
"""
import atexit
import ctypes
import os
import sys

from .errors import UserError

#: environment variable that picks the CUDA binding: cuda-python (default when importable) or pycuda
BACKEND_ENV = "MOBILEVIT_TRT_CUDA"
CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal == CU_STREAM_CAPTURE_MODE_THREAD_LOCAL


class CudaError(RuntimeError):
    """A CUDA call returned an error code."""

    def __init__(self, call, code, name):
        RuntimeError.__init__(self, "%s failed: %s (%d)" % (call, name, code))
        self.call, self.code, self.name = call, code, name


class CudaUnavailable(UserError):
    """No CUDA Python binding, or no usable GPU."""


_STATE = {}


def _error_name(cudart, err):
    try:
        res = cudart.cudaGetErrorName(err)
        name = res[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover - only on a broken binding
        return str(err)


def check(result, call="CUDA call"):
    """Check a cuda-python result tuple ``(err, *values)``; return the value(s) or raise CudaError."""
    if not isinstance(result, tuple):
        result = (result,)
    err = result[0]
    code = int(err)
    if code != 0:
        cudart = _STATE.get("cudart") or import_cudart()[0]
        name = _error_name(cudart, err) if cudart is not None else str(err)
        raise CudaError(call, code, name)
    rest = result[1:]
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _check_driver(lib, code, call):
    """Check a driver-API CUresult (ctypes int) the same way."""
    code = int(code)
    if code != 0:
        name = ctypes.c_char_p()
        try:
            lib.cuGetErrorName(code, ctypes.byref(name))
            text = name.value.decode() if name.value else "CUresult %d" % code
        except Exception:  # pragma: no cover
            text = "CUresult %d" % code
        raise CudaError(call, code, text)


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


class _CudaPython(object):
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

    def memset(self, ptr, value, nbytes, stream):
        _call(self.rt.cudaMemsetAsync, ptr, value, nbytes, stream)

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


class _PyCuda(object):
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

    def memset(self, ptr, value, nbytes, stream):
        self.drv.memset_d8_async(ptr, value, nbytes, stream)

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


def _numpy_from_address(ptr, nbytes):
    import numpy as np
    buf = (ctypes.c_ubyte * nbytes).from_address(ptr)
    return np.frombuffer(buf, dtype=np.uint8, count=nbytes)


def driver_problem():
    """Why the CUDA driver library cannot be loaded, or None when it can (a GPU machine)."""
    names = ("nvcuda.dll",) if sys.platform.startswith("win") else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            ctypes.CDLL(name)
            return None
        except OSError:
            continue
    return "%s cannot be loaded" % names[0]


def backend(purpose=None, device=0):
    """Initialise (once) and return the CUDA backend.

    Raises CudaUnavailable (a UserError) "<purpose>: <reason>"; ``purpose`` defaults to "this step needs a
    CUDA GPU"."""
    b = _STATE.get("backend")
    if b is not None:
        return b
    what = purpose or "this step needs a CUDA GPU"
    driver = driver_problem()
    if driver:
        raise CudaUnavailable("%s: no CUDA driver/GPU found (%s)" % (what, driver))
    choice = os.environ.get(BACKEND_ENV, "")
    if choice not in ("", "cuda-python", "pycuda"):
        raise UserError("%s must be cuda-python or pycuda, got %r" % (BACKEND_ENV, choice))
    cudart, desc = import_cudart() if choice != "pycuda" else (None, "%s=pycuda" % BACKEND_ENV)
    if cudart is not None:
        b = _CudaPython(cudart, desc)
    else:
        try:
            import pycuda.driver as drv
        except ImportError as e:
            if choice == "pycuda":
                raise CudaUnavailable("%s: %s=pycuda but PyCUDA cannot be imported (%s): pip install pycuda"
                                      % (what, BACKEND_ENV, e))
            raise CudaUnavailable("%s: the CUDA driver is there but no CUDA Python binding imports (%s; PyCUDA: "
                                  "%s): pip install cuda-python (or pycuda)" % (what, desc, e))
        b = _PyCuda(drv)
    try:
        b.init(device)
    except (CudaError, CudaUnavailable) as e:
        raise CudaUnavailable("%s: %s" % (what, e))
    except Exception as e:  # PyCUDA raises its own error types
        raise CudaUnavailable("%s: %s" % (what, str(e).strip() or "CUDA initialisation failed"))
    _STATE["backend"] = b
    return b


def device_info(device=0):
    return backend().device_info(device)


def total_memory(device=0):
    """Total memory of ``device`` in bytes, or None when no CUDA binding or GPU can tell (never raises)."""
    try:
        return int(backend().total_memory(device))
    except Exception:  # noqa: BLE001 - a best-effort cap (the 8.2 builder workspace), not a requirement
        return None


# -- objects with a clear owner -----------------------------------------------------------------------------------

class DeviceBuffer(object):
    """``nbytes`` of device memory; ``ptr`` is the address as an int."""

    def __init__(self, nbytes):
        self._b = backend()
        self.nbytes = int(nbytes)
        self.ptr = self._b.malloc(max(self.nbytes, 1))

    def free(self):
        if self.ptr:
            self._b.free(self.ptr)
            self.ptr = 0

    def __int__(self):
        return self.ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


class PinnedBuffer(object):
    """Page-locked host memory; ``array`` is a uint8 NumPy view, ``view(dtype, shape)`` a typed one."""

    def __init__(self, nbytes):
        self._b = backend()
        self.nbytes = int(nbytes)
        self.ptr, self.array = self._b.malloc_host(max(self.nbytes, 1))

    def view(self, dtype, shape):
        import numpy as np
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if len(shape) else 1
        if count * dtype.itemsize > self.nbytes:
            raise ValueError("view of %d bytes exceeds the %d-byte pinned buffer" % (count * dtype.itemsize,
                                                                                     self.nbytes))
        return self.array[:count * dtype.itemsize].view(dtype).reshape(shape)

    def free(self):
        if self.ptr:
            self._b.free_host(self.ptr, self.array)
            self.ptr, self.array = 0, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


class Graph(object):
    """A captured CUDA graph; ``instantiate()`` gives a :class:`GraphExec`."""

    def __init__(self, b, graph):
        self._b, self.graph = b, graph

    def instantiate(self):
        return GraphExec(self._b, self._b.graph_instantiate(self.graph))

    def destroy(self):
        if self.graph is not None:
            self._b.graph_destroy(self.graph)
            self.graph = None


class GraphExec(object):
    def __init__(self, b, graph_exec):
        self._b, self.graph_exec = b, graph_exec

    def launch(self, stream):
        self._b.graph_launch(self.graph_exec, stream.stream)

    def destroy(self):
        if self.graph_exec is not None:
            self._b.graph_exec_destroy(self.graph_exec)
            self.graph_exec = None


class Stream(object):
    """One CUDA stream; ``handle`` is the int that TensorRT and other libraries take."""

    def __init__(self):
        self._b = backend()
        self.stream, self.handle = self._b.stream_create()
        self.capturing = False

    def synchronize(self):
        self._b.stream_sync(self.stream)

    def begin_capture(self):
        self._b.begin_capture(self.stream)
        self.capturing = True

    def end_capture(self):
        self.capturing = False
        return Graph(self._b, self._b.end_capture(self.stream))

    def abort_capture(self):
        """Leave capture mode after a failure; errors from the broken capture are swallowed."""
        if self.capturing:
            self.capturing = False
            try:
                g = self._b.end_capture(self.stream)
                if g is not None:
                    self._b.graph_destroy(g)
            except CudaError:
                pass

    def destroy(self):
        if self.stream is not None:
            self._b.stream_destroy(self.stream)
            self.stream, self.handle = None, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()


class Event(object):
    def __init__(self):
        self._b = backend()
        self.event = self._b.event_create()

    def record(self, stream):
        self._b.event_record(self.event, stream.stream)

    def synchronize(self):
        self._b.event_sync(self.event)

    def elapsed_ms(self, end):
        """Milliseconds from this event to ``end`` (both recorded and complete)."""
        return self._b.event_elapsed(self.event, end.event)

    def destroy(self):
        if self.event is not None:
            self._b.event_destroy(self.event)
            self.event = None


def _nbytes(array, nbytes):
    return int(array.nbytes if nbytes is None else nbytes)


def _host_array(host):
    import numpy as np
    if isinstance(host, PinnedBuffer):
        return host.array
    if not isinstance(host, np.ndarray) or not host.flags["C_CONTIGUOUS"]:
        raise ValueError("host side of a copy must be a PinnedBuffer or a C-contiguous NumPy array")
    return host


def memcpy_htod_async(dst, src, stream, nbytes=None):
    """Copy host ``src`` (PinnedBuffer or contiguous array) to device ``dst`` (DeviceBuffer or address)."""
    host = _host_array(src)
    n = _nbytes(host, nbytes)
    backend().htod(int(dst), host, n, stream.stream)


def memcpy_dtoh_async(dst, src, stream, nbytes=None):
    """Copy device ``src`` (DeviceBuffer or address) to host ``dst`` (PinnedBuffer or contiguous array)."""
    host = _host_array(dst)
    n = _nbytes(host, nbytes)
    backend().dtoh(host, int(src), n, stream.stream)


def memcpy_dtod_async(dst, src, nbytes, stream):
    backend().dtod(int(dst), int(src), int(nbytes), stream.stream)


def memset_async(dst, value, nbytes, stream):
    backend().memset(int(dst), int(value), int(nbytes), stream.stream)


class GraphCache(object):
    """One instantiated CUDA graph per key (input shape + addresses), captured from ``enqueue()``.

    The first use of a key runs ``enqueue()`` once plainly and synchronizes (work after a shape or address change
    may allocate or set state, which must not happen during capture), then captures a second ``enqueue()``.
    ``capturable()`` may veto a capture (TensorRT-RTX asks the context); then that one plain run was the call's
    execution and :meth:`launch` returns False (it returns True when it replayed a graph).
    """

    def __init__(self, stream):
        self.stream = stream
        self._execs = {}
        self.captures = 0

    def __contains__(self, key):
        return key in self._execs

    def launch(self, key, enqueue, capturable=None):
        exe = self._execs.get(key)
        if exe is None:
            enqueue()  # this call's execution when capture is vetoed; else the plain run before capturing
            if capturable is not None and not capturable():
                return False
            self.stream.synchronize()
            self.stream.begin_capture()
            try:
                enqueue()
            except BaseException:
                self.stream.abort_capture()
                raise
            graph = self.stream.end_capture()
            try:
                exe = graph.instantiate()
            finally:
                graph.destroy()
            self._execs[key] = exe
            self.captures += 1
        exe.launch(self.stream)
        return True

    def clear(self):
        for exe in self._execs.values():
            exe.destroy()
        self._execs.clear()
