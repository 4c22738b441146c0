"""Accuracy-gated selection, the Pareto front and paired speed-up intervals (mobilevit_trt/selection.py) on
recorded measurements: the chosen variant is the fastest within the budget, nothing outside the budget is chosen,
ties and missing measurements are handled; the interval says "within noise" exactly when it holds 1."""
import numpy as np
import pytest

from mobilevit_trt.errors import UserError
from mobilevit_trt.selection import candidate, format_ratio, paired_ratio, pareto_front, select

#: recorded: (variant, top-1, latency ms)
RECORDED = [("opt_dynamic", 99.3, 10.0), ("opt_dynamic_fp16", 99.3, 9.0), ("opt_dynamic_int8_entropy", 98.9, 6.0),
            ("opt_dynamic_int8_minmax", 99.2, 7.0), ("qat_wa_dynamic", 97.0, 5.0)]


def _cands(rows=RECORDED):
    return [candidate(v, top1=t, latency_ms=l) for v, t, l in rows]


def test_fastest_within_budget_is_chosen():
    chosen, rows = select(_cands(), 99.3, 0.5)
    assert chosen.variant == "opt_dynamic_int8_entropy"               # 0.4 points lost, 6 ms
    status = {r["variant"]: r["status"] for r in rows}
    assert status["qat_wa_dynamic"] == "over budget"                  # fastest, but 2.3 points lost
    assert status["opt_dynamic"] == "within budget"
    # a brute-force reference: the minimum latency over the candidates inside the budget
    inside = [c for c in _cands() if 99.3 - c.top1 <= 0.5]
    assert chosen.latency_ms == min(c.latency_ms for c in inside)
    # a tighter budget moves the choice; none of the chosen is ever outside the budget
    for budget, want in ((0.1, "opt_dynamic_int8_minmax"), (0.0, "opt_dynamic_fp16"), (5.0, "qat_wa_dynamic")):
        c, rows = select(_cands(), 99.3, budget)
        assert c.variant == want, budget
        assert 99.3 - c.top1 <= budget + 1e-9
        assert [r["variant"] for r in rows if r["status"] == "chosen"] == [want]


def test_ties_and_missing_measurements():
    cands = _cands([("a", 99.0, 5.0), ("b", 99.2, 5.0), ("c", 99.2, 5.0)]) + [
        candidate("plugin", top1=99.3, latency_ms=None), candidate("nothing", top1=None, latency_ms=1.0)]
    chosen, rows = select(cands, 99.3, 0.5)
    assert chosen.variant == "b"                # same latency: the higher top-1, then the earlier candidate
    assert [r["variant"] for r in rows[-2:]] == ["plugin", "nothing"]
    assert rows[-2]["status"] == rows[-1]["status"] == "not measured"
    assert rows[-2]["reason"] == "no latency measured" and rows[-1]["reason"] == "no top-1 measured"
    chosen, rows = select([candidate("x", top1=90.0, latency_ms=1.0)], 99.3, 0.5)
    assert chosen is None and rows[0]["status"] == "over budget"
    with pytest.raises(UserError, match="max-drop"):
        select(_cands(), 99.3, -1)
    with pytest.raises(UserError, match="reference"):
        select(_cands(), None, 0.5)


def test_pareto_front():
    front = [c.variant for c in pareto_front(_cands())]
    # opt_dynamic (10 ms, 99.3) is dominated by fp16 (9 ms, 99.3); every other point trades speed for accuracy
    assert front == ["qat_wa_dynamic", "opt_dynamic_int8_entropy", "opt_dynamic_int8_minmax", "opt_dynamic_fp16"]
    brute = [c.variant for c in _cands() if not any(
        o.latency_ms <= c.latency_ms and o.top1 >= c.top1 and (o.latency_ms, o.top1) != (c.latency_ms, c.top1)
        for o in _cands())]
    assert sorted(front) == sorted(brute)


def test_paired_ratio_interval():
    rng = np.random.default_rng(0)
    load = rng.uniform(1.0, 1.6, 12)                     # machine load shared by both series, round by round
    base = 10.0 * load
    faster = 5.0 * load * rng.uniform(0.98, 1.02, 12)
    r = paired_ratio(base, faster)
    assert 1.9 < r["ratio"] < 2.1 and r["lo"] <= r["ratio"] <= r["hi"] and not r["within_noise"]
    assert r["ratio"] == pytest.approx(float(np.median(base / faster)))
    same = paired_ratio(base, base * rng.uniform(0.95, 1.05, 12))
    assert same["within_noise"] and same["lo"] < 1.0 < same["hi"]
    assert format_ratio(same).endswith("within noise") and "within noise" not in format_ratio(r)
    two = paired_ratio([1.0, 2.0], [1.0, 1.0])
    assert two["lo"] is None and two["within_noise"] and "no interval" in format_ratio(two)
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_the_choice_says_whether_it_is_within_noise_of_the_runner_up():
    """Paired rounds decide where both have them (the ratio's interval against an independent NumPy bootstrap
    reading: a 2x gap is not noise, a 1 % one on +-5 % jitter is); else the min..max ranges."""
    rng = np.random.default_rng(1)
    load = rng.uniform(1.0, 1.5, 10)
    fast, slow = 5.0 * load, 10.0 * load * rng.uniform(0.99, 1.01, 10)
    near = 5.05 * load * rng.uniform(0.95, 1.05, 10)
    over = candidate("over", top1=90.0, latency_ms=1.0, rounds=list(0.5 * load))  # faster, outside the budget
    c = [over, candidate("a", top1=99.3, latency_ms=float(np.median(fast)), rounds=fast),
         candidate("b", top1=99.3, latency_ms=float(np.median(slow)), rounds=slow)]
    chosen, rows = select(c, 99.3, 0.5)
    m = rows[1]["margin"]
    assert chosen.variant == "a" and m["against"] == "b" and not m["within_noise"]  # runner-up skips "over"
    assert m["ratio"] == pytest.approx(float(np.median(slow / fast)))
    assert "faster than b" in rows[1]["reason"]
    chosen, rows = select([c[1], candidate("n", top1=99.3, latency_ms=float(np.median(near)) + 1e-3,
                                           rounds=near)], 99.3, 0.5)
    assert rows[0]["margin"]["within_noise"] and "within noise of n" in rows[0]["reason"]
    # no rounds: the ranges decide
    r = select([candidate("x", 99.3, latency_ms=5.0, latency_lo=4.0, latency_hi=6.0),
                candidate("y", 99.3, latency_ms=5.5, latency_lo=5.8, latency_hi=7.0)], 99.3, 0.5)[1]
    assert r[0]["margin"]["within_noise"] and "ranges overlap" in r[0]["reason"]
    r = select([candidate("x", 99.3, latency_ms=5.0, latency_lo=4.0, latency_hi=5.2),
                candidate("y", 99.3, latency_ms=9.0, latency_lo=8.0, latency_hi=9.5)], 99.3, 0.5)[1]
    assert not r[0]["margin"]["within_noise"] and "ranges apart" in r[0]["reason"]
    assert "margin" not in select([c[1]], 99.3, 0.5)[1][0]  # alone in the budget: nothing to compare
