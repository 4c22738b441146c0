#!/usr/bin/env python3
"""GPU check of mobilevit_trt/cuda/ with real kernels: buffers, copies, events, stream capture into a CUDA graph
and its replay, the GraphCache used by the TensorRT runner, the driver-API graph path (PyCUDA's fallback), and
the error helper.  Kernels: a CuPy RawKernel and a PyTorch in-place op, both launched on cuda.py's stream.

Needs a CUDA GPU, cuda-python (cuda.bindings) and CuPy; PyTorch optional.  Prints a short table last and writes
the numbers as JSON (--out DIR).  tests/gpu/test_cuda_helpers.py runs the same checks under pytest.

  python benchmark/gpu_cuda_helpers_check.py --out runs/gpu
"""
import json
import os
import time
import warnings

import numpy as np

from mobilevit_trt import cli, cuda

N = 1 << 20  # float32 elements per buffer (4 MiB)
KERNEL_SRC = r'''
extern "C" __global__ void axpb(float* x, const float a, const float b, const int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = a * x[i] + b;
}
'''


class Kernels(object):
    """CuPy RawKernel launched on an external stream (cuda.py's), on memory cuda.py owns."""

    def __init__(self):
        import cupy
        self.cp = cupy
        self.axpb_k = cupy.RawKernel(KERNEL_SRC, "axpb")

    def external(self, stream):
        with warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream in favour of __cuda_stream__ objects
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.cp.cuda.ExternalStream(stream.handle)

    def axpb(self, buf, n, a, b, stream):
        cp = self.cp
        with self.external(stream):
            self.axpb_k(((n + 255) // 256,), (256,), (cp.uint64(buf.ptr), cp.float32(a), cp.float32(b), cp.int32(n)))

    def as_cupy(self, buf, n):
        cp = self.cp
        mem = cp.cuda.UnownedMemory(buf.ptr, buf.nbytes, buf)
        return cp.ndarray((n,), dtype=cp.float32, memptr=cp.cuda.MemoryPointer(mem, 0))


def _roundtrip(stream, dev, host_in, host_out, n):
    cuda.memcpy_htod_async(dev, host_in, stream, nbytes=n * 4)
    return lambda: (cuda.memcpy_dtoh_async(host_out, dev, stream, nbytes=n * 4), stream.synchronize())


def check_buffers_and_copies(k):
    """H2D, a kernel on our stream, D2H: y = 2x + 1 exactly (small integers in float32)."""
    s = cuda.Stream()
    d = cuda.DeviceBuffer(N * 4)
    h_in, h_out = cuda.PinnedBuffer(N * 4), cuda.PinnedBuffer(N * 4)
    x = h_in.view(np.float32, (N,))
    x[...] = np.arange(N, dtype=np.float32) % 1000
    cuda.memcpy_htod_async(d, h_in, s)
    k.axpb(d, N, 2.0, 1.0, s)
    cuda.memcpy_dtoh_async(h_out, d, s)
    s.synchronize()
    y = h_out.view(np.float32, (N,))
    ok = bool(np.array_equal(y, 2 * x + 1))
    # plain (pageable) NumPy arrays work as the host side too
    z = np.zeros(N, np.float32)
    cuda.memcpy_dtoh_async(z, d, s)
    s.synchronize()
    ok = ok and bool(np.array_equal(z, y))
    for b in (d, h_in, h_out):
        b.free()
    s.destroy()
    return {"copies_and_kernel_exact": ok}


def check_copy_bandwidth():
    """H2D / D2H of 64 MiB from pinned memory, timed with events."""
    n = 64 << 20
    s = cuda.Stream()
    d, h = cuda.DeviceBuffer(n), cuda.PinnedBuffer(n)
    e0, e1 = cuda.Event(), cuda.Event()
    out = {}
    for name, fn in (("h2d", lambda: cuda.memcpy_htod_async(d, h, s)), ("d2h", lambda: cuda.memcpy_dtoh_async(h, d, s))):
        fn()
        s.synchronize()
        e0.record(s)
        for _ in range(5):
            fn()
        e1.record(s)
        e1.synchronize()
        ms = e0.elapsed_ms(e1) / 5
        out["%s_pinned_GBps" % name] = n / (ms * 1e-3) / 1e9
    for b in (d, h):
        b.free()
    e0.destroy()
    e1.destroy()
    s.destroy()
    return out


def check_graph_capture_and_replay(k, iters=200, kernels_per_run=20):
    """Capture `kernels_per_run` kernels (x = x + 1 each) into a graph; replay it; check the count exactly;
    time plain launches vs graph replays with events (per iteration)."""
    s = cuda.Stream()
    n = 1 << 12
    d = cuda.DeviceBuffer(n * 4)
    h = cuda.PinnedBuffer(n * 4)
    h.view(np.float32, (n,))[...] = 0
    cuda.memcpy_htod_async(d, h, s)

    def work():
        for _ in range(kernels_per_run):
            k.axpb(d, n, 1.0, 1.0, s)

    s.begin_capture()
    work()
    graph = s.end_capture()
    exe = graph.instantiate()
    graph.destroy()
    s.synchronize()
    cuda.memcpy_dtoh_async(h, d, s)
    s.synchronize()
    captured_not_run = bool((h.view(np.float32, (n,)) == 0).all())  # capture records, it does not execute
    for _ in range(3):
        exe.launch(s)
    cuda.memcpy_dtoh_async(h, d, s)
    s.synchronize()
    replay_exact = bool((h.view(np.float32, (n,)) == 3 * kernels_per_run).all())
    e0, e1 = cuda.Event(), cuda.Event()

    def timed(fn):
        for _ in range(10):
            fn()
        s.synchronize()
        t = []
        for _ in range(iters):
            e0.record(s)
            fn()
            e1.record(s)
            e1.synchronize()
            t.append(e0.elapsed_ms(e1))
        return float(np.median(t))

    t0 = time.perf_counter()
    plain = timed(work)
    plain_wall = (time.perf_counter() - t0) / (iters + 10)
    t0 = time.perf_counter()
    replay = timed(lambda: exe.launch(s))
    replay_wall = (time.perf_counter() - t0) / (iters + 10)
    exe.destroy()
    for b in (d, h):
        b.free()
    e0.destroy()
    e1.destroy()
    s.destroy()
    return {"capture_does_not_execute": captured_not_run, "graph_replay_exact": replay_exact,
            "kernels_per_run": kernels_per_run, "plain_ms_p50": plain, "graph_ms_p50": replay,
            "plain_wall_ms": plain_wall * 1e3, "graph_wall_ms": replay_wall * 1e3}


def check_graph_cache(k):
    """The runner's GraphCache: first use of a key = one plain run + capture + replay; later uses replay only;
    another key (another 'shape') gets its own graph."""
    s = cuda.Stream()
    n = 1 << 12
    d = cuda.DeviceBuffer(n * 4)
    h = cuda.PinnedBuffer(n * 4)
    h.view(np.float32, (n,))[...] = 0
    cuda.memcpy_htod_async(d, h, s)
    cache = cuda.GraphCache(s)
    half = n // 2
    for _ in range(5):
        cache.launch(("shape", n), lambda: k.axpb(d, n, 1.0, 1.0, s))  # whole buffer +1
    for _ in range(3):
        cache.launch(("shape", half), lambda: k.axpb(d, half, 1.0, 10.0, s))  # first half +10
    cuda.memcpy_dtoh_async(h, d, s)
    s.synchronize()
    y = h.view(np.float32, (n,))
    # key 1: 1 plain + 5 replays = 6; key 2: 1 plain + 3 replays = 4 runs of +10
    ok = bool((y[:half] == 6 + 40).all() and (y[half:] == 6).all())
    vetoed = cuda.GraphCache(s)
    ran = vetoed.launch("k", lambda: k.axpb(d, n, 1.0, 0.0, s), capturable=lambda: False)
    res = {"graph_cache_exact": ok, "graph_cache_captures": cache.captures,
           "graph_cache_veto_runs_plain": (ran is False and vetoed.captures == 0)}
    cache.clear()
    for b in (d, h):
        b.free()
    s.destroy()
    return res


def check_torch_on_our_stream(k):
    """A PyTorch in-place op on cuda.py's stream (torch.cuda.ExternalStream) over cuda.py's memory, captured into
    a graph with the CuPy kernel."""
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    if not torch.cuda.is_available():
        return {"torch": "no CUDA"}
    s = cuda.Stream()
    n = 1 << 12
    d = cuda.DeviceBuffer(n * 4)
    t = torch.from_dlpack(k.as_cupy(d, n))
    ext = torch.cuda.ExternalStream(s.handle)
    h = cuda.PinnedBuffer(n * 4)
    h.view(np.float32, (n,))[...] = 1
    cuda.memcpy_htod_async(d, h, s)
    with torch.cuda.stream(ext):
        t.mul_(3.0)  # 3
    s.begin_capture()
    with torch.cuda.stream(ext):
        t.add_(1.0)  # +1
    k.axpb(d, n, 2.0, 0.0, s)  # *2
    g = s.end_capture()
    exe = g.instantiate()
    g.destroy()
    exe.launch(s)  # (3 + 1) * 2 = 8
    exe.launch(s)  # (8 + 1) * 2 = 18
    cuda.memcpy_dtoh_async(h, d, s)
    s.synchronize()
    ok = bool((h.view(np.float32, (n,)) == 18).all())
    exe.destroy()
    del t
    for b in (d, h):
        b.free()
    s.destroy()
    return {"torch_inplace_on_our_stream_in_graph_exact": ok, "torch": torch.__version__}


def check_driver_api_graphs(k):
    """The driver-API (ctypes, libcuda) graph path that the PyCUDA backend uses, on a cuda-python stream."""
    g = cuda._DriverGraphs()
    s = cuda.Stream()
    n = 1 << 12
    d = cuda.DeviceBuffer(n * 4)
    h = cuda.PinnedBuffer(n * 4)
    h.view(np.float32, (n,))[...] = 5
    cuda.memcpy_htod_async(d, h, s)
    s.synchronize()
    g.begin_capture(s.handle)
    k.axpb(d, n, 1.0, -1.0, s)
    graph = g.end_capture(s.handle)
    exe = g.graph_instantiate(graph)
    g.graph_destroy(graph)
    for _ in range(4):
        g.graph_launch(exe, s.handle)
    cuda.memcpy_dtoh_async(h, d, s)
    s.synchronize()
    ok = bool((h.view(np.float32, (n,)) == 1).all())
    g.graph_exec_destroy(exe)
    for b in (d, h):
        b.free()
    s.destroy()
    return {"driver_api_graph_exact": ok}


def check_error_helper():
    """A bad call raises CudaError with the CUDA error name (runtime and driver API)."""
    out = {}
    b = cuda.backend()
    try:
        cuda._call(b.rt.cudaFree, 12345)  # not a device pointer
        out["runtime_error_raised"] = None
    except cuda.CudaError as e:
        out["runtime_error_raised"] = e.name
    try:
        cuda._DriverGraphs()._c("cuGraphLaunch", None, None)
        out["driver_error_raised"] = None
    except cuda.CudaError as e:
        out["driver_error_raised"] = e.name
    # the runtime error must not poison later calls (cudaFree of a bad pointer is not sticky)
    d = cuda.DeviceBuffer(16)
    d.free()
    out["after_error_ok"] = True
    return out


def run_all():
    info = cuda.device_info()
    k = Kernels()
    res = {"device": info}
    for fn in (check_buffers_and_copies, check_graph_capture_and_replay, check_graph_cache,
               check_torch_on_our_stream, check_driver_api_graphs):
        res.update(fn(k))
    res.update(check_copy_bandwidth())
    res.update(check_error_helper())
    return res


def main(argv=None):
    p = cli.make_parser(__doc__.splitlines()[0], prog="gpu_cuda_helpers_check.py")
    p.add_argument("--out", default=None, help="folder for cuda_helpers.json")
    args = p.parse_args(argv)
    cli.check_outputs(folders={"--out": args.out})
    res = run_all()
    if args.out:
        from mobilevit_trt.fileio import write_text
        write_text(os.path.join(args.out, "cuda_helpers.json"), json.dumps(res, indent=2, default=str) + "\n")
    dev = res.pop("device")
    print("%s (compute %s), %s, CUDA runtime %s, driver %s" % (
        dev["name"], dev["compute_capability"], dev["backend"], dev["runtime_version"], dev["driver_version"]))
    width = max(len(k) for k in res)
    for key, v in res.items():
        print("  %-*s  %s" % (width, key, ("%.4g" % v) if isinstance(v, float) else v))
    bad = [key for key, v in res.items() if v is False or v is None]
    print("FAILED: %s" % ", ".join(bad) if bad else "all checks passed")
    return 1 if bad else 0


if __name__ == "__main__":
    cli.run_main(main)
