"""Fusion targets: one graph rewrite, :func:`fuse`, for every TensorRT the toolkit builds with.

The LayerNorm and attention matchers (:mod:`.layernorm`, :mod:`.attention`) find the same subgraphs for every
target; what is written in their place depends on the target:

``plugin``
    The toolkit's plugin nodes ``MVT_LayerNorm`` / ``MVT_Attention`` (:func:`.driver.add_plugins`, unchanged;
    opset unchanged).  For TensorRT 8.2-8.5, which have neither a LayerNormalization importer nor MHA fusion.
``native``
    ``LayerNormalization`` (axis -1) and the ONNX ``Attention`` operator (opset 23, default domain), the model's
    opset raised to 23 with ``onnx.version_converter`` (every other node re-written for opset 23: ReduceMean /
    Squeeze / Unsqueeze / Split / Pad / Resize adapters; ``onnx.checker`` full check and ONNX Runtime confirm it)
    and the IR version raised to the one opset 23 needs.  For TensorRT >= 10.14, 11.x and TensorRT-RTX.

    How the heads are laid out follows TensorRT's ONNX importer (onnx-tensorrt ``onnxOpImporters.cpp``,
    ``DEFINE_BUILTIN_OP_IMPORTER(Attention)``, and ``AttentionHelpers.cpp``, github.com/onnx/onnx-tensorrt, 10.14+):
    q, k, v must have the same rank; rank 4 is taken as ``[B, H, S, D]`` as is (IAttention's ``kPADDED_BHND``);
    rank 3 ``[B, S, H*D]`` is reshaped by the importer to ``[B, S, H, D]`` and transposed to ``[B, H, S, D]``
    using the ``q_num_heads`` / ``kv_num_heads`` attributes (required then), i.e. the head index is the major part
    of the hidden axis ("(h d)"), which is the head split every matched attention has (checked on index tensors
    by the matcher); the output is transposed back and reshaped to ``[B, S, H*D]``.  ``scale`` (attribute;
    default ``1/sqrt(D)``) is applied as ``sqrt(scale)`` on Q and on K.  One output only (``present_*`` and
    ``qk_matmul_output`` unsupported), no ``past_key`` / ``past_value``; ``is_causal`` and ``attn_mask`` are
    read.  The attribute ``TRT_decomposable`` (not in the ONNX schema, so ``onnx.checker`` rejects it) would
    set ``IAttention::setDecomposable``; :func:`mobilevit_trt.trt_compat.mark_attention_decomposable` does that on the parsed network
    instead.  ``native_layout="bhnd"`` (default) writes the head split / merge as Reshape + Transpose in the
    graph and gives the operator ``[B, H, N, D]``; ``"bsd"`` gives it ``[B, N, H*D]`` with ``q_num_heads`` /
    ``kv_num_heads`` and lets the importer do the same shuffles.
``fusable``
    ``LayerNormalization`` (opset raised to 17 where it is lower: TensorRT 8.6 imports it as
    ``INormalizationLayer``) and the attention rewritten into the one form TensorRT's MHA fusion (Myelin)
    recognises, per the developer guide's "Multi-Head Attention Fusion" section (docs.nvidia.com/deeplearning/
    tensorrt/developer-guide/index.html#mha-fusion, 8.6-10.x; now .../latest/inference-library/
    transformers-fused-attention.html):

    * the pattern is ``MatMul(Q, K^T) -> Softmax -> MatMul(., V)`` on 4-D ``[B, H, S, D]`` operands (here
      ``[B*P, H, N, D]``), with the Softmax over the last axis;
    * the attention scale must be applied to Q (or K, or sqrt of it to both) *before* the first batched MatMul,
      not to the scores -- here one ``Mul`` by the constant scale on Q (the guide: "for numeric stability and
      performance reasons");
    * fused kernels need: SM >= 75; the two BMMs' inputs in FP16, BF16 or INT8; for FP16/BF16 a head size
      ``16 <= D <= 256`` with ``D % 8 == 0``; for INT8 ``D`` in {16, 32, 64} and sequence lengths <= 512, and
      Q/DQ before the first BMM, after the Softmax and after the second BMM; TensorRT may still not fuse for
      performance reasons (the restriction list as quoted from the guide in NVIDIA/TensorRT#2981 and #4167).

    MobileViT's head dims 20 (XXS), 30 / 36 (XS) and 36 / 60 (S) break ``D % 8 == 0``: with ``pad_heads`` (the
    default) q, k and v are zero-padded to the next multiple of 8 (``Pad`` on the last axis before the head
    transpose; zeros add nothing to ``Q K^T`` and give zero output columns, removed by a ``Slice`` after the
    second MatMul; the scale stays ``1/sqrt(D)`` of the real D).  Exact; the cost is recorded per fusion
    (``head_dim_padded``, ``bmm_cost``: ``D'/D`` of both BMMs' FLOPs and of the q/k/v bytes, e.g. 1.2 for 20->24)
    and summed in the report.  Padding the projection weights instead would avoid the Pad/Slice copies but
    needs the projection to be a known constant MatMul/Gemm; not done.
``none``
    The graph as it is (cleanup + toposort only, opset unchanged): TensorRT's own pattern matching on the
    export, or the baseline for measuring the others.

:func:`target_for` chooses a target from the TensorRT flavour and version (``auto``); :func:`fusion_metadata`
and :func:`set_fusion_metadata` give the ``metadata_props`` entry that records the target in the ONNX file
(:func:`fuse` writes it, and keeps the preprocessing metadata).  The builder marks every IAttention of a parsed
network decomposable (``trt_compat.mark_attention_decomposable``: TensorRT-RTX has no dedicated FP32 attention
kernel).
"""
import collections

from ..errors import UserError
from ..preprocess import copy_onnx_metadata
from .attention import _static_target, fuse_attention
from .constants import _NoMatch
from .driver import DEFAULT_KINDS, KINDS, add_plugins, rejection_summary
from .layernorm import NATIVE_LAYERNORM_OP, fuse_layernorm
from .shapes import infer_shapes

TARGETS = ("plugin", "native", "fusable", "none")
TARGET_CHOICES = TARGETS + ("auto",)
#: ONNX metadata_props key recording the fusion target of a rewritten graph
METADATA_KEY = "mobilevit_trt.fusion_target"
NATIVE_OPSET = 23          # Attention is an ONNX op from opset 23
LAYERNORM_OPSET = 17       # LayerNormalization is an ONNX op from opset 17
NATIVE_ATTENTION_OP = "Attention"
#: the kind recorded for a rewritten fusable attention (it is several ONNX nodes, not one op)
FUSABLE_ATTENTION_KIND = "MHA(MatMul-Softmax-MatMul)"
#: FP16/BF16 fused-MHA head-size rule of the developer guide: 16 <= D <= 256 and D % 8 == 0
MHA_HEAD_MIN, MHA_HEAD_MAX, MHA_HEAD_MULTIPLE = 16, 256, 8
NATIVE_LAYOUTS = ("bhnd", "bsd")
#: the node ops each target writes, per kind
TARGET_OPS = {
    "native": {"layernorm": NATIVE_LAYERNORM_OP, "attention": NATIVE_ATTENTION_OP},
    "fusable": {"layernorm": NATIVE_LAYERNORM_OP, "attention": FUSABLE_ATTENTION_KIND},
}


# -- choosing a target ---------------------------------------------------------------------------------------------
def parse_trt_version(text):
    """``"10.14.1.48"`` -> ``(10, 14)``; a UserError for text without a ``major.minor`` prefix."""
    parts = str(text or "").strip().split(".")
    try:
        major = int(parts[0])
        minor = int(parts[1]) if len(parts) > 1 and parts[1] != "" else 0
    except ValueError:
        raise UserError("cannot read a TensorRT version from %r (expected MAJOR.MINOR[.PATCH])" % (text,))
    return major, minor


def _flavour(trt_flavour):
    """``"tensorrt"`` / ``"tensorrt_rtx"`` (also spelled ``TensorRT-RTX``); None means ``"tensorrt"``."""
    flavour = (trt_flavour or "tensorrt").strip().lower().replace("-", "_")
    if flavour not in ("tensorrt", "tensorrt_rtx"):
        raise UserError("unknown TensorRT flavour %r (tensorrt or tensorrt_rtx)" % (trt_flavour,))
    return flavour


def target_for(trt_flavour, trt_version):
    """The fusion target for a TensorRT (``trt_flavour``: ``"tensorrt"`` or ``"tensorrt_rtx"``; ``trt_version``:
    its ``__version__``), by rule:

    * TensorRT-RTX (any version) -> ``native``: RTX does not load C++ plugins (NVIDIA's TensorRT-RTX docs; seen
      here: RTX 1.7.1 never reaches a plugin creator for ``MVT_*``), and its parser imports the ONNX
      ``Attention`` op into IAttention (``ATTENTION_INPUT`` / ``ATTENTION_OUTPUT`` layers, built in FP16 on the
      CPU in tests/test_rtx_targets.py).  TensorRT-RTX releases before IAttention (built on TensorRT < 10.14)
      would need ``fusable``; the toolkit has only seen 1.7.
    * TensorRT >= 10.14 (and 11.x) -> ``native``: 10.14 added ``IAttention`` (``INetworkDefinition.add_attention``)
      and the ONNX ``Attention`` importer (onnx-tensorrt ``DEFINE_BUILTIN_OP_IMPORTER(Attention)``); the fused
      attention guide names IAttention the recommended method ("Method 1"); LayerNormalization is imported as
      ``INormalizationLayer``.  A plugin node called ``Attention`` would be taken by that importer (hence the
      ``MVT_`` names), and C++ plugins are deprecated in favour of IPluginV3 there.
    * TensorRT 8.6 - 10.13 -> ``fusable``: the ONNX ``LayerNormalization`` importer and ``INormalizationLayer``
      exist from 8.6 (8.6 release notes; the 8.6 builder warns that LayerNorm after self-attention can overflow in
      FP16 when not exported at opset >= 17), and the developer guide documents MHA fusion of the
      MatMul-Softmax-MatMul pattern from 8.6 (NVIDIA/TensorRT#2736: MHA not fused before, "will fix this in TRT
      8.6 GA"); there is no Attention op before 10.14.  (9.x, the LLM-only releases, fall here too.)
    * TensorRT 8.2 - 8.5 (and older) -> ``plugin``: no LayerNormalization importer (opset <= 16 decomposes
      LayerNorm into 8 ops) and no MHA fusion of the ONNX pattern; the reference 22.04 container is 8.2.4 and
      its Myelin dynamic-shape assertion on the attention rearranges (shared/TRT_API.md) is avoided by the plugin.
    """
    if _flavour(trt_flavour) == "tensorrt_rtx":
        return "native"
    v = parse_trt_version(trt_version)
    if v >= (10, 14):
        return "native"
    if v >= (8, 6):
        return "fusable"
    return "plugin"


#: :func:`target_for`'s rules as rows for reports and the README: (TensorRT releases, an example version for
#: target_for, the target, why in one line)
TARGET_RULES = (
    ("TensorRT 8.2-8.5", ("tensorrt", "8.2.4"), "plugin",
     "no LayerNormalization importer, no MHA fusion of the ONNX pattern: the plugins fuse what TensorRT cannot"),
    ("TensorRT 8.6-10.13", ("tensorrt", "10.13"), "fusable",
     "TensorRT fuses MatMul-Softmax-MatMul itself when the graph has the developer guide's form; a plugin would "
     "block its fusions around it"),
    ("TensorRT 10.14+, 11.x", ("tensorrt", "10.14"), "native",
     "the ONNX Attention importer builds IAttention, NVIDIA's recommended fused attention"),
    ("TensorRT-RTX", ("tensorrt_rtx", "1.7"), "native",
     "IAttention as in 10.14+; TensorRT-RTX loads no C++ plugins"),
)


def target_rules():
    """``[{"tensorrt", "target", "why"}]``: :data:`TARGET_RULES`, each target checked against :func:`target_for`."""
    out = []
    for releases, (flavour, version), target, why in TARGET_RULES:
        assert target_for(flavour, version) == target, (releases, target)
        out.append(collections.OrderedDict([("tensorrt", releases), ("target", target), ("why", why)]))
    return out


def resolve_target(target, trt_flavour=None, trt_version=None):
    """``target`` validated; ``auto`` resolved with :func:`target_for` (needs the flavour / version)."""
    t = (target or "").strip().lower()
    if t not in TARGET_CHOICES:
        raise UserError("unknown fusion target %r (choose from %s)" % (target, ", ".join(TARGET_CHOICES)))
    if t == "auto":
        if trt_version is None and _flavour(trt_flavour) != "tensorrt_rtx":
            raise UserError("fusion target auto needs the TensorRT version (trt_version=...)")
        t = target_for(trt_flavour, trt_version)
    return t


def fusion_metadata(target):
    """``{"mobilevit_trt.fusion_target": target}``: what to write into the ONNX ``metadata_props``."""
    t = target.get("target") if isinstance(target, dict) else target
    if t not in TARGETS:
        raise UserError("unknown fusion target %r (choose from %s)" % (t, ", ".join(TARGETS)))
    return collections.OrderedDict([(METADATA_KEY, t)])


def set_fusion_metadata(model, target):
    """Write :func:`fusion_metadata` into ``model.metadata_props`` (replacing an earlier entry); returns model."""
    entries = fusion_metadata(target)
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for k, v in keep + list(entries.items()):
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def read_fusion_target(model):
    """The target recorded in an ONNX ModelProto's metadata, or None."""
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return p.value
    return None


def padded_head_dim(d, multiple=MHA_HEAD_MULTIPLE, minimum=MHA_HEAD_MIN):
    """Smallest head dim >= ``d`` that meets the FP16 fused-MHA rule (>= 16, a multiple of 8)."""
    d = max(int(d), minimum)
    return -(-d // multiple) * multiple


# -- what is written instead of the plugin node ------------------------------------------------------------------
class _Writer(object):
    """Fresh nodes and tensors for one rewritten attention."""

    def __init__(self, an, name):
        self.an, self.name, self.nodes = an, name, []

    def const(self, suffix, values):
        import onnx_graphsurgeon as gs
        return gs.Constant(self.an.tensor_name(self.name + "/" + suffix), values)

    def node(self, op, suffix, inputs, attrs=None, outputs=1):
        import onnx_graphsurgeon as gs
        if isinstance(outputs, int):
            outputs = [gs.Variable(self.an.tensor_name(self.name + "/" + suffix + ("_%d" % i if outputs > 1 else "")))
                       for i in range(outputs)]
        self.nodes.append(gs.Node(op, name=self.an.unique_node_name(self.name + "/" + suffix), attrs=attrs or {},
                                  inputs=list(inputs), outputs=list(outputs), domain=""))
        return outputs if len(outputs) > 1 else outputs[0]

    def reshape(self, suffix, x, target, out=None):
        np = self.an.np
        shape = self.const(suffix + "_shape", np.array(target, dtype=np.int64))
        return self.node("Reshape", suffix, [x, shape], outputs=[out] if out is not None else 1)

    def split3(self, x, e):
        np = self.an.np
        sizes = self.const("qkv_split_sizes", np.array([e, e, e], dtype=np.int64))
        return self.node("Split", "qkv_split", [x, sizes], attrs={"axis": -1}, outputs=3)


def _output_target(m):
    """Reshape target giving the merged output ``lead + [N, H*D]`` for every batch size, or _NoMatch."""
    e = m["num_heads"] * m["head_dim"]
    t = _static_target([list(lead) + [m["seq_len"], e] for lead in m["lead_shapes"]])
    if t is None:
        raise _NoMatch("the token view's leading dims %s vary in more than one dim with the batch" %
                       (m["lead_shapes"],))
    return t


class _AttentionEmitter(object):
    """Common part: q, k, v token views ``[..., N, H*D]`` (a Split of a packed ``[..., N, 3*H*D]``)."""
    kind = None
    name_base = "Attention"

    def check(self, an, m):
        _output_target(m)

    def qkv(self, w, m, inputs):
        e = m["num_heads"] * m["head_dim"]
        if m["packed"]:
            return list(w.split3(inputs[0], e))
        return list(inputs)

    def heads(self, w, role, t, m, pad_to=None, transpose_k=False):
        """token view -> [L, N, H, D] (zero-padded to ``pad_to``) -> [L, H, N, D] (K^T: [L, H, D, N])."""
        np = w.an.np
        h, d, n = m["num_heads"], m["head_dim"], m["seq_len"]
        x = w.reshape("%s_heads" % role, t, [-1, n, h, d])
        if pad_to is not None and pad_to != d:
            pads = w.const("%s_pads" % role, np.array([0, 0, 0, 0, 0, 0, 0, pad_to - d], dtype=np.int64))
            x = w.node("Pad", "%s_pad" % role, [x, pads], attrs={"mode": "constant"})
        perm = [0, 2, 3, 1] if transpose_k else [0, 2, 1, 3]
        return w.node("Transpose", "%s_transpose" % role, [x], attrs={"perm": perm})

    def merge(self, w, x, m, y):
        """[L, H, N, D] -> [L, N, H, D] -> lead + [N, H*D] (written into ``y``)."""
        x = w.node("Transpose", "merge_transpose", [x], attrs={"perm": [0, 2, 1, 3]})
        w.reshape("merge", x, _output_target(m), out=y)


class NativeAttention(_AttentionEmitter):
    """ONNX ``Attention`` (opset 23): ``[B, H, N, D]`` operands (``bhnd``) or ``[B, N, H*D]`` with
    ``q_num_heads`` / ``kv_num_heads`` (``bsd``)."""
    kind = NATIVE_ATTENTION_OP

    def __init__(self, layout="bhnd"):
        if layout not in NATIVE_LAYOUTS:
            raise UserError("unknown native attention layout %r (choose from %s)" % (layout, ", ".join(NATIVE_LAYOUTS)))
        self.layout = layout

    def build(self, an, name, m, inputs, y):
        w = _Writer(an, name)
        h, n = m["num_heads"], m["seq_len"]
        e = h * m["head_dim"]
        scale = float(an.np.float32(m["scale"]))
        q, k, v = self.qkv(w, m, inputs)
        if self.layout == "bhnd":
            qh, kh, vh = [self.heads(w, r, t, m) for r, t in zip("qkv", (q, k, v))]
            o = w.node("Attention", "Attention", [qh, kh, vh], attrs={"scale": scale})
            self.merge(w, o, m, y)
        else:
            rank3 = [w.reshape("%s_tokens3" % r, t, [-1, n, e]) for r, t in zip("qkv", (q, k, v))]
            target = _output_target(m)
            direct = len(target) == 3
            o = w.node("Attention", "Attention", rank3, attrs={"scale": scale, "q_num_heads": h, "kv_num_heads": h},
                       outputs=[y] if direct else 1)
            if not direct:
                w.reshape("merge", o, target, out=y)
        return w.nodes, [("target", "native"), ("layout", self.layout), ("written_nodes", len(w.nodes))]


class FusableAttention(_AttentionEmitter):
    """``Mul(Q, scale) -> MatMul(., K^T) -> Softmax(-1) -> MatMul(., V)`` on ``[B*P, H, N, D]``, head dim
    zero-padded to the FP16 fused-MHA rule when ``pad_heads``."""
    kind = FUSABLE_ATTENTION_KIND
    name_base = "MHA"

    def __init__(self, pad_heads=True):
        self.pad_heads = bool(pad_heads)

    def check(self, an, m):
        _output_target(m)
        if m["head_dim"] > MHA_HEAD_MAX:
            raise _NoMatch("head dim %d > %d: no fused MHA kernel (the graph keeps its attention as it is)" %
                           (m["head_dim"], MHA_HEAD_MAX))

    def build(self, an, name, m, inputs, y):
        np = an.np
        w = _Writer(an, name)
        d = m["head_dim"]
        dp = padded_head_dim(d) if self.pad_heads else d
        q, k, v = self.qkv(w, m, inputs)
        qh = self.heads(w, "q", q, m, pad_to=dp)
        kt = self.heads(w, "k", k, m, pad_to=dp, transpose_k=True)
        vh = self.heads(w, "v", v, m, pad_to=dp)
        qs = w.node("Mul", "q_scale", [qh, w.const("scale", np.array(m["scale"], dtype=np.float32))])
        s = w.node("MatMul", "qk_matmul", [qs, kt])
        p = w.node("Softmax", "softmax", [s], attrs={"axis": -1})
        o = w.node("MatMul", "av_matmul", [p, vh])
        if dp != d:
            o = w.node("Slice", "unpad", [o, w.const("unpad_starts", np.array([0], np.int64)),
                                          w.const("unpad_ends", np.array([d], np.int64)),
                                          w.const("unpad_axes", np.array([3], np.int64))])
        self.merge(w, o, m, y)
        meets = MHA_HEAD_MIN <= dp <= MHA_HEAD_MAX and dp % MHA_HEAD_MULTIPLE == 0
        return w.nodes, [("target", "fusable"), ("head_dim_padded", int(dp)), ("bmm_cost", round(dp / float(d), 4)),
                         ("meets_fp16_mha_head_rule", bool(meets)), ("written_nodes", len(w.nodes))]


# -- the entry point -----------------------------------------------------------------------------------------------
def default_opset(model):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def convert_opset(model, opset):
    """``model`` at ``opset`` (``onnx.version_converter``; only upwards) with the IR version opset needs."""
    import onnx
    from onnx import version_converter

    src = default_opset(model)
    if src is not None and src >= opset:
        return model
    try:
        out = version_converter.convert_version(model, int(opset))
    except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError/ValueError with the adapter's text
        raise UserError("cannot convert the model from opset %s to %d: %s" % (src, opset, str(e).splitlines()[0]))
    need = onnx.helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    out.ir_version = max(int(model.ir_version), int(need))
    return out


def count_target_ops(model, target):
    """{kind: number of nodes of the op that ``target`` writes for it} (fusable attention: Softmax nodes)."""
    from .driver import count_plugins
    if target == "plugin":
        plugins = count_plugins(model)
        return collections.OrderedDict((k, plugins[op]) for k, op in KINDS.items())
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return collections.OrderedDict([("layernorm", ops[NATIVE_LAYERNORM_OP]),
                                    ("attention", ops[NATIVE_ATTENTION_OP] if target == "native" else ops["Softmax"])])


def fuse(model, target, kinds=DEFAULT_KINDS, allow_missing=False, trt_flavour=None, trt_version=None,
         native_layout="bhnd", pad_heads=True):
    """Rewrite a copy of ``model`` (ModelProto) for fusion ``target`` (one of :data:`TARGET_CHOICES`; ``auto``
    uses ``trt_flavour`` / ``trt_version``, see :func:`target_for`); return ``(rewritten ModelProto, report)``.

    ``kinds``: which subgraphs to rewrite (``layernorm``, ``attention``; the others stay as exported).  Finding
    none of a requested kind is a UserError unless ``allow_missing`` (as :func:`.driver.add_plugins`).  The
    report is add_plugins' (``counts`` keyed by the written op, ``fusions``, ``rejected`` ...) plus ``target``,
    ``opset`` (before / after), ``ops`` (kind -> op written) and, for ``fusable``, ``head_padding`` (the cost of
    the padded head dims).  The output carries the source's metadata (preprocessing) and
    :func:`fusion_metadata`.
    """
    import onnx_graphsurgeon as gs

    t = resolve_target(target, trt_flavour, trt_version)
    kinds = list(kinds)
    for k in kinds:
        if k not in KINDS:
            raise UserError("unknown fusion kind %r (choose from %s)" % (k, ",".join(KINDS)))
    if t == "plugin":
        fused, report = add_plugins(model, kinds, allow_missing)
        report = _with_target(report, t, model, fused, dict((k, KINDS[k]) for k in kinds))
        return set_fusion_metadata(fused, t), report
    src_opset = default_opset(model)
    want = {"native": NATIVE_OPSET, "fusable": LAYERNORM_OPSET if "layernorm" in kinds else src_opset,
            "none": src_opset}[t]
    work = convert_opset(model, want) if want is not None and src_opset is not None and want > src_opset else model
    try:
        graph = gs.import_onnx(work)
    except Exception as e:  # noqa: BLE001
        raise UserError("onnx-graphsurgeon cannot import the model: %s" % str(e).splitlines()[0])
    info = {"shape_inference": "not run"}
    records, rejected = [], []
    counts = collections.OrderedDict()
    ops = collections.OrderedDict()
    if t != "none":
        shapes = infer_shapes(work, info)
        for k in kinds:
            op = TARGET_OPS[t][k]
            ops[k] = op
            if k == "layernorm":
                recs = fuse_layernorm(graph, shapes, rejected=rejected, native=True)
            else:
                emit = NativeAttention(native_layout) if t == "native" else FusableAttention(pad_heads)
                recs = fuse_attention(graph, shapes, rejected=rejected, emit=emit)
            counts[op] = len(recs)
            records.extend(recs)
    graph.cleanup().toposort()
    out = copy_onnx_metadata(model, gs.export_onnx(graph))
    out.ir_version = work.ir_version
    missing = [ops[k] for k in kinds if t != "none" and counts[ops[k]] == 0]
    report = collections.OrderedDict([
        ("plugins", []), ("counts", counts),
        ("nodes_before", len(model.graph.node)), ("nodes_after", len(out.graph.node)),
        ("missing", missing), ("shape_inference", info["shape_inference"]), ("fusions", records),
        ("rejected", rejected),
    ])
    report = _with_target(report, t, model, out, ops)
    if t == "fusable":
        att = [r for r in records if r["kind"] == FUSABLE_ATTENTION_KIND]
        padded = [r for r in att if r["head_dim_padded"] != r["head_dim"]]
        report["head_padding"] = collections.OrderedDict([
            ("enabled", bool(pad_heads)), ("padded", len(padded)), ("of", len(att)),
            ("dims", sorted(set((r["head_dim"], r["head_dim_padded"]) for r in att))),
            ("all_meet_fp16_mha_head_rule", all(r["meets_fp16_mha_head_rule"] for r in att)),
        ])
    if missing and not allow_missing:
        err = UserError("no %s subgraph found in the model for target %s (pass --allow-missing to accept)%s" % (
            " / ".join(missing), t, rejection_summary(rejected, missing)))
        err.report = report
        raise err
    return set_fusion_metadata(out, t), report


def _with_target(report, target, model, out, ops):
    report = collections.OrderedDict(report)
    report["target"] = target
    report["ops"] = collections.OrderedDict(ops)
    report["opset"] = collections.OrderedDict([("before", default_opset(model)), ("after", default_opset(out))])
    report["metadata"] = fusion_metadata(target)
    return report
