"""Each fusion target's graph in real TensorRT: TensorRT-RTX's ONNX parser and (CPU-only, ahead-of-time) builder.

* ``native``: the ONNX ``Attention`` nodes become IAttention (``ATTENTION_INPUT`` / ``ATTENTION_OUTPUT`` layers), the
  ``LayerNormalization`` nodes ``NORMALIZATION`` layers; no plugin, no Softmax layer.  The engine builds in FP16;
  in FP32 only after :func:`trt_compat.mark_attention_decomposable` (RTX has no dedicated FP32 attention kernel:
  without it the build fails with "Attention operation was not supported by a dedicated kernel").
* ``fusable``: MatMul / Softmax layers (2 batched MatMuls per attention, 9 Softmax), NORMALIZATION layers, no
  plugin; builds in FP16.  ``none``: the export as it is (decomposed LayerNorm); builds in FP16.
Builds use MobileViT-XXS (seconds each on a CPU); the parse checks cover both model families.
"""
import collections

import pytest

trt = pytest.importorskip("tensorrt_rtx")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")
pytest.importorskip("torch")

from mobilevit_trt import trt_compat  # noqa: E402
from mobilevit_trt.precision import convert_fp16  # noqa: E402
from tests.test_surgery_targets import COUNTS, IMG, STATIC_BATCH, exports  # noqa: E402,F401 (fixture)

API = trt_compat.load(prefer="tensorrt_rtx")
PLUGIN_TYPES = ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3")
PARSE_VARIANTS = [("original", "xxs", False), ("official", "xxs", True)]


def _logger():
    return trt.Logger(trt.Logger.ERROR)


def parse(path):
    """(builder, network, layer type counts, parser); the parser's errors fail the test.  The parser is returned
    because the network must not outlive it."""
    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(path)
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    assert ok and not errors, errors
    types = collections.Counter(str(network.get_layer(i).type).rsplit(".", 1)[-1] for i in range(network.num_layers))
    return builder, network, types, parser


def build(builder, network):
    config = builder.create_builder_config()
    inp = network.get_input(0)
    if inp.shape[0] == -1:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, 3, IMG, IMG), (STATIC_BATCH, 3, IMG, IMG), (4, 3, IMG, IMG))
        config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config)


@pytest.mark.parametrize("variant", PARSE_VARIANTS, ids=lambda v: "%s-%s-%s" % (v[0], v[1], "dyn" if v[2] else "b2"))
def test_rtx_parses_every_target(variant, exports):
    v = exports(variant)
    n_ln, n_att = COUNTS[variant[0]]
    for t in ("native", "fusable", "none"):
        _b, _n, types, _p = parse(v["out"][t][0])
        assert not any(types[p] for p in PLUGIN_TYPES), (t, types)
        if t == "native":
            assert types["ATTENTION_INPUT"] == n_att and types["ATTENTION_OUTPUT"] == n_att
            assert types["SOFTMAX"] == 0 and types["NORMALIZATION"] == n_ln
        else:
            assert types["ATTENTION_INPUT"] == 0 and types["SOFTMAX"] == n_att
            assert types["NORMALIZATION"] == (n_ln if t == "fusable" else 0)
            assert types["MATRIX_MULTIPLY"] >= 2 * n_att


def test_rtx_builds_native_fp16_and_fp32_decomposable(exports, tmp_path):
    v = exports(("official", "xxs", True))
    path = v["out"]["native"][0]
    p16 = str(tmp_path / "native_fp16.onnx")
    convert_fp16(path, p16)
    builder, network, types, _p = parse(p16)
    assert types["ATTENTION_INPUT"] == 9
    assert build(builder, network) is not None

    builder, network, _t, _p = parse(path)
    assert build(builder, network) is None          # FP32: no dedicated kernel, not decomposable
    builder, network, _t, _p = parse(path)
    assert trt_compat.mark_attention_decomposable(API, network) == 9
    assert build(builder, network) is not None


@pytest.mark.parametrize("target", ["fusable", "none"])
def test_rtx_builds_fp16(target, exports, tmp_path):
    v = exports(("official", "xxs", True))
    p16 = str(tmp_path / ("%s_fp16.onnx" % target))
    convert_fp16(v["out"][target][0], p16)
    builder, network, types, _p = parse(p16)
    assert trt_compat.mark_attention_decomposable(API, network) == 0
    assert build(builder, network) is not None
