"""mobilevit_trt.bench's latency loop on the GPU: a target that launches a CuPy kernel through cuda.py's GraphCache
(as the TensorRT runner does) and times with cuda.py's events.  A row says cuda_graph true only when every timed
execution was a graph replay: with capture vetoed (as TensorRT-RTX's context does without REQUIRE_USER_ALLOCATION)
it says false.  Skipped without a GPU, cuda-python or CuPy."""
import numpy as np
import pytest

pytestmark = pytest.mark.gpu


class _Target(object):
    """y = x + 1 on the GPU, through GraphCache like TrtRunner._execute, events like TrtRunner.timer."""

    def __init__(self, k, capturable):
        from mobilevit_trt import cuda
        self.cuda, self.k, self.capturable = cuda, k, capturable
        self.stream = cuda.Stream()
        self.graphs = cuda.GraphCache(self.stream)
        self._start, self._end = cuda.Event(), cuda.Event()  # what runtime._EventTimer records on

    def prepare(self, x):
        self.n = x.size
        self.dev = self.cuda.DeviceBuffer(x.nbytes)
        self.host = self.cuda.PinnedBuffer(x.nbytes)
        self.host.view(np.float32, (self.n,))[...] = x.reshape(-1)
        self.cuda.memcpy_htod_async(self.dev, self.host, self.stream)

    def execute(self):
        return self.graphs.launch("k", lambda: self.k.axpb(self.dev, self.n, 1.0, 1.0, self.stream),
                                  capturable=lambda: self.capturable)

    def timer(self):
        from mobilevit_trt.runtime import _EventTimer
        return _EventTimer(self)  # TrtRunner's own timer

    def synchronize(self):
        self.stream.synchronize()

    def fetch(self):
        self.cuda.memcpy_dtoh_async(self.host, self.dev, self.stream)
        self.stream.synchronize()
        return self.host.view(np.float32, (self.n,)).copy()

    def close(self):
        self.graphs.clear()
        for b in (self.dev, self.host):
            b.free()


@pytest.mark.parametrize("capturable", [True, False])
def test_bench_labels_what_ran(kernels, capturable):
    from mobilevit_trt import bench
    t = _Target(kernels, capturable)
    x = np.zeros(1 << 14, np.float32)
    try:
        res = bench.benchmark(t, x, warmup=3, iters=7)
    finally:
        t.close()
    # 3 warmup + 7 timed calls, one execution each (a vetoed capture runs once, plainly); the first call of a
    # capturable key also runs once plainly before capturing
    extra = 1 if capturable else 0
    np.testing.assert_array_equal(res["logits"], np.full_like(x, 10 + extra))
    assert res["graph_launches"] == (7 if capturable else 0) and len(res["times_ms"]) == 7
    assert all(ms > 0 for ms in res["times_ms"])
