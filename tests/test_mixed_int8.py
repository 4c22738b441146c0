"""Sensitivity-guided mixed INT8 (mobilevit_trt.mixed_int8, benchmark/mixed_int8.py): the greedy search on recorded
sensitivities, MAC counting against hand-computed values, and real quantize_static runs on a tiny graph."""
import json
import os

import numpy as np
import pytest

from mobilevit_trt import mixed_int8 as mi
from mobilevit_trt.errors import UserError
from tests.helpers import run_script


# ------------------------------------------------------------------------------------- the greedy search (pure)
def _measure_from(needed, log):
    """A measuring callback: the drop is 1 point per group of ``needed`` still quantized (0.1 per other group)."""
    def measure(excluded):
        log.append(tuple(excluded))
        drop = sum(1.0 for g in needed if g not in excluded) + 0.1 * sum(1 for g in "abcdef" if g not in excluded
                                                                      and g not in needed)
        return {"drop": drop, "agreement": 1.0 - drop / 100.0}
    return measure


def test_greedy_stops_at_the_shortest_prefix_that_meets_the_budget():
    log = []
    r = mi.greedy_exclusion(list("abcdef"), _measure_from("ab", log), mi.budget(max_drop=0.45), prune=False)
    # nothing: 2 + 0.4; a: 1.4; a,b: 0.4 <= 0.45 -> stop; c..f never measured
    assert r["met"] and r["excluded"] == ["a", "b"]
    assert log == [(), ("a",), ("a", "b")]
    assert r["result"]["drop"] == pytest.approx(0.4)
    assert [h["holds"] for h in r["history"]] == [False, False, True]


def test_greedy_nothing_excluded_when_the_budget_holds_already():
    log = []
    r = mi.greedy_exclusion(list("abc"), _measure_from("", log), mi.budget(max_drop=1.0))
    assert r["met"] and r["excluded"] == [] and log == [()]


def test_a_lazy_ranking_is_made_only_when_all_int8_is_over_budget():
    calls = []

    def ranking():
        calls.append(1)
        return list("abc")
    log = []
    r = mi.greedy_exclusion(ranking, _measure_from("", log), mi.budget(max_drop=1.0))
    assert r["met"] and r["excluded"] == [] and calls == [] and log == [()]
    log = []
    r = mi.greedy_exclusion(ranking, _measure_from("ab", log), mi.budget(max_drop=0.45), prune=False)
    assert r["excluded"] == ["a", "b"] and calls == [1] and log == [(), ("a",), ("a", "b")]


def test_prune_requantizes_groups_the_budget_does_not_need():
    # the ranking is wrong: only 'c' matters; forward takes a, b, c, pruning gives a and b back to INT8
    log = []
    r = mi.greedy_exclusion(list("abcdef"), _measure_from("c", log), mi.budget(max_drop=0.55), prune=True)
    assert r["met"] and r["excluded"] == ["c"]
    assert log[:4] == [(), ("a",), ("a", "b"), ("a", "b", "c")]
    # least sensitive first: without c = (a, b), measured going forward (not again), fails; without b holds;
    # then without a holds
    assert log[4:] == [("a", "c"), ("c",)]
    assert r["result"]["drop"] == pytest.approx(0.5)
    assert [h["step"] for h in r["history"]] == ["forward"] * 4 + ["prune"] * 2
    r = mi.greedy_exclusion(list("abcdef"), _measure_from("c", []), mi.budget(max_drop=0.55), prune=False)
    assert r["excluded"] == ["a", "b", "c"]


def test_budget_that_cannot_be_met():
    log = []
    r = mi.greedy_exclusion(list("abc"), lambda ex: {"drop": 5.0, "agreement": 0.5}, mi.budget(max_drop=0.2))
    assert not r["met"] and r["excluded"] == ["a", "b", "c"]
    r = mi.greedy_exclusion(list("abc"), _measure_from("abc", log), mi.budget(max_drop=0.2), max_groups=2)
    assert not r["met"] and r["excluded"] == ["a", "b"] and log[-1] == ("a", "b")


def test_budget_combines_drop_and_agreement():
    holds = mi.budget(max_drop=0.2, min_agreement=0.99)
    assert holds({"drop": 0.2, "agreement": 0.99})
    assert not holds({"drop": 0.0, "agreement": 0.98})
    assert not holds({"drop": 0.3, "agreement": 1.0})
    assert mi.budget(min_agreement=0.9)({"drop": 50.0, "agreement": 0.95})
    with pytest.raises(UserError):
        mi.budget()


def test_scores_and_ranking_with_ties():
    base = {"mean_abs": 0.5, "max_abs": 3.0, "top1_agreement": 0.90}
    per = {"a": {"mean_abs": 0.4, "max_abs": 2.0, "top1_agreement": 0.95},
           "b": {"mean_abs": 0.2, "max_abs": 2.5, "top1_agreement": 0.90},
           "c": {"mean_abs": 0.4, "max_abs": 3.5, "top1_agreement": 0.99},
           "d": {"mean_abs": 0.4, "max_abs": 1.0, "top1_agreement": 0.99}}
    s = mi.sensitivity_scores(base, per, "mean_abs")
    assert s["b"] == pytest.approx(0.3) and s["a"] == pytest.approx(0.1)
    # a, c, d tie at 0.1: the cheapest first, then graph order
    assert mi.rank_groups(s, {"a": 10, "b": 1, "c": 5, "d": 5}) == ["b", "c", "d", "a"]
    assert mi.rank_groups(s) == ["b", "a", "c", "d"]
    agr = mi.sensitivity_scores(base, per, "top1_agreement")  # higher agreement is better: a gain is positive
    assert mi.rank_groups(agr)[:2] == ["c", "d"] and agr["b"] == pytest.approx(0.0)
    assert mi.sensitivity_scores(base, per, "max_abs")["d"] == pytest.approx(2.0)
    with pytest.raises(UserError):
        mi.sensitivity_scores(base, per, "kl")


def test_block_grouping():
    names = ["/stem/conv/Conv", "/stages/stages.1/stages.1.0/conv1_1x1/conv/Conv",
             "/stages/stages.1/stages.1.0/conv2_kxk/conv/Conv",
             "/stages/stages.2/stages.2.1/transformer/transformer.0/attn/qkv/MatMul",
             "/stages/stages.2/stages.2.1/transformer/transformer.0/attn/MatMul",
             "/stages/stages.2/stages.2.1/transformer/transformer.0/mlp/fc1/MatMul",
             "/stages/stages.2/stages.2.1/conv_proj/conv/Conv", "/head/fc/Gemm", "gemm0"]
    g = mi.group_nodes(names, "block")
    assert list(g) == ["/stem/conv", "/stages/stages.1/stages.1.0",
                       "/stages/stages.2/stages.2.1/transformer/transformer.0/attn",
                       "/stages/stages.2/stages.2.1/transformer/transformer.0/mlp", "/stages/stages.2/stages.2.1",
                       "/head/fc", "gemm0"]
    assert g["/stages/stages.1/stages.1.0"] == names[1:3]
    assert list(mi.group_nodes(names, "node")) == names


# ---------------------------------------------------------------------------------------------- a tiny graph
def tiny_model(batch="N", img=16):
    """input [N,3,16,16] -> conv0 3x3 (8) -> Relu -> {conv1 1x1, conv2 1x1} (conv1 and conv2 share their input)
    -> Add -> depthwise 3x3 (8 groups) -> Reshape [N,8,256] -> Transpose -> mm0 (x W[8,8]) -> mm1 (activation x
    activation: Transpose(m0) x m0 -> [N,8,8]) -> Flatten -> Gemm (transB, 10 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(
            np.float32), name)
    inits = [w("W0", 8, 3, 3, 3), w("W1", 8, 8, 1, 1), w("W2", 8, 8, 1, 1), w("W3", 8, 1, 3, 3), w("Wm", 8, 8),
             w("Wg", 10, 64), numpy_helper.from_array(np.zeros(10, np.float32), "bg"),
             numpy_helper.from_array(np.array([0, 8, img * img], np.int64), "shape")]
    n = helper.make_node
    nodes = [n("Conv", ["input", "W0"], ["t0"], name="conv0", pads=[1, 1, 1, 1]),
             n("Relu", ["t0"], ["a0"], name="relu0"),
             n("Conv", ["a0", "W1"], ["t1"], name="conv1"),
             n("Conv", ["a0", "W2"], ["t2"], name="conv2"),
             n("Add", ["t1", "t2"], ["s"], name="add"),
             n("Conv", ["s", "W3"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
             n("Reshape", ["d", "shape"], ["r"], name="reshape"),
             n("Transpose", ["r"], ["rt"], name="tr0", perm=[0, 2, 1]),
             n("MatMul", ["rt", "Wm"], ["m0"], name="mm0"),
             n("Transpose", ["m0"], ["m0t"], name="tr1", perm=[0, 2, 1]),
             n("MatMul", ["m0t", "m0"], ["m1"], name="mm1"),
             n("Flatten", ["m1"], ["f"], name="flatten"),
             n("Gemm", ["f", "Wg", "bg"], ["class"], name="gemm", transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         [batch, 3, img, img])],
                          [helper.make_tensor_value_info("class", TensorProto.FLOAT, [batch, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


#: MACs of tiny_model at batch 1, by hand
TINY_MACS = {"conv0": 8 * 16 * 16 * 3 * 3 * 3,   # C_out * H * W * C_in * k * k
             "conv1": 8 * 16 * 16 * 8, "conv2": 8 * 16 * 16 * 8,
             "dw": 8 * 16 * 16 * 1 * 3 * 3,      # groups = C: one input channel per output
             "mm0": 256 * 8 * 8,                 # [1,256,8] x [8,8]
             "mm1": 8 * 8 * 256,                 # [1,8,256] x [1,256,8]
             "gemm": 10 * 64}


def test_macs_by_hand():
    m = tiny_model()
    assert dict(mi.node_macs(m)) == TINY_MACS
    assert list(mi.node_macs(m)) == ["conv0", "conv1", "conv2", "dw", "mm0", "mm1", "gemm"]
    assert dict(mi.node_macs(m, batch=2)) == {k: 2 * v for k, v in TINY_MACS.items()}
    assert dict(mi.node_macs(tiny_model(batch=3))) == {k: 3 * v for k, v in TINY_MACS.items()}  # static batch
    assert dict(mi.node_macs(m, op_types=("MatMul",))) == {"mm0": 16384, "mm1": 16384}
    total = float(sum(TINY_MACS.values()))
    assert mi.int8_fraction(TINY_MACS, ["conv0", "gemm"]) == pytest.approx(1 - (55296 + 640) / total)
    assert mi.int8_fraction(TINY_MACS, []) == 1.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import onnx
    d = tmp_path_factory.mktemp("mixed")
    path = str(d / "tiny.onnx")
    onnx.save(tiny_model(), path)
    from mobilevit_trt.precision import structured_inputs
    return path, structured_inputs(16, img_size=16, seed=1)


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_excluded_nodes_have_no_qdq_and_the_others_do(tiny, tmp_path, method):
    import onnx
    path, x = tiny
    with mi.MixedQuantizer(path, x, method) as mq:
        full = mq.build([], str(tmp_path / "full.onnx"))
        rep = mq.build(["conv1", "mm1"], str(tmp_path / "mixed.onnx"))
    q = onnx.load(rep["path"])
    onnx.checker.check_model(q)
    inputs = mi.qdq_inputs(q)
    assert inputs["conv1"] == [False, False] and inputs["mm1"] == [False, False]
    for name in ("conv0", "conv2", "dw", "mm0"):
        assert inputs[name] == [True, True], (name, inputs[name])
    assert inputs["gemm"] == [True, True, False]  # the bias stays float (QuantizeBias False)
    # conv1 shares its input with conv2: ONNX Runtime fed it conv2's DequantizeLinear; it reads the float tensor
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    assert list(conv1.input) == ["a0", "W1"] and rep["inputs_rewired"] == 1
    assert rep["qdq"]["int32_dq"] == 0 and rep["qdq"]["zero_point_nonzero"] == 0
    assert full["qdq"]["weight_dq_per_channel"] == 6 and rep["qdq"]["weight_dq_per_channel"] == 5  # mm1: no weight
    # TensorRT's placement: Q/DQ on the inputs only, none on a quantized node's output (conv0 -> Relu directly)
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    assert not [n.name for n in q.graph.node if n.op_type == "QuantizeLinear"
                and producer.get(n.input[0]) in ("Conv", "MatMul", "Gemm")]
    assert producer["class"] == "Gemm" and producer["t0"] == "Conv"
    assert rep["int8_mac_fraction"] == pytest.approx(mi.int8_fraction(TINY_MACS, ["conv1", "mm1"]))
    assert all(all(v[:2]) for v in mi.qdq_inputs(onnx.load(full["path"])).values())
    with pytest.raises(UserError, match="not a Conv/MatMul/Gemm node"):
        mq.check_names(["relu0"])


def test_full_build_matches_precision_quantize_qdq(tiny, tmp_path):
    """Calibrating once and quantizing from the cache gives precision.quantize_qdq's graph (same ranges), in both
    Q/DQ placements; the placements differ."""
    import onnx

    from mobilevit_trt.backends import OnnxRuntimeBackend
    from mobilevit_trt.precision import quantize_qdq
    path, x = tiny
    outs = {}
    for output_qdq in (False, True):
        ref, full = str(tmp_path / ("ref%d.onnx" % output_qdq)), str(tmp_path / ("full%d.onnx" % output_qdq))
        quantize_qdq(path, ref, x, method="minmax", output_qdq=output_qdq)
        with mi.MixedQuantizer(path, x, "minmax", output_qdq=output_qdq) as mq:
            mq.build([], full)
        with OnnxRuntimeBackend(ref) as a, OnnxRuntimeBackend(full) as b:
            outs[output_qdq] = a.infer(x)
            np.testing.assert_array_equal(outs[output_qdq], b.infer(x))
        n_q = sum(n.op_type == "QuantizeLinear" for n in onnx.load(ref).graph.node)
        outs["q%d" % output_qdq] = n_q
    assert outs["q1"] > outs["q0"]


def test_sensitivity_and_greedy_end_to_end(tiny):
    from mobilevit_trt.backends import OnnxRuntimeBackend
    from mobilevit_trt.verify import run_all
    path, x = tiny
    with OnnxRuntimeBackend(path) as fp32:
        ref = run_all(fp32, x)
    with mi.MixedQuantizer(path, x, "minmax") as mq:
        groups = mi.group_nodes(mq.nodes)
        base, per = mi.measure_sensitivity(mq, groups, ref)
        assert list(per) == list(groups) and base["mean_abs"] > 0
        assert all(r["mean_abs"] >= 0 for r in per.values())
        ranking = mi.rank_groups(mi.sensitivity_scores(base, per), mq.macs)
        target = 0.5 * base["mean_abs"]

        def measure(excluded):
            with mq.backend([n for g in excluded for n in groups[g]]) as b:
                return mi.logit_errors(b, x, ref)
        r = mi.greedy_exclusion(ranking, measure, lambda res: res["mean_abs"] <= target)
    assert r["met"] and 0 < len(r["excluded"]) < len(groups)
    assert r["result"]["mean_abs"] <= target
    assert r["excluded"] == [g for g in ranking if g in r["excluded"]]


# ------------------------------------------------------------------------------------------------ the script
def test_script_end_to_end_on_a_tiny_labelled_set(tiny, tmp_path):
    import onnx
    from PIL import Image

    from mobilevit_trt.preprocess import Preprocess, write_onnx_metadata
    path, x = tiny
    m = onnx.load(path)
    write_onnx_metadata(m, Preprocess.original(16))
    model = str(tmp_path / "tiny_pp.onnx")
    onnx.save(m, model)
    rng = np.random.default_rng(0)
    for c in range(2):
        os.makedirs(str(tmp_path / "val" / str(c)))
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                str(tmp_path / "val" / str(c) / ("%d.png" % i)))
    np.savez(str(tmp_path / "calib.npz"), input=x)
    r = run_script(["benchmark/mixed_int8.py", "--onnx", model, "--calib", str(tmp_path / "calib.npz"),
                    "--val", str(tmp_path / "val"), "--method", "minmax", "--min-agreement", "1.0",
                    "--out", str(tmp_path / "out")], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[7/7] gemm float" in r.stdout and "| rank |" in r.stdout
    res = json.load(open(str(tmp_path / "out" / "mixed_int8_minmax.json")))
    assert len(res["sensitivities"]) == 7 and res["result"]["met"]
    assert res["result"]["rows"][-1]["agreement"] == 1.0
    q = onnx.load(str(tmp_path / "out" / "mixed_minmax.onnx"))
    floats = set(res["result"]["float_nodes"])
    for name, dq in mi.qdq_inputs(q).items():
        assert any(dq[:2]) == (name not in floats), (name, dq)
    assert Preprocess.from_onnx(q) is not None  # the preprocessing record travels with the mixed graph


def test_script_user_errors(tmp_path):
    r = run_script(["benchmark/mixed_int8.py", "--onnx", str(tmp_path / "missing.onnx")], timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "missing.onnx" in lines[0]
