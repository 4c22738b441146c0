"""precision.py for real, in ONNX Runtime on the CPU: FP16 conversion and Q/DQ INT8 of MobileViT-XXS.

Tolerances (stated here, checked below), on 16 structured random inputs against the FP32 ONNX of a randomly
initialised MobileViT-XXS (its logits span about 0.45):
  FP16:  top-1 agreement >= 15/16 and max |logit error| <= 1% of the FP32 logit range (seen: 0.08%)
  Q/DQ:  top-1 agreement >= 14/16 and max |logit error| <= 15% of the FP32 logit range (seen: 5-6%)
"""
import collections

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from mobilevit_trt import plugin_spec, precision  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402
from mobilevit_trt.verify import compare_files, verdict_line  # noqa: E402

FP16_RANGE_FRACTION = 0.01
FP16_MIN_TOP1 = 15 / 16
QDQ_RANGE_FRACTION = 0.15
QDQ_MIN_TOP1 = 14 / 16


@pytest.fixture(scope="module")
def xxs_onnx(tmp_path_factory):
    from MobileViT_Pytorch.checkpoint import load_model
    from mobilevit_trt.export import export_onnx
    model, _ = load_model(None, arch="xxs", quiet=True)
    path = str(tmp_path_factory.mktemp("prec") / "xxs_b1.onnx")
    export_onnx(model, path, batch=1, opset=13, log=lambda *a: None)
    return path


@pytest.fixture(scope="module")
def check_inputs():
    return precision.structured_inputs(16, seed=1)


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    t = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    t.update({i.name: i.data_type for i in g.initializer})
    return t


def test_structured_inputs_are_normalised_images():
    x = precision.structured_inputs(3, img_size=64, seed=0)
    assert x.shape == (3, 3, 64, 64) and x.dtype == np.float32
    assert np.allclose(x.mean(axis=(2, 3)), 0, atol=1e-4) and np.allclose(x.std(axis=(2, 3)), 1, atol=1e-3)
    # smooth: neighbouring pixels correlate (pure noise would not)
    assert np.corrcoef(x[:, :, :, 1:].ravel(), x[:, :, :, :-1].ravel())[0, 1] > 0.5


def test_fp16_conversion_agrees_with_fp32(xxs_onnx, check_inputs, tmp_path):
    out = str(tmp_path / "fp16.onnx")
    rep = precision.convert_fp16(xxs_onnx, out)
    assert rep["layernorm_chains_fp32"] == 18  # XXS: 9 transformer layers x 2 LayerNorms
    assert rep["fp32_nodes"]["Softmax"] == 9
    m = onnx.load(out)
    T = onnx.TensorProto
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [T.FLOAT]
    assert [o.type.tensor_type.elem_type for o in m.graph.output] == [T.FLOAT]
    types = _types(m)
    kinds = collections.Counter(types[i.name] for i in m.graph.initializer if i.data_type in (T.FLOAT, T.FLOAT16))
    assert kinds[T.FLOAT16] > 100
    for n in m.graph.node:
        if n.op_type in ("Softmax", "Sqrt", "Pow"):
            assert types[n.input[0]] == T.FLOAT, n.name
        if n.op_type == "Conv":
            assert types[n.input[1]] == T.FLOAT16, n.name
    stats = compare_files(out, xxs_onnx, check_inputs)
    span = stats["ref_range"][1] - stats["ref_range"][0]
    print(verdict_line("FP16 ONNX", stats, "FP32 ONNX"))
    assert stats["top1_agreement"] >= FP16_MIN_TOP1
    assert stats["max_abs"] <= FP16_RANGE_FRACTION * span, (stats, span)


def test_fp16_keeps_plugin_gamma_beta_layernorm_and_softmax_fp32(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.random.default_rng(0).random((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(8, np.float32), "beta"),
             numpy_helper.from_array(np.ones(8, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(8, np.float32), "bias")]
    nodes = [helper.make_node("MatMul", ["input", "W"], ["h"]),
             helper.make_node(plugin_spec.LAYERNORM_OP, ["h", "gamma", "beta"], ["ln"],
                              **plugin_spec.node_attrs(plugin_spec.LAYERNORM_OP, epsilon=1e-5)),
             helper.make_node("Softmax", ["ln"], ["sm"], axis=-1),
             helper.make_node("LayerNormalization", ["sm", "scale", "bias"], ["class"], axis=-1)]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, [1, 4, 8])], inits,
                              value_info=[helper.make_tensor_value_info("ln", TensorProto.FLOAT, [1, 4, 8])])
    src = str(tmp_path / "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    out = str(tmp_path / "tiny16.onnx")
    precision.convert_fp16(src, out)
    m = onnx.load(out)
    dt = {i.name: i.data_type for i in m.graph.initializer}
    assert dt == {"W": TensorProto.FLOAT16, "gamma": TensorProto.FLOAT, "beta": TensorProto.FLOAT,
                  "scale": TensorProto.FLOAT, "bias": TensorProto.FLOAT}
    by_op = {n.op_type: n for n in m.graph.node if n.op_type != "Cast"}
    casts = {n.output[0]: n for n in m.graph.node if n.op_type == "Cast"}
    assert by_op[plugin_spec.LAYERNORM_OP].input[0] == "h"  # the plugin runs on float16 x ...
    assert list(by_op[plugin_spec.LAYERNORM_OP].input[1:]) == ["gamma", "beta"]  # ... with float32 gamma/beta
    assert casts[by_op["Softmax"].input[0]].attribute[0].i == TensorProto.FLOAT  # Softmax in float32
    assert [vi.type.tensor_type.elem_type for vi in m.graph.value_info if vi.name == "ln"] == [TensorProto.FLOAT16]


def test_fp16_refuses_control_flow(tmp_path):
    from onnx import TensorProto, helper
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["y1"])], "then", [],
                             [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    src = str(tmp_path / "if.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    with pytest.raises(UserError, match="control-flow"):
        precision.convert_fp16(src, str(tmp_path / "if16.onnx"))


def test_fp16_of_a_graph_declaring_its_constants(tmp_path):
    """Exporters' and ONNX Runtime's quantizer's value_info declares float Constant outputs; the conversion moves
    those Constants to initializers and makes them float16: their float32 declarations must not survive (seen:
    ``--fp16 --int8`` on every external export ended in 'Inferred elem type differs ... (10) vs (1)')."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    scale = helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array(0.5, np.float32)))
    nodes = [scale, helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert "s" in {vi.name for vi in model.graph.value_info}  # the declaration the conversion must follow
    src, dst = str(tmp_path / "c.onnx"), str(tmp_path / "c16.onnx")
    onnx.save(model, src)
    precision.convert_fp16(src, dst)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    import onnxruntime as ort
    want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * np.abs(want).max())  # float16: ~3 digits


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_qdq_graph_per_channel_no_int32_bias_and_accuracy(xxs_onnx, check_inputs, tmp_path, method):
    out = str(tmp_path / ("qdq_%s.onnx" % method))
    calib = precision.structured_inputs(8, seed=2)
    bins = 128 if method == "minmax" else 256  # keep ORT's quadratic entropy search short in CI
    rep = precision.quantize_qdq(xxs_onnx, out, calib, method=method, entropy_bins=bins)
    s = rep["qdq"]
    assert s["int32_dq"] == 0
    # XXS has 35 Conv + 19 Gemm (output channels on axis 0) and 18 MatMul with constant weights (axis 1)
    assert s["weight_dq_per_channel"] == 72 and s["weight_dq_per_tensor"] == 0
    assert s["per_channel_axes"] == {"0": 54, "1": 18}
    assert s["zero_point_nonzero"] == 0
    m = onnx.load(out)
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].data_type == onnx.TensorProto.INT8
            assert any(a.name == "axis" for a in n.attribute), n.name
    for n in m.graph.node:  # biases stay float (TensorRT rejects an int32 bias DequantizeLinear)
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            assert inits[n.input[2]].data_type == onnx.TensorProto.FLOAT
    stats = compare_files(out, xxs_onnx, check_inputs)
    span = stats["ref_range"][1] - stats["ref_range"][0]
    print(verdict_line("Q/DQ (%s)" % method, stats, "FP32 ONNX"))
    assert stats["top1_agreement"] >= QDQ_MIN_TOP1
    assert stats["max_abs"] <= QDQ_RANGE_FRACTION * span, (stats, span)


def test_percentile_range_is_the_percentile_of_abs_activation(xxs_onnx, tmp_path):
    """calibrate_ranges('percentile') of the graph input against NumPy's percentile of |x| (2048-bin histogram:
    within two bin widths; ONNX Runtime clamps each end of (-t, t) to the signed min / max of x); MinMax's range of the same tensor is [min x, max x],
    and percentile clips below it."""
    from onnxruntime.quantization.calibrate import load_tensors_data
    x = precision.structured_inputs(4, seed=5)
    got = {}
    for method in ("percentile", "minmax"):
        work = tmp_path / method
        work.mkdir()
        cache, _ = precision.calibrate_ranges(xxs_onnx, x, method, str(work))
        got[method] = [float(np.ravel(v)[0]) for v in load_tensors_data(cache)["input"].range_value]
    lo, hi = got["percentile"]
    absx = np.abs(x)
    want = np.percentile(absx, precision.PERCENTILE)
    t = max(-lo, hi)
    assert abs(t - want) <= 2 * absx.max() / 2048, (lo, hi, want)
    assert lo == pytest.approx(max(-t, float(x.min()))) and hi == pytest.approx(min(t, float(x.max())))
    assert got["minmax"] == pytest.approx([float(x.min()), float(x.max())], rel=1e-6) and t < absx.max()


def test_qdq_placement_inputs_only_by_default(xxs_onnx, tmp_path):
    """TensorRT's placement: every activation Q/DQ pair feeds a quantized Conv/MatMul/Gemm (none sits only
    before a SiLU, an Add or a Softmax, where it would stop a fusion) unless output_qdq, which adds such pairs."""
    import collections
    calib = precision.structured_inputs(2, seed=6)
    counts = {}
    for output_qdq in (False, True):
        out = str(tmp_path / ("q%d.onnx" % output_qdq))
        precision.quantize_qdq(xxs_onnx, out, calib, method="minmax", output_qdq=output_qdq)
        m = onnx.load(out)
        consumers = collections.defaultdict(list)
        for n in m.graph.node:
            for x in n.input:
                consumers[x].append(n)
        dq_of = {n.input[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
        counts[output_qdq] = sum(
            1 for q in m.graph.node if q.op_type == "QuantizeLinear"
            and not any(c.op_type in precision.QDQ_OP_TYPES for c in consumers[dq_of[q.output[0]].output[0]]))
    assert counts[False] == 0 and counts[True] > 0, counts


def test_qdq_refuses_an_already_quantized_model(tmp_path, xxs_onnx):
    out = str(tmp_path / "q.onnx")
    precision.quantize_qdq(xxs_onnx, out, precision.structured_inputs(2, seed=3), method="minmax")
    with pytest.raises(UserError, match="already carries Q/DQ"):
        precision.quantize_qdq(out, str(tmp_path / "qq.onnx"), precision.structured_inputs(2, seed=3))


def test_compare_feeds_static_batches_in_chunks(xxs_onnx):
    from mobilevit_trt.backends import OnnxRuntimeBackend
    from mobilevit_trt.verify import Tolerance, run_all
    x = precision.structured_inputs(3, seed=4)
    a = run_all(OnnxRuntimeBackend(xxs_onnx), x)  # static batch 1 model, 3 inputs
    assert a.shape == (3, 1000)
    stats = compare_files(xxs_onnx, xxs_onnx, x, Tolerance(atol=0.0, min_top1=1.0))
    assert stats["top1_agreement"] == 1.0 and stats["max_abs"] == 0.0 and stats["passed"] is True
