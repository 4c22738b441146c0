"""The plugin-node contract, defined once.

Graph surgery (``surgery.py``) writes nodes that follow these specs, the ONNX Runtime reference ops
(``reference_ops.py``) implement them, and the C++ plugin creators in ``plugin/`` read exactly these attribute
names (their ``getFieldNames()``).  ``tests/test_plugin_build.py`` checks that the C++ sources agree with this file.

Names
    TensorRT 10.14+ imports the ONNX ``Attention`` operator (opset 23) with a built-in importer chosen by op_type
    alone, and ONNX/TensorRT may grow a ``LayerNorm`` of their own: a plugin node named like a real op is taken
    by that op's importer (TensorRT-RTX 1.7: ``Attention (parseNode): INVALID_NODE``).  The plugins therefore
    carry names no ONNX or TensorRT op uses (``MVT_LayerNorm``, ``MVT_Attention``) and live in their own plugin
    namespace (``mobilevit_trt``), which every node names in its ``plugin_namespace`` attribute (read by the
    parser's fallback plugin importer since TensorRT 8.x) and the C++ library registers its creators under.

MVT_LayerNorm
    inputs   x      [..., C]  float32 or float16 (any rank >= 2; normalised over the last dimension)
             gamma  [C]       float32 (always, also when x is float16)
             beta   [C]       float32
    outputs  y      same shape and dtype as x
    attrs    epsilon (float)
    math     y = (x - mean(x)) / sqrt(var(x) + epsilon) * gamma + beta, statistics in float32

MVT_Attention
    inputs   either one packed tensor  qkv [..., N, 3*H*D]  (q | k | v concatenated on the last axis, each
             laid out as H heads of D: the output of the single QKV projection)
             or three tensors q, k, v   [..., N, H*D]
             float32 or float16, all inputs of one dtype; rank >= 3, leading dims are batch dims
    outputs  out [..., N, H*D], same dtype as the inputs
    attrs    scale (float), num_heads (int, default 1)
    math     per batch index and head: softmax(q @ k^T * scale, axis=-1) @ v, softmax in float32
"""
from collections import OrderedDict

PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "mobilevit_trt"

# attribute name -> (ONNX attribute type, TensorRT PluginField type, default or None when required)
LAYERNORM_OP = "MVT_LayerNorm"
LAYERNORM_ATTRS = OrderedDict([
    ("epsilon", ("FLOAT", "FLOAT32", None)),
])

ATTENTION_OP = "MVT_Attention"
ATTENTION_ATTRS = OrderedDict([
    ("scale", ("FLOAT", "FLOAT32", None)),
    ("num_heads", ("INT", "INT32", 1)),
])

#: plugin names of toolkit versions before the rename (recognised only to say "fuse again")
LEGACY_OPS = ("LayerNorm", "Attention")

SPECS = OrderedDict([
    (LAYERNORM_OP, LAYERNORM_ATTRS),
    (ATTENTION_OP, ATTENTION_ATTRS),
])

# Attributes every plugin node carries for the TensorRT ONNX parser (not plugin fields).
PARSER_ATTRS = OrderedDict([
    ("plugin_version", PLUGIN_VERSION),
    ("plugin_namespace", PLUGIN_NAMESPACE),
])


def node_attrs(op_type, **values):
    """Return the full, ordered attribute dict for a plugin node of ``op_type`` (validates names and types)."""
    if op_type not in SPECS:
        raise ValueError("unknown plugin op %r" % op_type)
    spec = SPECS[op_type]
    unknown = set(values) - set(spec)
    if unknown:
        raise ValueError("%s has no attribute(s) %s" % (op_type, ", ".join(sorted(unknown))))
    attrs = OrderedDict()
    for name, (onnx_type, _, default) in spec.items():
        value = values.get(name, default)
        if value is None:
            raise ValueError("%s needs attribute %r" % (op_type, name))
        attrs[name] = float(value) if onnx_type == "FLOAT" else int(value)
    attrs.update(PARSER_ATTRS)
    return attrs
