"""The one check: an artifact against its source, through the ``Backend`` interface.

Every comparison in the toolkit -- an export against PyTorch, a fused graph against the unfused one, an FP16 or
INT8 graph against the FP32 graph, a Q/DQ export against its fake-quant model, an engine's outputs against
PyTorch's -- is :func:`compare`: both backends run the same inputs through :func:`run_all` (the one padding rule:
a batch a backend does not accept is padded with copies of its last row, the padded rows dropped), the
differences go through one statistics function (``metrics.compare_logits``) and one :func:`judge`, and
:func:`verdict_line` prints one PASSED/FAILED line with the tolerances used.

A :class:`Tolerance` passes when every element satisfies ``|test - ref| <= atol + rtol * |ref|`` (NumPy's
``allclose`` rule; either term may be left out) and the top-1 agreement is at least ``min_top1``.  A tolerance with
nothing set records the statistics without a verdict (``passed`` is None).
"""
import collections

from .errors import UserError


class Tolerance(collections.namedtuple("Tolerance", "atol rtol min_top1")):
    __slots__ = ()

    def __new__(cls, atol=None, rtol=None, min_top1=None):
        return super(Tolerance, cls).__new__(cls, atol, rtol, min_top1)

    @property
    def judged(self):
        return any(v is not None for v in self)

    def describe(self):
        parts = []
        if self.atol is not None or self.rtol is not None:
            parts.append("|diff| <= %g + %g*|ref|" % (self.atol or 0.0, self.rtol or 0.0))
        if self.min_top1 is not None:
            parts.append("top-1 agreement >= %.1f%%" % (100.0 * self.min_top1))
        return ", ".join(parts) or "no tolerance (statistics only)"


def random_batches(batches, img_size=256, seed=0):
    """Seeded standard-normal inputs ``[b, 3, img_size, img_size]``, one array per entry of ``batches``: what the
    export checks and the plan's ``inputs="random"`` checks compare on."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, 3, img_size, img_size)).astype(np.float32) for b in batches]


def run_all(backend, x):
    """``backend.infer`` on any number of rows: split into chunks the backend accepts (at most its largest batch),
    pad a chunk below every accepted size with copies of its last row, drop the padded outputs."""
    import numpy as np

    from .backends import fit_batch, max_batch

    ranges = backend.batch_ranges()
    n = len(x)
    if n == 0:
        raise UserError("no inputs to run")
    step = min(n, max_batch(ranges) or n)
    outs = []
    for s in range(0, n, step):
        chunk = x[s:s + step]
        k = len(chunk)
        b = fit_batch(ranges, k)
        if b > k:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - k, axis=0)])
        outs.append(np.asarray(backend.infer(chunk))[:k])
    out = np.asarray(outs[0] if len(outs) == 1 else np.concatenate(outs))
    if out.ndim < 2 or out.shape[0] != n:
        raise RuntimeError("backend returned outputs of shape %s for a batch of %d" % (out.shape, n))
    return out


def judge(test, ref, tol):
    """Statistics of ``test`` against ``ref`` (``metrics.compare_logits``) plus the verdict under ``tol``."""
    import numpy as np

    from .metrics import compare_logits

    t = np.asarray(test, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if t.shape != r.shape:
        return {"n": int(len(r)), "shape": list(t.shape), "ref_shape": list(r.shape), "max_abs": float("inf"),
                "mean_abs": float("inf"), "max_rel": float("inf"), "top1_agreement": 0.0,
                "atol": tol.atol, "rtol": tol.rtol, "min_top1": tol.min_top1, "passed": False if tol.judged else None}
    s = compare_logits(t, r)
    res = {"n": s["n"], "max_abs": _finite_or_inf(s["abs_max"]), "mean_abs": s["abs_mean"],
           "max_rel": _finite_or_inf(s["rel_max"]), "top1_agreement": s["top1_agreement"],
           "ref_range": [float(r.min()), float(r.max())] if r.size else None,
           "atol": tol.atol, "rtol": tol.rtol, "min_top1": tol.min_top1}
    if not tol.judged:
        res["passed"] = None
        return res
    ok = bool(np.all(np.isfinite(t)))
    if tol.atol is not None or tol.rtol is not None:
        bound = (tol.atol or 0.0) + (tol.rtol or 0.0) * np.abs(r)
        ok = ok and bool(np.all(np.abs(t - r) <= bound))
    if tol.min_top1 is not None:
        ok = ok and s["top1_agreement"] >= tol.min_top1
    res["passed"] = ok
    return res


def _finite_or_inf(v):
    import math
    return v if isinstance(v, float) and math.isfinite(v) else float("inf")


def compare(test, ref, inputs, tol=Tolerance()):
    """Run ``inputs`` through the backends ``test`` and ``ref`` and judge the outputs under ``tol``.

    ``inputs``: one ``[N, 3, H, W]`` array, or a list of them (each run as its own batch, e.g. several batch
    sizes through a dynamic graph); the statistics cover all of them.  Returns the :func:`judge` dict plus
    ``batches`` (the sizes run)."""
    import numpy as np

    batches = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    got = [run_all(test, np.ascontiguousarray(x, dtype=np.float32)) for x in batches]
    want = [run_all(ref, np.ascontiguousarray(x, dtype=np.float32)) for x in batches]
    bad = next(((g, w) for g, w in zip(got, want) if g.shape != w.shape), None)
    res = judge(bad[0], bad[1], tol) if bad else judge(np.concatenate(got), np.concatenate(want), tol)
    res["batches"] = [int(len(x)) for x in batches]
    return res


def compare_files(test_path, ref_path, inputs, tol=Tolerance()):
    """:func:`compare` of two ONNX files in ONNX Runtime (CPU; plugin nodes run as their reference ops)."""
    from .backends import OnnxRuntimeBackend

    with OnnxRuntimeBackend(test_path) as test, OnnxRuntimeBackend(ref_path) as ref:
        return compare(test, ref, inputs, tol)


def verdict_word(res):
    return "-" if res.get("passed") is None else ("PASSED" if res["passed"] else "FAILED")


def verdict_line(label, res, against="source"):
    """``PASSED fp16 vs opt_dynamic on 32 inputs (batch 32): max abs 1.2e-02, max rel 3.1e-03, top-1 agreement
    100.0% (tolerance: |diff| <= 0.1 + 0*|ref|)``"""
    return "%s %s vs %s on %d inputs (batch %s): max abs %.3g, max rel %.3g, top-1 agreement %.1f%% (tolerance: %s)" % (
        verdict_word(res), label, against, res["n"], ",".join(str(b) for b in res.get("batches", [res["n"]])),
        res["max_abs"], res["max_rel"], 100.0 * res["top1_agreement"],
        Tolerance(res.get("atol"), res.get("rtol"), res.get("min_top1")).describe())


def require(label, res, against="source", what=None):
    """Raise a UserError (with the verdict line) when ``res`` failed; ``what``: what is therefore not written."""
    if res.get("passed") is False:
        raise UserError("%s%s" % (verdict_line(label, res, against), "; %s not written" % what if what else ""))
    return res
