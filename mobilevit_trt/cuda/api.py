"""The CUDA interface the TensorRT runtime uses: errors, backend selection and the objects with a clear owner
(device and pinned buffers, a stream, events, CUDA graphs, the graph cache, the copy helpers).

Backends, chosen once per process by :func:`backend` (first that imports; ``MOBILEVIT_TRT_CUDA=cuda-python`` or
``pycuda`` picks one), both implementing :class:`Backend`:
  * :mod:`.cuda_python` -- cuda-python: ``from cuda.bindings import runtime`` (12.6.1+/11.8.4+, the only name in
    13.x), else ``from cuda import cudart`` (older releases, e.g. the tensorrt:22.04 container).  Every call returns
    a tuple whose first item is the error code; :func:`check` turns a bad code into :class:`CudaError`.
  * :mod:`.pycuda_impl` -- PyCUDA: buffers, streams and events through PyCUDA (which raises on errors itself);
    PyCUDA has no CUDA-graph API, so graphs go through the driver API (libcuda) with ctypes, its CUresult codes
    checked the same way.

Nothing here is imported at module import time; ``--help`` and the CPU stages never touch CUDA.
"""
import ctypes
import os
import sys

from ..errors import Unavailable, UserError

#: environment variable that picks the CUDA binding: cuda-python (default when importable) or pycuda
BACKEND_ENV = "MOBILEVIT_TRT_CUDA"
CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal == CU_STREAM_CAPTURE_MODE_THREAD_LOCAL


class CudaError(RuntimeError):
    """A CUDA call returned an error code."""

    def __init__(self, call, code, name):
        RuntimeError.__init__(self, "%s failed: %s (%d)" % (call, name, code))
        self.call, self.code, self.name = call, code, name


class CudaUnavailable(Unavailable):
    """No CUDA Python binding, or no usable GPU."""


#: the selected backend ("backend") and the cuda-python runtime module ("cudart"), once per process
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
        from .cuda_python import import_cudart
        cudart = _STATE.get("cudart") or import_cudart()[0]
        name = _error_name(cudart, err) if cudart is not None else str(err)
        raise CudaError(call, code, name)
    rest = result[1:]
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


class Backend(object):
    """What a CUDA binding implements (:class:`.cuda_python._CudaPython`, :class:`.pycuda_impl._PyCuda`); the owner
    objects below call nothing else.

    Pointers and sizes are ints, ``host_array`` a C-contiguous NumPy array; a stream, event, graph or graph exec is
    the binding's own object, handed back exactly as the method that made it returned it.  Copies are asynchronous
    on ``stream``.  Errors: :class:`CudaError` (or the binding's own exception type), :class:`CudaUnavailable`.
    """

    #: the binding in words, e.g. "cuda-python (cuda.bindings.runtime)"; part of :func:`device_info`
    description = None

    def init(self, device=0):
        """Select ``device`` and make its primary context current (TensorRT uses it); called once."""
        raise NotImplementedError

    def device_info(self, device=0):
        """``{"name", "compute_capability": "M.m", "driver_version", "backend": description, ...}``."""
        raise NotImplementedError

    def total_memory(self, device=0):
        """Total memory of ``device`` in bytes."""
        raise NotImplementedError

    def malloc(self, nbytes):
        """Allocate device memory; return its address."""
        raise NotImplementedError

    def free(self, ptr):
        """Free what :meth:`malloc` returned."""
        raise NotImplementedError

    def malloc_host(self, nbytes):
        """Allocate page-locked host memory; return ``(address, uint8 NumPy array of nbytes over it)``."""
        raise NotImplementedError

    def free_host(self, ptr, array):
        """Free what :meth:`malloc_host` returned."""
        raise NotImplementedError

    def htod(self, dst_ptr, host_array, nbytes, stream):
        """Copy ``nbytes`` from ``host_array`` to device address ``dst_ptr``."""
        raise NotImplementedError

    def dtoh(self, host_array, src_ptr, nbytes, stream):
        """Copy ``nbytes`` from device address ``src_ptr`` to ``host_array``."""
        raise NotImplementedError

    def dtod(self, dst_ptr, src_ptr, nbytes, stream):
        """Copy ``nbytes`` between device addresses."""
        raise NotImplementedError

    def stream_create(self):
        """Create a non-blocking stream; return ``(stream, int handle)`` (the handle is what TensorRT takes)."""
        raise NotImplementedError

    def stream_sync(self, stream):
        raise NotImplementedError

    def stream_destroy(self, stream):
        raise NotImplementedError

    def event_create(self):
        """Create an event (with timing); return it."""
        raise NotImplementedError

    def event_record(self, ev, stream):
        raise NotImplementedError

    def event_sync(self, ev):
        raise NotImplementedError

    def event_elapsed(self, start, end):
        """Milliseconds (float) from recorded event ``start`` to recorded event ``end``."""
        raise NotImplementedError

    def event_destroy(self, ev):
        raise NotImplementedError

    def begin_capture(self, stream):
        """Begin capturing ``stream`` into a graph (thread-local capture mode)."""
        raise NotImplementedError

    def end_capture(self, stream):
        """End the capture; return the captured graph."""
        raise NotImplementedError

    def graph_instantiate(self, graph):
        """Return an executable graph of ``graph``."""
        raise NotImplementedError

    def graph_launch(self, graph_exec, stream):
        raise NotImplementedError

    def graph_destroy(self, graph):
        raise NotImplementedError

    def graph_exec_destroy(self, graph_exec):
        raise NotImplementedError


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

    Raises CudaUnavailable (an errors.Unavailable) "<purpose>: <reason>"; ``purpose`` defaults to "this step needs a
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
    from .cuda_python import _CudaPython, import_cudart
    from .pycuda_impl import _PyCuda

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
