"""The latency loop, written once for every backend (TensorRT engine, ONNX Runtime, PyTorch).

A *target* is anything with the timing protocol of :class:`mobilevit_trt.backends.Backend`:

    prepare(x)        bind one input batch (TensorRT: upload it, set shapes and addresses)
    execute() -> bool run once, asynchronously where the backend can; True when a CUDA graph was replayed
    timer()           a fresh timer: start() / stop() -> ms (GPU events for TensorRT, perf_counter elsewhere)
    synchronize()     wait for the work queued so far
    fetch()           the logits of the last execution, float32 NumPy

:func:`benchmark` times ``iters`` single executions after ``warmup``; :func:`benchmark_cases` turns reference
cases into result rows (latency statistics, error against reference logits, verdict).  Only the target differs
between backends, so the CPU tests drive this very code with ONNX Runtime.  A row says ``cuda_graph: true``
only when every timed execution was a graph replay -- what ran, not what was asked for.

:func:`benchmark_streams` is the pipelined throughput mode (``test_trt.py --streams N``, trtexec's
``--infStreams``): N targets (one execution context and stream each), executions enqueued back to back with no
synchronization between them, host wall time over all of them.

**trtexec-shaped JSON.**  :func:`trtexec_times` / :func:`write_trtexec_times` write a timed loop in the layout of
``trtexec --exportTimes`` and :func:`trtexec_profile` / :func:`write_trtexec_profile` per-layer times in the layout
of ``--exportProfile``, as ``samples/common/sampleReporting.cpp`` of NVIDIA/TensorRT writes them
(``exportJSONTrace``, ``Profiler::exportJSONProfile``):

* times, one record per timed iteration: ``startEnqMs endEnqMs startH2dMs endH2dMs startComputeMs endComputeMs
  startD2hMs endD2hMs h2dMs computeMs d2hMs latencyMs`` (TensorRT 8.4 and later); TensorRT 8.2 (the 22.04
  container) adds ``endToEndMs`` (= endD2hMs - startH2dMs).  The toolkit's loop has no copies in it (the input is
  uploaded once before it, the output fetched once after), so every field is written as trtexec writes it under
  ``--noDataTransfers``: ``startH2dMs = endH2dMs = startComputeMs``, ``startD2hMs = endD2hMs = endComputeMs``,
  ``h2dMs = d2hMs = 0``, ``latencyMs = computeMs`` (``getTrace`` in ``samples/common/sampleInference.cpp``
  substitutes the compute events for the transfer events).  ``computeMs`` is the timer's measurement (GPU events
  for TensorRT); the start times are the host clock in ms since the first timed iteration (trtexec: since the start
  of the run), ``endComputeMs = startComputeMs + computeMs``; ``startEnqMs``/``endEnqMs`` bracket the
  ``execute()`` call (the enqueue, for TensorRT).
* profile: ``[{"count": iterations}, {"name", "timeMs" (total over the iterations), "averageMs", "medianMs",
  "percentage"}, ...]``; TensorRT 8.2 has no ``medianMs`` and ``averageMs = timeMs / count``.  ``medianMs`` needs
  the per-iteration samples; where only totals are known it is written as null.

:func:`trtexec_layout` picks the layout of the trtexec that ships with the TensorRT that ran the engine.  Note:
trtexec's percentiles are nearest-rank (``findPercentile``: the ``(n - 1 - int((1 - p/100) n))``-th sorted value);
the rows here interpolate linearly, as ``numpy.percentile`` does.
"""
import glob
import os
import time

from . import metrics
from .errors import UserError


class Case(object):
    """One input batch with optional reference logits and labels (a reference .npz, or random data)."""

    def __init__(self, name, inputs, logits=None, labels=None):
        self.name, self.input, self.logits, self.labels = name, inputs, logits, labels


def random_case(batch, shape, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed + batch)
    return Case("random", rng.standard_normal((batch,) + tuple(shape)).astype(np.float32))


def load_reference_data(path):
    """Reference .npz files (``input``, optional ``logits`` and ``label``) as bench.Case: one file, or every *.npz
    in a folder that holds reference logits (ordered by batch size; a calibration set beside them, input only, is
    left out)."""
    import numpy as np

    folder = os.path.isdir(path)
    if folder:
        files = glob.glob(os.path.join(path, "*.npz"))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise UserError("--data not found: %s" % path)
    refs = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                if "input" not in z.files:
                    raise UserError("%s has no 'input' array (found: %s)" % (f, ", ".join(z.files)))
                if folder and "logits" not in z.files:
                    continue  # e.g. calibration.npz written by benchmark/gen_test_data.py next to batch*.npz
                refs.append(Case(os.path.basename(f), np.ascontiguousarray(z["input"], np.float32),
                                 z["logits"] if "logits" in z.files else None,
                                 z["label"] if "label" in z.files else None))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated zip (BadZipFile), bad header (ValueError), I/O
            raise UserError("%s is not a readable .npz file (%s)" % (f, str(e).strip() or "truncated"))
    if not refs:
        raise UserError("no .npz files in %s" % path)
    refs.sort(key=lambda r: (len(r.input), r.name))
    return refs


def select_cases(target, refs=None, batches=None, data=None, log=print):
    """The cases to time on ``target``: the reference cases whose batch it accepts (filtered by ``batches``),
    else random inputs for each of ``batches`` (default: :func:`default_batches`)."""
    from .backends import accepts_batch
    ranges = target.batch_ranges()
    span = ", ".join("%d..%d" % r for r in ranges) if ranges else "any"
    if refs:
        cases = []
        for ref in refs:
            b = len(ref.input)
            if batches and b not in batches:
                continue
            if not accepts_batch(ranges, b):
                log("skipping %s: batch %d is outside the accepted batch sizes %s" % (ref.name, b, span))
                continue
            cases.append(ref)
        if not cases:
            raise UserError("no reference file in %s fits (accepted batch sizes %s)" % (data, span))
        return cases
    cases = []
    for b in (batches or default_batches(target)):
        if not accepts_batch(ranges, b):
            raise UserError("batch %d is outside the accepted batch sizes %s" % (b, span))
        cases.append(random_case(b, target.input_shape[1:]))
    return cases


def default_batches(target):
    """Every profile's MIN/OPT/MAX (TensorRT), the static batch, or 1/4/8 for a backend that takes any batch."""
    profiles = getattr(target, "profiles", None) or []
    if profiles:
        return sorted(set(v for p in profiles for v in p))
    ranges = target.batch_ranges()
    return sorted(set(v for r in ranges for v in r)) if ranges else [1, 4, 8]


def benchmark(target, x, warmup=20, iters=50, clock=time.perf_counter):
    """Time ``iters`` executions of ``target`` on batch ``x`` (each timed on its own, copies excluded).

    Returns {"times_ms", "host_ms", "logits", "graph_launches", "plain_launches"} (the counts cover the timed runs;
    ``host_ms``: per iteration (enqueue start, enqueue end), host clock in ms since the first timed iteration)."""
    if iters < 1:
        raise UserError("--iters must be at least 1")
    target.prepare(x)
    # at least one untimed run: the first execution after binding may allocate, compile or capture a graph
    for _ in range(max(1, int(warmup))):
        target.execute()
    target.synchronize()
    times, host, graphs = [], [], 0
    base = clock()
    for _ in range(int(iters)):
        t = target.timer()
        enq = clock()
        t.start()
        graphs += bool(target.execute())
        host.append(((enq - base) * 1000.0, (clock() - base) * 1000.0))
        times.append(t.stop())
    return {"times_ms": times, "host_ms": host, "logits": target.fetch(), "graph_launches": graphs,
            "plain_launches": iters - graphs}


def latency_row(times_ms, batch):
    """metrics.latency_stats plus p95, in percentile order."""
    stats = metrics.latency_stats(times_ms, batch)
    out = {}
    for k, v in stats.items():
        out[k] = v
        if k == "latency_ms_p90":
            out["latency_ms_p95"] = metrics.percentile(times_ms, 95)
    return out


def benchmark_cases(target, cases, warmup=20, iters=50, atol=None, log=None, traces=None):
    """One row per case: batch, latency p50/p90/p95/p99/mean/min/max, img/s, diff statistics and verdict against
    the case's reference logits, top-1 accuracy where labels are given, and whether CUDA graphs ran.
    ``traces``: a list to append {"batch", "data", "result" (:func:`benchmark`'s)} to, one per case (for
    :func:`trtexec_times`)."""
    rows = []
    for case in cases:
        b = len(case.input)
        res = benchmark(target, case.input, warmup=warmup, iters=iters)
        if traces is not None:
            traces.append({"batch": b, "data": case.name, "result": res})
        out = res["logits"]
        row = {"batch": b, "data": case.name,
               "cuda_graph": res["graph_launches"] == iters,
               "graph_launches": res["graph_launches"], "plain_launches": res["plain_launches"]}
        row.update(latency_row(res["times_ms"], b))
        if case.logits is not None:
            row.update(metrics.compare_logits(out, case.logits.reshape(out.shape)))
        else:
            row.update({"abs_mean": None, "abs_median": None, "abs_max": None, "rel_mean": None,
                        "rel_median": None, "rel_max": None, "top1_agreement": None})
        if case.labels is not None:
            row["top1_acc"] = metrics.topk_accuracy(out, case.labels, ks=(1,))["top1"]
        row["atol"] = atol
        row["verdict"] = metrics.verdict(row.get("abs_max"), atol) if case.logits is not None and atol else "-"
        rows.append(row)
        if log:
            log("batch %d: p50 %.3f ms, %.1f img/s%s" % (b, row["latency_ms_p50"], row["throughput_img_s"],
                                                         " (CUDA graph)" if row["cuda_graph"] else ""))
    return rows


TABLE_COLUMNS = ["batch", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "throughput_img_s",
                 "cuda_graph", "abs_mean", "abs_median", "abs_max", "rel_mean", "rel_median", "rel_max", "verdict"]
TABLE_HEADERS = {"latency_ms_p50": "p50 ms", "latency_ms_p90": "p90 ms", "latency_ms_p95": "p95 ms",
                 "latency_ms_p99": "p99 ms",
                 "throughput_img_s": "img/s", "cuda_graph": "graph", "abs_mean": "abs mean",
                 "abs_median": "abs median", "abs_max": "abs max", "rel_mean": "rel mean", "rel_median": "rel median",
                 "rel_max": "rel max"}


# -- pipelined throughput (test_trt.py --streams N, trtexec --infStreams) -----------------------------------------------

def benchmark_streams(targets, x, warmup=20, iters=50, clock=time.perf_counter):
    """``iters`` executions on each of ``targets`` (one stream each: N runners of one engine), enqueued round-robin
    back to back with no synchronization between them, then every target synchronized.  Returns {"streams",
    "executions", "wall_ms" (host time from the first timed enqueue to the end of the last execution: trtexec's
    "Total Host Walltime"), "throughput_qps", "throughput_img_s", "logits" (per target)}.  A synchronous backend
    (ONNX Runtime, PyTorch on the CPU) runs the same loop one execution after another."""
    if iters < 1:
        raise UserError("--iters must be at least 1")
    if not targets:
        raise UserError("--streams must be at least 1")
    for t in targets:
        t.prepare(x)
    for t in targets:
        for _ in range(max(1, int(warmup))):
            t.execute()
    for t in targets:
        t.synchronize()
    t0 = clock()
    for _ in range(int(iters)):
        for t in targets:
            t.execute()
    for t in targets:
        t.synchronize()
    wall = (clock() - t0) * 1000.0
    n = len(targets) * int(iters)
    qps = n * 1000.0 / wall if wall > 0 else float("inf")
    return {"streams": len(targets), "executions": n, "wall_ms": wall, "throughput_qps": qps,
            "throughput_img_s": qps * len(x), "logits": [t.fetch() for t in targets]}


def streams_rows(make_target, streams, refs=None, batches=None, data=None, warmup=20, iters=50, log=None):
    """One row per case (as :func:`select_cases` picks them) of :func:`benchmark_streams` on ``streams`` targets
    made by ``make_target()``; every stream's logits are checked against the first's (``max_abs_vs_stream0``)."""
    import numpy as np
    if streams < 1:
        raise UserError("--streams must be at least 1")
    targets = []
    try:
        for _ in range(int(streams)):
            targets.append(make_target())
        cases = select_cases(targets[0], refs, batches, data, log=log or (lambda *a: None))
        rows = []
        for case in cases:
            res = benchmark_streams(targets, case.input, warmup=warmup, iters=iters)
            first = np.asarray(res["logits"][0], np.float64)
            worst = max(float(np.max(np.abs(np.asarray(o, np.float64) - first))) for o in res["logits"])
            rows.append({"batch": len(case.input), "data": case.name, "streams": res["streams"],
                         "executions": res["executions"], "wall_ms": res["wall_ms"],
                         "throughput_qps": res["throughput_qps"], "throughput_img_s": res["throughput_img_s"],
                         "max_abs_vs_stream0": worst})
            if log:
                log("batch %d, %d streams: %.1f img/s (%d executions in %.1f ms)" % (
                    rows[-1]["batch"], res["streams"], res["throughput_img_s"], res["executions"], res["wall_ms"]))
        return rows
    finally:
        for t in targets:
            t.close()


STREAM_COLUMNS = ["batch", "streams", "executions", "wall_ms", "throughput_qps", "throughput_img_s"]
STREAM_HEADERS = {"wall_ms": "wall ms", "throughput_qps": "runs/s", "throughput_img_s": "img/s"}


# -- trtexec --exportTimes / --exportProfile layouts (see the module docstring) ----------------------------------------

#: the per-iteration fields of trtexec --exportTimes, in its order, per layout (sampleReporting.cpp exportJSONTrace)
TRACE_FIELDS = {
    "8.4": ["startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs", "startD2hMs",
            "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs"],
}
TRACE_FIELDS["8.2"] = TRACE_FIELDS["8.4"] + ["endToEndMs"]
#: the per-layer fields of trtexec --exportProfile (Profiler::exportJSONProfile), after the leading {"count": N}
PROFILE_FIELDS = {"8.4": ["name", "timeMs", "averageMs", "medianMs", "percentage"],
                  "8.2": ["name", "timeMs", "averageMs", "percentage"]}
LAYOUTS = ("8.2", "8.4")


def trtexec_layout(tensorrt=None):
    """"8.2" for TensorRT before 8.4 (its trtexec writes endToEndMs and no medianMs), else "8.4" (8.4 .. 11.x;
    TensorRT-RTX too).  ``tensorrt``: {"flavour", "version"} as ``trt_compat`` describes it, or a version string."""
    if isinstance(tensorrt, dict):
        if tensorrt.get("flavour") not in (None, "tensorrt"):
            return "8.4"
        tensorrt = tensorrt.get("version")
    try:
        major, minor = [int(p) for p in str(tensorrt).split(".")[:2]]
    except ValueError:
        return "8.4"
    return "8.2" if (major, minor) < (8, 4) else "8.4"


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise UserError("unknown trtexec layout %r (choose from %s)" % (layout, ", ".join(LAYOUTS)))


def trtexec_times(result, layout="8.4"):
    """:func:`benchmark`'s result as trtexec --exportTimes records (a list of dicts, one per timed iteration)."""
    _check_layout(layout)
    records = []
    for (enq0, enq1), ms in zip(result["host_ms"], result["times_ms"]):
        start, end = enq0, enq0 + ms
        rec = {"startEnqMs": enq0, "endEnqMs": enq1, "startH2dMs": start, "endH2dMs": start,
               "startComputeMs": start, "endComputeMs": end, "startD2hMs": end, "endD2hMs": end,
               "h2dMs": 0.0, "computeMs": ms, "d2hMs": 0.0}
        rec["latencyMs"] = rec["h2dMs"] + rec["computeMs"] + rec["d2hMs"]  # InferenceTime::latency()
        if layout == "8.2":
            rec["endToEndMs"] = rec["endD2hMs"] - rec["startH2dMs"]
        records.append(dict((k, float(rec[k])) for k in TRACE_FIELDS[layout]))
    return records


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def trtexec_profile(layers, count, layout="8.4"):
    """Per-layer times as trtexec --exportProfile records: ``[{"count": count}, {name, timeMs, averageMs,
    medianMs, percentage}, ...]`` in the order given (trtexec: execution order).  ``layers``: dicts with "name" and
    either "samples" (per-iteration ms) or "total_ms" and "calls"; ``count``: the profiled iterations."""
    _check_layout(layout)
    totals = []
    for l in layers:
        samples = l.get("samples")
        total = float(sum(samples)) if samples is not None else float(l["total_ms"])
        calls = len(samples) if samples is not None else int(l.get("calls") or count)
        totals.append((l["name"], total, calls, samples))
    grand = sum(t for _, t, _, _ in totals)
    out = [{"count": int(count)}]
    for name, total, calls, samples in totals:
        rec = {"name": name, "timeMs": total,
               "averageMs": total / (count if layout == "8.2" else max(calls, 1)),
               "medianMs": _median(samples) if samples else None,
               "percentage": total / grand * 100.0 if grand else 0.0}
        out.append(dict((k, rec[k]) for k in PROFILE_FIELDS[layout]))
    return out


def profile_layers_from_rows(rows, iterations):
    """``runtime.LayerTimes.rows(iterations)`` (ms per iteration, calls; sorted by time) as :func:`trtexec_profile`
    input; a row's "samples_ms" (per-iteration times), where the runner records them, gives the median."""
    out = []
    for r in rows:
        if r.get("samples_ms") is not None:
            out.append({"name": r["layer"], "samples": list(r["samples_ms"])})
        else:
            out.append({"name": r["layer"], "total_ms": r["ms"] * iterations, "calls": r.get("calls")})
    return out


def write_trtexec_times(path, records):
    """Write --exportTimes records (:func:`trtexec_times`) as JSON, atomically; returns the path."""
    from .fileio import write_json
    write_json(path, records)
    return path


def write_trtexec_profile(path, records):
    """Write --exportProfile records (:func:`trtexec_profile`) as JSON, atomically; returns the path."""
    from .fileio import write_json
    write_json(path, records)
    return path


def per_batch_paths(path, batches):
    """One output path per timed case: ``path`` itself for one case, else ``<stem>.b<batch><ext>`` (and
    ``.b<batch>-<k>`` for a batch size timed more than once)."""
    if len(batches) == 1:
        return [path]
    stem, ext = os.path.splitext(path)
    seen, out = {}, []
    for b in batches:
        seen[b] = seen.get(b, 0) + 1
        out.append("%s.b%d%s%s" % (stem, b, "" if seen[b] == 1 else "-%d" % seen[b], ext))
    return out
