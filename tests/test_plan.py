"""The plan of variants, the one check, and the pipeline as loops over the plan.

Independent references: NumPy's ``allclose`` for the tolerance rule, PyTorch modules for the backends, the
pipeline's own files re-checked in ONNX Runtime.
"""
import json
import os

import numpy as np
import pytest

from mobilevit_trt import plan as P
from mobilevit_trt import verify
from mobilevit_trt.errors import UserError

torch = pytest.importorskip("torch")


class _Linear(torch.nn.Module):
    """A tiny "classifier" on [B, 3, 4, 4] inputs (enough for the check's statistics)."""

    def __init__(self, seed=0, scale=1.0, classes=5):
        super(_Linear, self).__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(48, classes, generator=g) * scale)

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.w


def _backend(**kw):
    from mobilevit_trt.backends import TorchBackend
    return TorchBackend(_Linear(**kw))


def test_tolerance_is_numpys_allclose_rule():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((64, 10))
    for atol, rtol in ((1e-3, 0.0), (0.0, 1e-2), (1e-3, 1e-2)):
        for scale in (1e-4, 1e-3, 1e-2, 1e-1):
            test = ref + rng.standard_normal(ref.shape) * scale
            res = verify.judge(test, ref, verify.Tolerance(atol=atol, rtol=rtol))
            assert res["passed"] == bool(np.allclose(test, ref, rtol=rtol, atol=atol)), (atol, rtol, scale)
    # top-1 agreement: swap the arg-max of a quarter of the rows
    test = ref.copy()
    rows = np.arange(16)
    top = ref[rows].argmax(1)
    test[rows, top] = ref[rows].min(1) - 1.0
    res = verify.judge(test, ref, verify.Tolerance(min_top1=0.8))
    assert res["top1_agreement"] == pytest.approx(48 / 64.0) and res["passed"] is False
    assert verify.judge(test, ref, verify.Tolerance(min_top1=0.75))["passed"] is True
    assert verify.judge(test, ref, verify.Tolerance())["passed"] is None        # statistics only
    assert verify.judge(ref[:, :5], ref, verify.Tolerance(atol=1.0))["passed"] is False  # shape mismatch


def test_compare_finds_a_different_model_and_accepts_the_same():
    x = np.random.default_rng(1).standard_normal((10, 3, 4, 4)).astype(np.float32)
    same = verify.compare(_backend(seed=0), _backend(seed=0), x, verify.Tolerance(atol=1e-6))
    assert same["passed"] is True and same["max_abs"] == 0.0 and same["batches"] == [10]
    other = verify.compare(_backend(seed=1), _backend(seed=0), [x[:3], x[3:]], verify.Tolerance(atol=1e-3))
    assert other["passed"] is False and other["batches"] == [3, 7]
    direct = np.abs(_backend(seed=1).infer(x) - _backend(seed=0).infer(x)).max()
    assert other["max_abs"] == pytest.approx(float(direct), rel=1e-6)
    with pytest.raises(UserError, match="FAILED"):
        verify.require("seed 1", other, "seed 0")


def test_run_all_pads_with_the_last_row_and_drops_the_padding():
    from mobilevit_trt.backends import TorchBackend

    class Static4(TorchBackend):
        static_batch = 4
        seen = []

        def infer(self, batch):
            assert len(batch) == 4
            self.seen.append(np.array(batch))
            return TorchBackend.infer(self, batch)

    be = Static4(_Linear())
    x = np.random.default_rng(2).standard_normal((6, 3, 4, 4)).astype(np.float32)
    out = verify.run_all(be, x)
    assert out.shape == (6, 5) and np.allclose(out, _backend().infer(x), atol=1e-6)
    assert np.array_equal(be.seen[1][2:], np.stack([x[5], x[5]]))  # padded with copies of the last row


def test_the_plan_declares_each_name_once_and_in_dependency_order():
    plan = P.build_plan()
    names = [v.name for v in plan]
    assert len(names) == len(set(names))
    pos = {n: i for i, n in enumerate(names)}
    for v in plan:
        for ref in [v.source] + [c.against for c in v.checks] + [v.engine.onnx if v.engine else None]:
            assert ref is None or pos[ref] < pos[v.name], (v.name, ref)
    # every file variant is checked, under a real tolerance where it is made from an FP32 model
    for v in plan.files():
        assert v.checks, v.name
        assert any(c.tol.judged for c in v.checks), v.name
    with pytest.raises(ValueError, match="declared twice"):
        P.Plan([plan["torch_fp32"], plan["torch_fp32"]])
    with pytest.raises(ValueError, match="not declared before"):
        P.Plan([plan["base_dynamic"]])


def test_a_plan_filtered_keeps_what_its_variants_are_made_and_checked_from():
    plan = P.build_plan()
    sub = plan.filtered(["qat_wa_dynamic", "opt_dynamic_plugin"])
    assert [v.name for v in sub] == ["torch_opt", "torch_qat_wa", "opt_dynamic", "opt_dynamic_plugin",
                                     "qat_wa_dynamic"]
    table, rows = P.accuracy_table_plan()
    assert rows == list(P.ACCURACY_TABLE) and all(r in table for r in rows)
    # the original's QAT+PTQ recipe is made after the export it quantizes, in a stage of its own
    stages = [s for s, _ in table.stages()]
    assert stages.index("export qat_w_float") < stages.index("int8 ptq entropy: qat_w_ptq_entropy")


def _op17_variant():
    """The closing note's example: one more variant, an opset-17 export (native LayerNormalization)."""
    return P.Variant("opt_dynamic_op17", P.Step("export", dynamic=True, opset=17), source="torch_opt",
                     checks=[P.Check(tol=P.EXPORT_TOL, batches=(1, 4))], engine=P.Engine(), accuracy=True,
                     cpu_series="opt_dynamic_op17", description="opt, dynamic batch, FP32, opset 17")


@pytest.mark.slow
def test_a_new_variant_is_one_plan_entry_made_checked_built_and_reported(tmp_path):
    """Adding a variant to the plan is all it takes: the pipeline makes it, checks it against PyTorch, builds its
    engine where TensorRT(-RTX) is installed, measures its accuracy and reports it."""
    import onnx

    from MobileViT_Pytorch.source import CheckpointSource
    from mobilevit_trt.pipeline import run_pipeline

    plan = P.build_plan(extra=[_op17_variant()]).filtered(["opt_dynamic_op17"])
    out = str(tmp_path / "run")
    results, run = run_pipeline(CheckpointSource(qat_paths={}), out=out, plan=plan, acc_limit=16, calib_count=8,
                                bench_iters=2, log=lambda *a: None)
    st = {s["stage"]: s for s in results["stages"]}
    assert st["export opt"]["status"] == "ran" and not run.failed, results["stages"]
    path = os.path.join(out, "onnx", "opt_dynamic_op17.onnx")
    assert any(n.op_type == "LayerNormalization" for n in onnx.load(path).graph.node)
    ex = {e["variant"]: e for e in results["exports"]}
    assert ex["opt_dynamic_op17"]["passed"] and ex["opt_dynamic_op17"]["max_abs_vs_torch"] <= 1e-4
    # re-checked independently: the file the pipeline left is what PyTorch computes
    from MobileViT_Pytorch.checkpoint import DEFAULT_WEIGHTS, load_model
    from mobilevit_trt.backends import OnnxRuntimeBackend, TorchBackend
    x = np.random.default_rng(5).standard_normal((3, 3, 256, 256)).astype(np.float32)
    reference = TorchBackend(load_model(DEFAULT_WEIGHTS, opt=True, quiet=True)[0])
    res = verify.compare(OnnxRuntimeBackend(path), reference, x, P.EXPORT_TOL)
    assert res["passed"], res
    acc = {a["variant"]: a for a in results["accuracy"]}
    assert acc["opt_dynamic_op17"]["images"] == 16
    assert {c["variant"] for c in results["cpu_latency"]} == {"opt_dynamic_op17"}
    import importlib.util
    if importlib.util.find_spec("tensorrt_rtx") or importlib.util.find_spec("tensorrt"):
        assert st["engine opt_dynamic_op17"]["status"] == "ran", st["engine opt_dynamic_op17"]
    else:
        assert st["engine opt_dynamic_op17"]["status"] == "skipped"
    with open(os.path.join(out, "results.json")) as f:
        assert "opt_dynamic_op17" in json.dumps(json.load(f)["accuracy"])
    assert "opt, dynamic batch, FP32, opset 17" in open(os.path.join(out, "summary.md")).read()


@pytest.mark.slow
def test_a_failed_check_fails_its_stage_and_writes_nothing(tmp_path):
    from MobileViT_Pytorch.source import CheckpointSource
    from mobilevit_trt.pipeline import run_pipeline

    strict = P.Variant("opt_dynamic_fp16_strict", P.Step("fp16"), source="opt_dynamic",
                       checks=[P.Check(inputs="calibration", tol=verify.Tolerance(atol=1e-7), batches=(4,))],
                       description="FP16 held to FP32 precision: must fail")
    plan = P.build_plan(extra=[strict]).filtered(["opt_dynamic_fp16_strict"])
    out = str(tmp_path / "run")
    results, run = run_pipeline(CheckpointSource(qat_paths={}), out=out, plan=plan, calib_count=4,
                                stages=("make",), log=lambda *a: None)
    st = {s["stage"]: s for s in results["stages"]}
    assert run.failed == ["fp16"], results["stages"]
    assert "FAILED opt_dynamic_fp16_strict vs opt_dynamic" in st["fp16"]["note"]
    assert os.path.isfile(os.path.join(out, "onnx", "opt_dynamic.onnx"))
    assert not [f for f in os.listdir(os.path.join(out, "onnx")) if "fp16" in f]


def test_a_step_without_a_recipe_is_one_user_error():
    with pytest.raises(UserError, match="no recipe for a 'int4' step"):
        P.build_plan(extra=[P.Variant("opt_dynamic_int4", P.Step("int4"), source="opt_dynamic")])


def test_the_selection_plan_adds_every_candidate_each_timed_and_measured_once():
    """``--select``'s plan: every PTQ calibration, mixed INT8 and ModelOpt as INT8 engines, the profile choices as
    engines of the same ONNX (no file of their own), and every accuracy-measured file variant timed as itself
    (a candidate timed on another variant's series would be chosen on someone else's latency) except the plugin
    graph."""
    plain, sel = P.build_plan(), P.build_plan(candidates=True, mixed_max_drop=0.3)
    extra = [v.name for v in sel if v.name not in plain]
    assert set(extra) == {"opt_dynamic_int8_mixed", "opt_dynamic_int8_modelopt", "opt_dynamic_fp16_opt1",
                          "opt_dynamic_fp16_wide"}, extra
    assert sel["opt_dynamic_int8_mixed"].make.get("max_drop") == 0.3
    for m in P.PTQ_METHODS:  # every calibration is measured in both plans; the candidates get engines
        assert plain["opt_dynamic_int8_" + m].accuracy and sel["opt_dynamic_int8_" + m].engine.int8
    for name in ("opt_dynamic_fp16_opt1", "opt_dynamic_fp16_wide"):
        v = sel[name]
        assert v.is_engine_only and v not in sel.files() and not v.accuracy and not v.cpu_series
        assert v.engine.onnx == "opt_dynamic" and v.engine.fp16
        lo, opt, hi = v.engine.profiles[0]
        assert lo <= opt <= hi
    assert {sel[n].engine.profiles for n in ("opt_dynamic_fp16_opt1", "opt_dynamic_fp16_wide")} == {
        p for _, p in P.PROFILE_CHOICES}
    for v in sel.files():  # (the plugin graph runs in ONNX Runtime through reference ops: not a latency)
        if v.static_batch:  # a static export: measured at its batch, timed on its tag's static series there
            assert v.accuracy and v.cpu_series == v.name.split("_")[0] + "_static", v.name
        elif v.accuracy:
            assert v.cpu_series == (None if v.engine and v.engine.plugin else v.name), v.name
    assert not any(v.accuracy for v in plain if v.static_batch)
    # the stages of the new steps are named by their kind, once each
    stages = [s for s, _ in sel.stages()]
    assert "int8 mixed entropy" in stages and "int8 modelopt entropy" in stages and "int8 ptq percentile" in stages
    assert len(stages) == len(set(stages))
