"""mobilevit_trt.cuda on a real GPU: buffers, copies, events, graph capture/replay, GraphCache, the driver-API
graph path and the error helper, with CuPy (and PyTorch) kernels on mobilevit_trt.cuda's stream; checked exactly.

Skipped without a CUDA GPU, cuda-python (cuda.bindings / cuda.cudart) or CuPy.  The checks themselves live in
benchmark/gpu_cuda_helpers_check.py (which also times them)."""

import pytest

pytestmark = pytest.mark.gpu


def test_buffers_copies_kernel(chk, kernels):
    assert chk.check_buffers_and_copies(kernels) == {"copies_and_kernel_exact": True}


def test_graph_capture_and_replay(chk, kernels):
    r = chk.check_graph_capture_and_replay(kernels, iters=20)
    assert r["capture_does_not_execute"] and r["graph_replay_exact"]
    assert r["graph_ms_p50"] > 0 and r["plain_ms_p50"] > 0


def test_graph_cache(chk, kernels):
    r = chk.check_graph_cache(kernels)
    assert r["graph_cache_exact"] and r["graph_cache_captures"] == 2 and r["graph_cache_veto_runs_plain"]


def test_torch_on_our_stream(chk, kernels):
    r = chk.check_torch_on_our_stream(kernels)
    if "torch_inplace_on_our_stream_in_graph_exact" not in r:
        pytest.skip("torch: %s" % r["torch"])
    assert r["torch_inplace_on_our_stream_in_graph_exact"]


def test_driver_api_graphs(chk, kernels):
    assert chk.check_driver_api_graphs(kernels) == {"driver_api_graph_exact": True}


def test_error_helper(chk):
    r = chk.check_error_helper()
    assert r["runtime_error_raised"] in ("cudaErrorInvalidValue", "cudaErrorInvalidDevicePointer")
    assert r["driver_error_raised"] and r["driver_error_raised"].startswith("CUDA_ERROR_")
    assert r["after_error_ok"]


def test_events_time_copies(chk):
    r = chk.check_copy_bandwidth()
    assert r["h2d_pinned_GBps"] > 1 and r["d2h_pinned_GBps"] > 1
