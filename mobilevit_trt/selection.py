"""The fastest correct variant: accuracy-gated selection over measured candidates, the Pareto front, ratios with
intervals.

* :func:`paired_ratio` -- the speed-up of one timed series over another from interleaved rounds: the median of the
  per-round ratios with a seeded bootstrap interval, "within noise" when the interval contains 1.
* :func:`select` -- given candidates (accuracy and latency measured for each), the budget (top-1 points lost
  against the FP32 reference), choose the fastest inside the budget; every candidate gets a status and a reason.
* :func:`pareto_front` -- the candidates no other candidate beats on both latency and top-1.

Pure functions over recorded measurements: the pipeline (``pipeline.select_stage``) feeds them and writes
``best.onnx`` / ``best.engine``; ``tests/test_selection.py`` checks them on recorded numbers.
"""
import collections

from .errors import UserError

#: bootstrap resamples and interval of :func:`paired_ratio`
BOOTSTRAP = 2000
INTERVAL = 0.95


def paired_ratio(base_rounds, test_rounds, seed=0, resamples=BOOTSTRAP, level=INTERVAL):
    """``base / test`` latency ratio (> 1: ``test`` is faster) from per-round figures of two series timed in the
    same interleaved rounds (round ``i`` of both ran back to back, so a burst of machine load hits both):
    ``{"ratio": median of per-round ratios, "lo", "hi": percentile bootstrap interval of that median,
    "within_noise": lo <= 1 <= hi, "rounds": n}``.  Fewer than 3 rounds: no interval (lo = hi = None,
    within_noise True: two numbers cannot tell a difference from noise)."""
    import numpy as np

    a = np.asarray(base_rounds, dtype=np.float64)
    b = np.asarray(test_rounds, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_ratio needs two equally long, non-empty series (got %s, %s)" % (a.shape, b.shape))
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("latencies must be positive")
    r = a / b
    out = {"ratio": float(np.median(r)), "rounds": int(len(r))}
    if len(r) < 3:
        out.update(lo=None, hi=None, within_noise=True)
        return out
    rng = np.random.default_rng(seed)
    meds = np.median(r[rng.integers(0, len(r), size=(resamples, len(r)))], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = float(np.quantile(meds, alpha)), float(np.quantile(meds, 1.0 - alpha))
    out.update(lo=lo, hi=hi, within_noise=bool(lo <= 1.0 <= hi))
    return out


def format_ratio(res):
    """``"1.42x [1.31, 1.55]"``, ``"0.97x [0.90, 1.04] within noise"``, ``"1.10x (2 rounds: no interval)"``."""
    if res.get("lo") is None:
        return "%.2fx (%d rounds: no interval)" % (res["ratio"], res["rounds"])
    return "%.2fx [%.2f, %.2f]%s" % (res["ratio"], res["lo"], res["hi"], " within noise" if res["within_noise"]
                                     else "")


Candidate = collections.namedtuple("Candidate", "variant top1 top5 latency_ms latency_lo latency_hi runtime artifact "
                                                "rounds")


def candidate(variant, top1=None, top5=None, latency_ms=None, latency_lo=None, latency_hi=None, runtime="",
              artifact=None, rounds=None):
    """``rounds``: the latency per interleaved round (paired across candidates timed in the same rounds)."""
    return Candidate(variant, top1, top5, latency_ms, latency_lo, latency_hi, runtime, artifact,
                     None if rounds is None or len(rounds) == 0 else [float(x) for x in rounds])


def margin(chosen, other):
    """How sure the machine is that ``chosen`` is faster than ``other``: ``{"against", "ratio", "lo", "hi",
    "within_noise", "how"}`` -- :func:`paired_ratio` of their interleaved rounds where both have the same rounds,
    else whether their min..max latency ranges overlap (``lo``/``hi`` None)."""
    out = {"against": other.variant}
    if chosen.rounds and other.rounds and len(chosen.rounds) == len(other.rounds):
        out.update(paired_ratio(other.rounds, chosen.rounds), how="paired rounds")
        return out
    overlap = None
    if None not in (chosen.latency_hi, other.latency_lo):
        overlap = other.latency_lo <= chosen.latency_hi
    out.update(ratio=other.latency_ms / chosen.latency_ms, lo=None, hi=None,
               within_noise=True if overlap is None else overlap, how="min..max ranges")
    return out


def format_margin(m):
    if m["how"] == "paired rounds":
        r = format_ratio(m)
    else:
        r = "%.2fx, min..max ranges %s" % (m["ratio"], "overlap" if m["within_noise"] else "apart")
    if m["within_noise"]:
        return "within noise of %s (%s): this machine cannot tell them apart" % (m["against"], r)
    return "%s faster than %s, the next within the budget" % (r, m["against"])


def select(candidates, reference_top1, max_drop):
    """Choose the fastest candidate whose top-1 is at most ``max_drop`` points below ``reference_top1``.

    Returns ``(chosen Candidate or None, rows)``; ``rows`` (one per candidate, fastest first, unmeasured last)
    carry ``status`` -- ``chosen``, ``within budget``, ``over budget`` or ``not measured`` -- ``drop`` (points
    below the reference) and ``reason``.  Ties on latency go to the higher top-1, then to the earlier candidate
    (the plan's order: the simpler artifact).  A candidate without a top-1 or a latency is never chosen.  The
    chosen row's ``margin`` (:func:`margin`) compares it with the next fastest within the budget, and its reason
    says whether the two are within noise.
    """
    if max_drop is None or not max_drop >= 0:
        raise UserError("--max-drop must be a number of top-1 points >= 0, got %r" % (max_drop,))
    if reference_top1 is None:
        raise UserError("selection needs the FP32 reference's top-1 (the accuracy stage did not measure it)")
    order = {c.variant: i for i, c in enumerate(candidates)}
    measured = [c for c in candidates if c.top1 is not None and c.latency_ms is not None]
    unmeasured = [c for c in candidates if c not in measured]
    measured.sort(key=lambda c: (c.latency_ms, -c.top1, order[c.variant]))
    chosen = None
    rows = []
    for c in measured:
        drop = reference_top1 - c.top1
        ok = drop <= max_drop + 1e-9
        if ok and chosen is None:
            chosen = c
            status, reason = "chosen", "fastest within the budget (top-1 %.2f, %.2f points below FP32)" % (
                c.top1, max(0.0, drop))
        elif ok:
            status, reason = "within budget", "slower than %s (%.3f vs %.3f ms)" % (chosen.variant, c.latency_ms,
                                                                                   chosen.latency_ms)
        else:
            status, reason = "over budget", "top-1 %.2f is %.2f points below FP32 (budget %.2f)" % (c.top1, drop,
                                                                                                  max_drop)
        rows.append(dict(c._asdict(), status=status, drop=round(drop, 4), reason=reason))
    ok_rows = [r for r in rows if r["status"] in ("chosen", "within budget")]
    if len(ok_rows) > 1:  # is the choice distinguishable from the next within the budget?
        runner = next(c for c in measured if c.variant == ok_rows[1]["variant"])
        m = margin(chosen, runner)
        ok_rows[0]["margin"] = m
        ok_rows[0]["reason"] += "; " + format_margin(m)
    for c in unmeasured:
        missing = [k for k in ("top1", "latency_ms") if getattr(c, k) is None]
        rows.append(dict(c._asdict(), status="not measured", drop=None,
                         reason="no %s measured" % " or ".join("top-1" if k == "top1" else "latency"
                                                               for k in missing)))
    return chosen, rows


def pareto_front(candidates):
    """The measured candidates that no other measured candidate dominates (faster or as fast, and at least as
    accurate, strictly better in one), fastest first."""
    pts = [c for c in candidates if c.top1 is not None and c.latency_ms is not None]
    front = []
    for c in pts:
        dominated = any(o is not c and o.latency_ms <= c.latency_ms and o.top1 >= c.top1 and
                        (o.latency_ms < c.latency_ms or o.top1 > c.top1) for o in pts)
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: (c.latency_ms, -c.top1))
