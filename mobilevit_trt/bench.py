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
"""
import glob
import os

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


def benchmark(target, x, warmup=20, iters=50):
    """Time ``iters`` executions of ``target`` on batch ``x`` (each timed on its own, copies excluded).

    Returns {"times_ms", "logits", "graph_launches", "plain_launches"} (the counts cover the timed runs)."""
    if iters < 1:
        raise UserError("--iters must be at least 1")
    target.prepare(x)
    # at least one untimed run: the first execution after binding may allocate, compile or capture a graph
    for _ in range(max(1, int(warmup))):
        target.execute()
    target.synchronize()
    times, graphs = [], 0
    for _ in range(int(iters)):
        t = target.timer()
        t.start()
        graphs += bool(target.execute())
        times.append(t.stop())
    return {"times_ms": times, "logits": target.fetch(), "graph_launches": graphs, "plain_launches": iters - graphs}


def benchmark_cases(target, cases, warmup=20, iters=50, atol=None, log=None):
    """One row per case: batch, latency p50/p90/p99/mean/min/max, img/s, diff statistics and verdict against the
    case's reference logits, top-1 accuracy where labels are given, and whether CUDA graphs ran."""
    rows = []
    for case in cases:
        b = len(case.input)
        res = benchmark(target, case.input, warmup=warmup, iters=iters)
        out = res["logits"]
        row = {"batch": b, "data": case.name,
               "cuda_graph": res["graph_launches"] == iters,
               "graph_launches": res["graph_launches"], "plain_launches": res["plain_launches"]}
        row.update(metrics.latency_stats(res["times_ms"], b))
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


TABLE_COLUMNS = ["batch", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput_img_s", "cuda_graph",
                 "abs_mean", "abs_median", "abs_max", "rel_mean", "rel_median", "rel_max", "verdict"]
TABLE_HEADERS = {"latency_ms_p50": "p50 ms", "latency_ms_p90": "p90 ms", "latency_ms_p99": "p99 ms",
                 "throughput_img_s": "img/s", "cuda_graph": "graph", "abs_mean": "abs mean",
                 "abs_median": "abs median", "abs_max": "abs max", "rel_mean": "rel mean", "rel_median": "rel median",
                 "rel_max": "rel max"}
