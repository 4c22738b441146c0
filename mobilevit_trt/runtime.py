"""Run a serialized TensorRT engine: one execution context, pinned host and device buffers sized for the largest
profile, one stream, GPU-event timing, CUDA graphs (one per input shape, recaptured after a shape change: one
plain enqueue + synchronize, then capture) and a per-layer profiler.

    from mobilevit_trt.runtime import TrtRunner
    with TrtRunner(engine_path) as r:        # plugins=None: the sidecar's libraries, else plugin/build/*.so
        logits = r.infer(batch)              # NumPy float32 [B,3,H,W] in, NumPy [B,num_classes] out

TensorRT differences (bindings vs tensor names, profiler hooks, graph capture checks) go through trt_compat;
CUDA through cuda.py.
"""
import os

from . import cuda, sidecar, trt_compat
from .errors import UserError
from .fileio import sha256_file

GPU_NEEDS = "TensorRT and a CUDA GPU"


def resolve_plugins(api, meta, plugins, log):
    """Libraries to load before deserializing: ``plugins``, else the sidecar's (checked), else -- only without a
    sidecar -- plugin/build/libmvt_plugins.so as a guess (loaded best-effort by the runner)."""
    if plugins:
        return list(plugins)
    recorded = (meta or {}).get("plugins") or []
    if not api.runs_plugins:
        return []
    if recorded:
        out = []
        for rec in recorded:
            path = rec.get("path")
            if not path or not os.path.isfile(path):
                raise UserError("plugin library %s (used to build this engine) not found; build it: make -C plugin"
                                % path)
            if rec.get("sha256") and sha256_file(path) != rec["sha256"]:
                log("warning: plugin library %s changed since the engine was built" % path)
            out.append(path)
        return out
    if meta is None:
        from .build import default_plugin_libraries
        return default_plugin_libraries()
    return []


class LayerTimes(object):
    """Per-layer times reported by TensorRT's profiler, accumulated over iterations."""

    def __init__(self):
        self.total = {}
        self.calls = {}
        self.order = []

    def add(self, name, ms):
        if name not in self.total:
            self.total[name] = 0.0
            self.calls[name] = 0
            self.order.append(name)
        self.total[name] += float(ms)
        self.calls[name] += 1

    def rows(self, iterations=None):
        """[{layer, ms (per iteration), share_pct, calls}] sorted by time, largest first."""
        grand = sum(self.total.values()) or 1.0
        out = []
        for name in self.order:
            n = iterations or self.calls[name]
            out.append({"layer": name, "ms": self.total[name] / max(n, 1),
                        "share_pct": 100.0 * self.total[name] / grand, "calls": self.calls[name]})
        out.sort(key=lambda r: -r["ms"])
        return out


class _EventTimer(object):
    """GPU time between two events recorded on the runner's stream around one execution."""

    def __init__(self, runner):
        self.r = runner

    def start(self):
        self.r._start.record(self.r.stream)

    def stop(self):
        self.r._end.record(self.r.stream)
        self.r._end.synchronize()
        return self.r._start.elapsed_ms(self.r._end)


class TrtRunner(object):
    """Load ``engine_path`` and run it on NumPy batches; handles dynamic shapes and several profiles."""

    def __init__(self, engine_path, plugins=None, cuda_graph=False, verbose=False, purpose="running a TensorRT engine",
                 log=None):
        self.log = log or (lambda *a: None)
        self.engine_path = engine_path
        self.cuda_graph = bool(cuda_graph)
        self._closed = True
        if not engine_path or not os.path.isfile(engine_path):
            raise UserError("engine not found: %s" % engine_path)
        self.api = api = trt_compat.load(purpose, needs=GPU_NEEDS)
        self.meta = sidecar.read(engine_path)
        if self.meta is None:
            self.log("warning: no sidecar %s: cannot check which TensorRT built the engine"
                     % sidecar.path_of(engine_path))
        sidecar.check_version(api, self.meta, engine_path)
        #: why CUDA graphs may not run although asked for (None: no known reason); results say what ran
        self.graph_note = None
        if self.cuda_graph and api.branches["graph_capture"] == "ask_context" and not (
                (self.meta or {}).get("graph_capture") or {}).get("prepared"):
            self.graph_note = ("%s captures CUDA graphs only from engines built for it: rebuild with "
                               "convert_to_trt.py --cudaGraph (REQUIRE_USER_ALLOCATION); running without graphs"
                               % api.display_name)
            self.log("warning: " + self.graph_note)
            self.cuda_graph = False
        cuda.backend("%s needs %s" % (purpose, GPU_NEEDS))
        self.logger = trt_compat.make_logger(api, verbose=verbose)
        self.plugins = resolve_plugins(api, self.meta, plugins, self.log)
        guessed = not plugins and self.meta is None
        try:
            self._plugin_handles = trt_compat.load_plugin_libraries(api, self.logger, self.plugins)
        except UserError as e:
            if not guessed:
                raise
            self.log("warning: %s (loading the default plugin libraries was a guess: no sidecar)" % e)
            self.plugins, self._plugin_handles = [], []
        with open(engine_path, "rb") as f:
            data = f.read()
        mark = self.logger.mark()
        self.runtime = trt_compat.new_runtime(api, self.logger)
        self.engine = trt_compat.deserialize(api, self.runtime, data)
        if self.engine is None:
            errs = self.logger.errors(mark)
            hint = ""
            if any("plugin" in e.lower() for e in errs):
                hint = " (plugin libraries: build them with make -C plugin, or pass --plugin)"
            raise UserError("%s cannot deserialize %s: %s%s" % (api.display_name, engine_path,
                                                                  errs[0] if errs else "unknown error", hint))
        self.context = trt_compat.create_context(api, self.engine, for_graphs=self.cuda_graph)
        if self.context is None:
            errs = self.logger.errors(mark)
            raise UserError("cannot create an execution context for %s: %s" % (
                engine_path, errs[-1] if errs else "unknown error (out of GPU memory?)"))
        self._closed = False
        try:
            self._setup(engine_path)
        except BaseException:
            self.close()
            raise

    def _setup(self, engine_path):
        api = self.api
        self.io = trt_compat.engine_io(api, self.engine)
        ins = [t for t in self.io.tensors if t.is_input]
        self.outputs = [t for t in self.io.tensors if not t.is_input]
        if len(ins) != 1 or not self.outputs:
            raise UserError("%s has %d inputs and %d outputs; the toolkit runs single-input classifiers" % (
                engine_path, len(ins), len(self.outputs)))
        self.input = ins[0]
        self.dynamic = any(d < 0 for d in self.input.shape)
        if self.dynamic:
            self.profiles = [self.io.profile_shapes(p, self.input.name) for p in range(self.io.num_profiles)]
        else:
            self.profiles = [(self.input.shape,) * 3]
        self.stream = cuda.Stream()
        self.graphs = cuda.GraphCache(self.stream)
        self._bound = None
        self._out_shapes = None
        self._allocate()
        self._start, self._end = cuda.Event(), cuda.Event()

    # -- setup ----------------------------------------------------------------------------------------------------
    def _allocate(self):
        import numpy as np
        in_bytes, out_bytes = 0, {t.name: 0 for t in self.outputs}
        for p, (lo, opt, hi) in enumerate(self.profiles):
            in_bytes = max(in_bytes, int(np.prod(hi)) * self.input.dtype.itemsize)
            trt_compat.set_profile(self.context, p, self.stream.handle)
            shapes = self.io.bind(self.context, p, {self.input.name: hi}, {})
            for t in self.outputs:
                out_bytes[t.name] = max(out_bytes[t.name], int(np.prod(shapes[t.name])) * t.dtype.itemsize)
        self.d_in = cuda.DeviceBuffer(in_bytes)
        self.h_in = cuda.PinnedBuffer(in_bytes)
        self.d_out = {n: cuda.DeviceBuffer(b) for n, b in out_bytes.items()}
        self.h_out = {n: cuda.PinnedBuffer(b) for n, b in out_bytes.items()}
        self.addresses = dict([(self.input.name, self.d_in.ptr)] + [(n, b.ptr) for n, b in self.d_out.items()])

    @property
    def static_batch(self):
        """The engine's fixed batch size, or None for a dynamic engine."""
        return None if self.dynamic else int(self.input.shape[0])

    @property
    def batch_range(self):
        return [(p[0][0], p[1][0], p[2][0]) for p in self.profiles]

    def select_profile(self, shape):
        """Index of the profile that accepts ``shape`` (OPT closest to it); UserError when none does."""
        shape = tuple(int(d) for d in shape)
        fits = []
        for p, (lo, opt, hi) in enumerate(self.profiles):
            if len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                fits.append((sum(abs(s - o) for s, o in zip(shape, opt)), p))
        if not fits:
            ranges = "; ".join("%s..%s" % (list(lo), list(hi)) for lo, _, hi in self.profiles)
            raise UserError("input shape %s is outside every optimization profile of %s (%s)"
                            % (list(shape), self.engine_path, ranges))
        return min(fits)[1]

    def _bind(self, shape):
        shape = tuple(int(d) for d in shape)
        p = self.select_profile(shape)
        key = (p, shape)
        if key != self._bound:
            # A graph replays the kernels of the shape it was captured with, on buffers the context set up for
            # that shape; after the context is re-bound to another shape those may have moved.  So graphs live
            # until the next shape change, and the next launch runs plainly once and recaptures.
            self.graphs.clear()
            trt_compat.set_profile(self.context, p, self.stream.handle)
            self._out_shapes = self.io.bind(self.context, p, {self.input.name: shape}, self.addresses)
            self._bound = key
        return key

    # -- running --------------------------------------------------------------------------------------------------
    def _enqueue(self):
        self.io.execute(self.context, self.stream.handle)

    def _execute(self):
        """One execution; True when it was a CUDA-graph replay, False when it ran plainly (graphs not asked
        for, or the context said the stream cannot be captured)."""
        if self.cuda_graph:
            key = self._bound + (tuple(sorted(self.addresses.items())),)
            return bool(self.graphs.launch(key, self._enqueue, capturable=lambda: trt_compat.stream_capturable(
                self.api, self.context, self.stream.handle)))
        self._enqueue()
        return False

    def _upload(self, x):
        import numpy as np
        x = np.ascontiguousarray(x, dtype=self.input.dtype)
        self._bind(x.shape)
        self.h_in.view(self.input.dtype, x.shape)[...] = x
        cuda.memcpy_htod_async(self.d_in, self.h_in, self.stream, nbytes=x.nbytes)
        return x

    def _download(self):
        import numpy as np
        out = {}
        for t in self.outputs:
            shape = self._out_shapes[t.name]
            nbytes = int(np.prod(shape)) * t.dtype.itemsize
            cuda.memcpy_dtoh_async(self.h_out[t.name], self.d_out[t.name], self.stream, nbytes=nbytes)
        self.stream.synchronize()
        for t in self.outputs:
            out[t.name] = self.h_out[t.name].view(t.dtype, self._out_shapes[t.name]).copy()
        return out

    def infer_all(self, x):
        """{output name: array} for one batch."""
        self._check_open()
        self._upload(x)
        self._execute()
        return self._download()

    def infer(self, x):
        """Logits (the first output) for one batch [B, ...] as float32 NumPy."""
        import numpy as np
        out = self.infer_all(x)
        return out[self.outputs[0].name].astype(np.float32, copy=False)

    # -- the timing protocol of mobilevit_trt.bench (the loop itself is backend-independent) ----------------------
    def prepare(self, x):
        """Upload ``x`` and bind its shape; then :meth:`execute` runs on it without host copies."""
        self._check_open()
        self._upload(x)

    def execute(self):
        return self._execute()

    def timer(self):
        return _EventTimer(self)

    def synchronize(self):
        self.stream.synchronize()

    def fetch(self):
        import numpy as np
        out = self._download()
        return out[self.outputs[0].name].astype(np.float32, copy=False)

    def profile_layers(self, x, iters=50):
        """Per-layer times over ``iters`` runs (TensorRT IProfiler; with CUDA graphs, enqueue_emits_profile is off
        and report_to_profiler() runs after each launch).  Do this after timing: profiling slows execution."""
        self._check_open()
        times = LayerTimes()
        profiler = trt_compat.make_profiler(self.api, times.add)
        self.graphs.clear()  # graphs captured before the profiler was attached carry no timing events
        trt_compat.set_profiler(self.context, profiler, emits_profile=not self.cuda_graph)
        self._profiler = profiler
        self._upload(x)
        for _ in range(iters):
            self._execute()
            self.stream.synchronize()
            if self.cuda_graph:
                trt_compat.report_to_profiler(self.context)
        self.graphs.clear()
        return times

    def _check_open(self):
        if self._closed:
            raise UserError("the engine runner was closed")

    def close(self):
        if self._closed:
            return
        self._closed = True
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.synchronize()
        if getattr(self, "graphs", None) is not None:
            self.graphs.clear()
        buffers = [getattr(self, "d_in", None), getattr(self, "h_in", None)]
        buffers += list(getattr(self, "d_out", {}).values()) + list(getattr(self, "h_out", {}).values())
        for b in buffers:
            if b is not None:
                b.free()
        for e in (getattr(self, "_start", None), getattr(self, "_end", None)):
            if e is not None:
                e.destroy()
        if stream is not None:
            stream.destroy()
        # TensorRT objects: context before engine before runtime
        self.context = None
        self.engine = None
        self.runtime = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- benchmark (test_trt.py) ------------------------------------------------------------------------------------------

def default_atol(precision):
    from .metrics import DEFAULT_ATOL
    key = (precision or "fp32").split("+")[0]
    return DEFAULT_ATOL.get(key, DEFAULT_ATOL["fp32"])


def benchmark_engine(engine_path, data=None, batches=None, warmup=20, iters=50, cuda_graph=False,
                     profile_layers=False, atol=None, plugins=None, verbose=False, log=print, traces=None):
    """Time the engine per batch size and compare with reference logits (bench.benchmark_cases; ``traces``: a dict
    that receives each batch's per-iteration timestamps, for the trtexec-shaped ``--export-times``).

    Returns (rows, meta, layer_tables): one row dict per batch (latency p50/p90/p99, throughput, diff statistics,
    verdict, whether CUDA graphs ran), metadata, and [(batch, LayerTimes rows)] when ``profile_layers``."""
    from .backends import TensorRTBackend
    from .bench import benchmark_cases, load_reference_data, select_cases
    refs = load_reference_data(data) if data else None
    target = TensorRTBackend(engine_path, plugins=plugins, cuda_graph=cuda_graph, log=log, purpose="test_trt.py",
                             verbose=verbose)
    try:
        r = target.runner
        precision = (r.meta or {}).get("precision", "fp32")
        tol = default_atol(precision) if atol is None else atol
        cases = select_cases(target, refs, batches, data, log=log)
        rows = benchmark_cases(target, cases, warmup=warmup, iters=iters, atol=tol, traces=traces)
        layer_tables = []
        if profile_layers:
            for case in cases:
                lt = r.profile_layers(case.input, iters=iters)
                layer_tables.append((len(case.input), lt.rows(iterations=iters)))
        ran_graphs = all(row["cuda_graph"] for row in rows)
        meta = {"engine": os.path.abspath(engine_path), "tensorrt": r.api.describe(), "sidecar": r.meta,
                "device": cuda.device_info(), "warmup": warmup, "iters": iters,
                "cuda_graph_requested": cuda_graph, "cuda_graph": bool(cuda_graph and ran_graphs),
                "atol": tol, "timing": "GPU events around each enqueue/graph launch; copies excluded",
                "graphs_captured": r.graphs.captures}
        if cuda_graph and not ran_graphs:
            log("note: CUDA graphs were asked for but %s ran plainly (the rows say which); %s" % (
                "some executions" if any(row["cuda_graph"] for row in rows) else "every execution",
                r.graph_note or "the context refused stream capture"))
    finally:
        target.close()
    return rows, meta, layer_tables
