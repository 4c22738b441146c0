"""One ``infer(batch) -> logits`` interface over TensorRT, ONNX Runtime and PyTorch.

Every backend takes a float32 NumPy batch ``[B, 3, S, S]`` and returns float32 logits ``[B, num_classes]``.
``static_batch`` is the batch size the artifact was built for (``None``: any batch) and ``batch_ranges()`` the
batch sizes it accepts (a dynamic TensorRT engine: its profiles' MIN..MAX); the accuracy loop pads a short batch
up to an accepted size (:func:`fit_batch`) and drops the padded rows.  Every backend also has the timing protocol
that :mod:`mobilevit_trt.bench` drives (``prepare / execute / timer / synchronize / fetch``): the same latency
loop runs on TensorRT and, in the CPU tests, on ONNX Runtime.  Heavy imports (torch, onnxruntime, tensorrt) happen when
a backend is created, never at import.
"""
import os
import time

from .errors import UserError

#: the backends made from a file (a PyTorch backend wraps a module the caller loaded)
FILE_BACKENDS = ("trt", "onnxruntime")


def fit_batch(ranges, n):
    """The batch size to run ``n`` rows at: ``n`` when a range ``(lo, hi)`` holds it, else the smallest ``lo``
    above ``n`` (pad up to it).  ``ranges=None``: any size.  UserError when ``n`` exceeds every range (split
    first: :func:`max_batch`)."""
    if accepts_batch(ranges, n):
        return n
    above = [lo for lo, hi in ranges if lo > n]
    if not above:
        raise UserError("a batch of %d is larger than every accepted batch size (%s)" % (
            n, ", ".join("%d..%d" % r for r in ranges)))
    return min(above)


def accepts_batch(ranges, n):
    return not ranges or any(lo <= n <= hi for lo, hi in ranges)


def max_batch(ranges):
    return None if not ranges else max(hi for _, hi in ranges)


class _WallTimer(object):
    def start(self):
        self._t0 = time.perf_counter()

    def stop(self):
        return (time.perf_counter() - self._t0) * 1000.0


class Backend(object):
    name = "backend"
    static_batch = None
    source = None
    profiles = None      # [(min, opt, max)] batch profiles, where the artifact has them
    input_shape = None   # (batch or -1, C, H, W)

    def infer(self, batch):
        raise NotImplementedError

    def batch_ranges(self):
        """[(min, max)] batch sizes the artifact accepts (its profiles, else its static batch), or None for any."""
        if self.profiles:
            return [(lo, hi) for lo, _, hi in self.profiles]
        return [(self.static_batch, self.static_batch)] if self.static_batch else None

    # -- timing protocol (mobilevit_trt.bench); synchronous backends run in execute() and time on the wall clock
    def prepare(self, batch):
        import numpy as np
        self._x = np.ascontiguousarray(batch, dtype=np.float32)
        self._out = None

    def execute(self):
        self._out = self.infer(self._x)
        return False

    def timer(self):
        return _WallTimer()

    def synchronize(self):
        pass

    def fetch(self):
        return self._out

    def close(self):
        pass

    def describe(self):
        return "%s (%s%s)" % (self.name, self.source,
                              ", static batch %d" % self.static_batch if self.static_batch else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TorchBackend(Backend):
    """A loaded PyTorch module (``torch.nn.Module`` mapping ``[B, 3, S, S]`` to logits).  Loading checkpoints is
    the caller's business (``MobileViT_Pytorch.source.torch_backend`` for this project's checkpoints): the library
    does not import the model package.  ``source`` names the weights in reports."""

    name = "torch"

    def __init__(self, model, source="pytorch module", num_classes=None, device="cpu", info=None):
        import torch

        device = str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device %s: CUDA is not available in this PyTorch" % device)
        self.info = dict(info or {})
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_classes = num_classes if num_classes is not None else self.info.get("num_classes")
        self.source = source

    def infer(self, batch):
        import numpy as np
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()


def plugin_nodes(model_proto):
    """The graph's TensorRT plugin nodes (LayerNorm / Attention of plugin_spec), as reference_ops sees them."""
    from .reference_ops import is_plugin_node

    return [n for n in model_proto.graph.node if is_plugin_node(n)]


class OnnxRuntimeBackend(Backend):
    """An ONNX file (or ModelProto) in ONNX Runtime (CPU by default).  Graphs with LayerNorm/Attention plugin
    nodes run through ``reference_ops.ReferenceRunner`` (NumPy/PyTorch reference implementations of the plugins)."""

    name = "onnxruntime"

    def __init__(self, onnx_path, providers=None, threads=None, optimize=True, profiles=None):
        """``profiles``: [(min, opt, max)] batch profiles to enforce as a TensorRT engine built with them would
        (a batch outside every profile is refused), so the CPU runs the batching an engine will see."""
        import onnx

        if isinstance(onnx_path, onnx.ModelProto):  # an in-memory graph (e.g. a fused graph before it is saved)
            proto, self.source = onnx_path, "<in-memory ONNX>"
        elif not onnx_path or not os.path.isfile(onnx_path):
            raise UserError("ONNX file not found: %s" % onnx_path)
        else:
            self.source = os.path.abspath(onnx_path)
            try:
                proto = onnx.load(onnx_path)
            except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends: not (or no longer) ONNX
                first = str(e).strip().splitlines()[0] if str(e).strip() else "cannot be decoded"
                raise UserError("%s is not a readable ONNX model (truncated or another format: %s)"
                                % (onnx_path, first[:160]))
        if not proto.graph.input or not proto.graph.output:
            raise UserError("%s is not a readable ONNX model (no graph inputs or outputs)" % onnx_path)
        inp, out = proto.graph.input[0], proto.graph.output[0]
        self.input_name, self.output_name = inp.name, out.name
        d0 = inp.type.tensor_type.shape.dim[0]
        self.static_batch = d0.dim_value if d0.HasField("dim_value") and d0.dim_value > 0 else None
        self.input_shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                                 for d in inp.type.tensor_type.shape.dim)
        dims = out.type.tensor_type.shape.dim
        self.num_classes = dims[-1].dim_value if len(dims) and dims[-1].HasField("dim_value") else None
        self.plugins = [n.op_type for n in plugin_nodes(proto)]
        self.profiles = [tuple(int(v) for v in p) for p in profiles] if profiles else None
        if self.profiles and self.static_batch:
            raise UserError("%s has a static batch of %d: batch profiles need a dynamic ONNX"
                            % (onnx_path, self.static_batch))
        self._sess = None
        self._runner = None
        if self.plugins:
            # plugin nodes run as NumPy references between ONNX Runtime pieces; one runner keeps its sessions for
            # every batch
            from .reference_ops import ReferenceRunner
            self._runner = ReferenceRunner(proto)
            self.name = "onnxruntime+reference-plugins"
            return
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            model = onnx_path if isinstance(onnx_path, str) else proto.SerializeToString()
            self._sess = ort.InferenceSession(model, so, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            raise UserError("ONNX Runtime cannot load %s: %s" % (onnx_path, str(e).strip().splitlines()[0][:300]))

    def infer(self, batch):
        import numpy as np

        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.profiles and not accepts_batch(self.batch_ranges(), len(x)):
            raise UserError("batch %d is outside every optimization profile of %s (%s)" % (
                len(x), self.source, ", ".join("%d:%d:%d" % p for p in self.profiles)))
        if self._sess is not None:
            return np.asarray(self._sess.run([self.output_name], {self.input_name: x})[0], dtype=np.float32)
        return np.asarray(self._runner.run([self.output_name], {self.input_name: x})[0], dtype=np.float32)

    def close(self):
        self._sess = None


class TensorRTBackend(Backend):
    """A serialized engine through ``runtime.TrtRunner`` (needs TensorRT and a GPU)."""

    name = "trt"

    def __init__(self, engine_path, plugins=None, cuda_graph=False, log=None, purpose="running a TensorRT engine",
                 verbose=False):
        if not engine_path or not os.path.isfile(engine_path):
            raise UserError("engine not found: %s" % engine_path)
        from .runtime import TrtRunner

        self.source = os.path.abspath(engine_path)
        self.runner = TrtRunner(engine_path, plugins=plugins, cuda_graph=cuda_graph, log=log, purpose=purpose,
                                verbose=verbose)
        self.static_batch = self.runner.static_batch
        self.profiles = [tuple(p) for p in self.runner.batch_range]
        self.input_shape = tuple(self.runner.input.shape)
        self.num_classes = None

    def infer(self, batch):
        import numpy as np

        return np.asarray(self.runner.infer(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)

    # the timing protocol, on the GPU: upload once, enqueue (or replay a graph), GPU events
    def prepare(self, batch):
        self.runner.prepare(batch)

    def execute(self):
        return self.runner.execute()

    def timer(self):
        return self.runner.timer()

    def synchronize(self):
        self.runner.synchronize()

    def fetch(self):
        return self.runner.fetch()

    def close(self):
        runner, self.runner = getattr(self, "runner", None), None
        if runner is not None:
            runner.close()


def make_backend(kind=None, trt_path=None, onnx_path=None, plugins=None, threads=None):
    """Create a file-backed backend: ``trt`` for an engine, ``onnxruntime`` for an ONNX file (``kind=None``: by
    which path is given).  A PyTorch backend wraps a loaded module: :class:`TorchBackend`."""
    if kind is None:
        kind = "trt" if trt_path else "onnxruntime" if onnx_path else None
    if kind == "trt":
        if not trt_path:
            raise UserError("--backend trt needs --trt_path")
        return TensorRTBackend(trt_path, plugins=plugins)
    if kind == "onnxruntime":
        if not onnx_path:
            raise UserError("--backend onnxruntime needs --onnx_path")
        return OnnxRuntimeBackend(onnx_path, threads=threads)
    raise UserError("unknown file backend %r (choose from %s)" % (kind, ", ".join(FILE_BACKENDS)))
