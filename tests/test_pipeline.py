"""Pipeline: content-hash stage caching (real files), and the report's tables computed from real rows."""
import json

from mobilevit_trt.pipeline_report import latency_pivot, md_table
from mobilevit_trt.stages import StageRunner


def _quiet(*a, **k):
    pass


def test_stage_cache_follows_input_content(tmp_path):
    inp = tmp_path / "in.txt"
    out = tmp_path / "run" / "out.txt"
    inp.write_text("hello")
    calls = []

    def stage():
        calls.append(1)
        out.write_text(inp.read_text().upper())
        return {"len": len(out.read_text())}

    def run(force=False, params=None):
        r = StageRunner(str(tmp_path / "run"), force=force, log=_quiet)
        res = r.run("upper", stage, inputs=[str(inp)], params=params or {"p": 1}, outputs=[str(out)])
        return r, res

    r, res = run()
    assert res == {"len": 5} and len(calls) == 1 and r.records[-1]["status"] == "ran"
    r, res = run()  # unchanged: cached, result replayed
    assert res == {"len": 5} and len(calls) == 1 and r.records[-1]["status"] == "cached"
    inp.write_text("hello!")  # content change: re-run
    r, res = run()
    assert res == {"len": 6} and len(calls) == 2
    r, _ = run(params={"p": 2})  # parameter change: re-run
    assert len(calls) == 3
    r, _ = run(force=True, params={"p": 2})  # --force
    assert len(calls) == 4
    out.unlink()  # output gone: re-run
    r, _ = run(params={"p": 2})
    assert len(calls) == 5 and out.read_text() == "HELLO!"
    state = json.loads((tmp_path / "run" / "pipeline_state.json").read_text())
    assert state["upper"]["status"] == "ran" and state["upper"]["result"] == {"len": 6}


def test_failed_and_skipped_stages_are_recorded_not_cached(tmp_path):
    from mobilevit_trt.errors import UserError
    r = StageRunner(str(tmp_path), log=_quiet)

    def bad():
        raise UserError("no such thing")
    assert r.run("bad", bad) is None
    r.skip("gpu", "needs a GPU")
    r.run("needs-input", lambda: 1, inputs=[str(tmp_path / "missing.onnx")])
    rows = {x["stage"]: x for x in r.summary_rows()}
    assert rows["bad"]["status"] == "failed" and "no such thing" in rows["bad"]["note"]
    assert rows["gpu"]["status"] == "skipped" and rows["gpu"]["note"] == "needs a GPU"
    assert rows["needs-input"]["status"] == "skipped" and "missing.onnx" in rows["needs-input"]["note"]
    assert r.failed == ["bad"]
    calls = []
    r2 = StageRunner(str(tmp_path), log=_quiet)
    r2.run("bad", lambda: calls.append(1) or 7)  # a failed stage is never taken from the cache
    assert calls == [1]


def test_latency_pivot_and_speedup():
    rows = [{"variant": "base_static", "batch": 1, "latency_ms_p50": 10.0},
            {"variant": "base_static", "batch": 4, "latency_ms_p50": 40.0},
            {"variant": "opt_dynamic", "batch": 1, "latency_ms_p50": 5.0},
            {"variant": "opt_dynamic", "batch": 4, "latency_ms_p50": 16.0}]
    names, lat, spd = latency_pivot(rows, lambda b: "base_static")
    assert names == ["base_static", "opt_dynamic"]
    assert lat == [{"batch": 1, "base_static": 10.0, "opt_dynamic": 5.0},
                   {"batch": 4, "base_static": 40.0, "opt_dynamic": 16.0}]
    assert spd[0]["opt_dynamic"] == 2.0 and spd[1]["opt_dynamic"] == 2.5 and spd[1]["base_static"] == 1.0
    md = md_table(lat, ["batch"] + names, fmt={n: "%.2f" for n in names})
    assert md.splitlines()[2] == "| 1 | 10.00 | 5.00 |"
