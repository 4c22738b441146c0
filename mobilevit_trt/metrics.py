"""Output-difference statistics, top-k agreement/accuracy and latency percentiles (NumPy only)."""
import math

#: default max-abs-diff tolerance for test_trt.py's verdict, per engine precision.  FP32 engines use TF32 for
#: convolutions and matrix products by default on Ampere and newer, hence 1e-2 rather than 1e-4.
DEFAULT_ATOL = {"fp32": 1e-2, "fp16": 1e-1, "int8": 1.0}
REL_EPS = 1e-6


def diff_stats(test, ref, eps=REL_EPS):
    """Absolute and relative difference statistics between two arrays of the same shape.

    Relative difference is ``|test - ref| / max(|ref|, eps)``; classification logits are often close to zero,
    so the relative numbers are large and the verdict uses the absolute ones (as the original project did).
    """
    import numpy as np
    t = np.asarray(test, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if t.shape != r.shape:
        raise ValueError("shape mismatch: %s vs %s" % (t.shape, r.shape))
    a = np.abs(t - r)
    rel = a / np.maximum(np.abs(r), eps)
    if a.size == 0:
        nan = float("nan")
        return {"abs_mean": nan, "abs_median": nan, "abs_max": nan, "rel_mean": nan, "rel_median": nan,
                "rel_max": nan}
    return {"abs_mean": float(a.mean()), "abs_median": float(np.median(a)), "abs_max": float(a.max()),
            "rel_mean": float(rel.mean()), "rel_median": float(np.median(rel)), "rel_max": float(rel.max())}


def topk(logits, k=1):
    import numpy as np
    x = np.asarray(logits)
    if k == 1:
        return x.argmax(axis=-1)[..., None]
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def top1_agreement(test, ref):
    """Fraction of rows whose arg-max matches."""
    import numpy as np
    t = np.asarray(test).argmax(axis=-1)
    r = np.asarray(ref).argmax(axis=-1)
    return float((t == r).mean()) if t.size else float("nan")


def topk_accuracy(logits, labels, ks=(1, 5)):
    """{"top1": fraction, "top5": fraction} against integer labels."""
    import numpy as np
    labels = np.asarray(labels).reshape(-1)
    out = {}
    kmax = max(ks)
    pred = topk(logits, kmax)
    for k in ks:
        hit = (pred[:, :k] == labels[:, None]).any(axis=1)
        out["top%d" % k] = float(hit.mean()) if labels.size else float("nan")
    return out


def compare_logits(test, ref, eps=REL_EPS):
    """diff_stats plus top-1 agreement: what the precision checks print."""
    s = diff_stats(test, ref, eps)
    s["top1_agreement"] = top1_agreement(test, ref)
    s["n"] = int(len(test))
    return s


def verdict(abs_max, atol):
    if abs_max is None or (isinstance(abs_max, float) and math.isnan(abs_max)):
        return "-"
    return "PASSED" if abs_max <= atol else "FAILED"


def percentile(values, q):
    """Linear-interpolated percentile of a non-empty sequence (q in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_stats(times_ms, batch):
    """p50/p90/p99/mean/min/max of per-iteration times and the throughput at the median."""
    p50 = percentile(times_ms, 50)
    return {"latency_ms_p50": p50, "latency_ms_p90": percentile(times_ms, 90),
            "latency_ms_p99": percentile(times_ms, 99), "latency_ms_mean": sum(times_ms) / len(times_ms),
            "latency_ms_min": min(times_ms), "latency_ms_max": max(times_ms),
            "throughput_img_s": (batch * 1000.0 / p50) if p50 > 0 else float("inf"), "iters": len(times_ms)}
