"""ONNX Runtime (CPU) latency of an ONNX file per batch size: the CPU side of the performance study.

Timing: ``warmup`` runs, then ``iters`` runs each timed with ``time.perf_counter``; p50/p90/min/max per batch.
Graphs with plugin nodes (LayerNorm/Attention) run through the NumPy reference ops and are not timed here.
"""
import os
import time


def onnx_static_batch(path):
    """The static batch of the ONNX input (int), or None when the batch dimension is symbolic."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    d0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    return d0.dim_value if d0.HasField("dim_value") else None


def make_session(path, threads=0):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def bench_interleaved(jobs, rounds=5, iters=10, warmup=3, threads=0, img_size=256, seed=0, log=None):
    """Time several ONNX files fairly on a shared machine.

    ``jobs``: list of ``(variant, batch, path)``.  Each round times every job for ``iters`` calls, so a burst of
    load hits all variants alike; a job's figure is the median over rounds of the round p50, with the min..max of
    the round p50s as its spread and the round p50s themselves (``round_p50_ms``: paired by round across jobs,
    for ``selection.paired_ratio``).  Returns one row per job.
    """
    import statistics

    import numpy as np
    sessions = {}
    for _, _, path in jobs:
        if path not in sessions:
            sessions[path] = make_session(path, threads)
    rng = np.random.default_rng(seed)
    inputs = {}
    for _, b, _ in jobs:
        if b not in inputs:
            inputs[b] = rng.standard_normal((b, 3, img_size, img_size)).astype(np.float32)
    names = {path: sessions[path].get_inputs()[0].name for path in sessions}
    for _, b, path in jobs:
        for _ in range(warmup):
            sessions[path].run(None, {names[path]: inputs[b]})
    per_round = [[] for _ in jobs]
    for rnd in range(rounds):
        for j, (_, b, path) in enumerate(jobs):
            t = []
            for _ in range(iters):
                t0 = time.perf_counter()
                sessions[path].run(None, {names[path]: inputs[b]})
                t.append((time.perf_counter() - t0) * 1000.0)
            per_round[j].append(statistics.median(t))
        if log:
            log("round %d/%d done" % (rnd + 1, rounds))
    rows = []
    for (variant, b, path), meds in zip(jobs, per_round):
        m = statistics.median(meds)
        rows.append({"variant": variant, "batch": b, "onnx": os.path.basename(path), "latency_ms_p50": m,
                     "latency_ms_min": min(meds), "latency_ms_max": max(meds), "throughput_img_s": b * 1000.0 / m,
                     "rounds": rounds, "iters": iters, "round_p50_ms": [round(x, 4) for x in meds]})
    return rows
