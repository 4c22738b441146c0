"""Fusion targets (``surgery.fuse``): ``native`` (ONNX Attention opset 23 + LayerNormalization), ``fusable`` (the
MatMul-Softmax-MatMul form of TensorRT's MHA fusion, head dims padded to multiples of 8), ``none`` and ``plugin``,
on the original project's MobileViT (1 head of 32) and Apple's official MobileViT (4 heads; head dims 16/20/24,
24/30/36, 36/48/60), static and dynamic batch, FP32 and FP16; ``target_for`` rules; metadata; near misses.

References are independent of the rewrite: the unfused ONNX export in ONNX Runtime (which runs opset-23
``Attention`` / ``LayerNormalization`` with its own CPU kernels), the PyTorch modules' head counts / dims, and
the developer guide's head-size rule written out here.  Models have random weights with sharpened attention
(``randomize`` of test_surgery_official), so a wrong scale or head split changes the logits well beyond the
tolerance (``test_wrong_scale_is_detected``).
"""
import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")

from mobilevit_trt import surgery  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402
from mobilevit_trt.export import export_onnx  # noqa: E402
from mobilevit_trt.precision import convert_fp16  # noqa: E402
from mobilevit_trt.preprocess import METADATA_KEY as PREPROCESS_KEY  # noqa: E402
from mobilevit_trt.surgery import targets  # noqa: E402
from tests.test_surgery_official import Attn, _export_small, randomize  # noqa: E402

IMG = 128
STATIC_BATCH = 2
DYNAMIC_BATCHES = (1, 3)
FP32_ATOL = surgery.VERIFY_ATOL
# FP16 graph (weights and activations float16, LayerNormalization / Softmax float32) against the FP32 source:
# |diff| <= FP16_ATOL + FP16_RTOL * |ref| on every logit
# (seen: at most 4.9e-3 on logits up to ~4 (original xxs), 4e-4 on logits up to ~0.5 (official), every target)
FP16_ATOL, FP16_RTOL = 1e-2, 1e-2
REWRITES = ("native", "fusable", "none")

# (family, arch, dynamic): the original project's xxs and Apple's xxs / xs / s
VARIANTS = [("original", "xxs", False), ("original", "xxs", True), ("official", "xxs", False),
            ("official", "xxs", True), ("official", "xs", True), ("official", "s", False)]
HEAD_DIMS = {("original", "xxs"): (32,), ("official", "xxs"): (16, 20, 24), ("official", "xs"): (24, 30, 36),
             ("official", "s"): (36, 48, 60)}
COUNTS = {"original": (18, 9), "official": (21, 9)}


def _vid(v):
    return "%s-%s-%s" % (v[0], v[1], "dyn" if v[2] else "b%d" % STATIC_BATCH)


def _quiet(*_a, **_k):
    pass


def _build(family, arch):
    """(randomized model, sorted attention scales read from its modules)."""
    if family == "original":
        from MobileViT_Pytorch.checkpoint import load_model
        from MobileViT_Pytorch.models.module import MultiHeadSelfAttention
        model = load_model(None, arch=arch, img_size=IMG, quiet=True)[0]
        scales = [m.scale_factor for m in model.modules() if isinstance(m, MultiHeadSelfAttention)]
    else:
        from MobileViT_Pytorch import official
        model = official.create_model("mobilevit_" + arch, 1000, opt=False, seed=0)
        scales = [float(m.scale) for m in model.modules() if type(m).__name__ == "Attention" and hasattr(m, "qkv")]
    return randomize(model), sorted(round(float(x), 6) for x in scales)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """variant -> dict(path, model: ModelProto, out: {target: (path, ModelProto, report)}, scales: the PyTorch
    attention modules' scales) (built once)."""
    folder = tmp_path_factory.mktemp("target_exports")
    torch_models, cache = {}, {}

    def get(variant):
        if variant not in cache:
            family, arch, dyn = variant
            if (family, arch) not in torch_models:
                torch_models[(family, arch)] = _build(family, arch)
            model, scales = torch_models[(family, arch)]
            path = str(folder / (_vid(variant) + ".onnx"))
            export_onnx(model, path, batch=STATIC_BATCH, dynamic=dyn, opset=13, img_size=IMG,
                        verify=False, log=_quiet)
            src = onnx.load(path)
            out = {}
            for t in REWRITES:
                fused, report = surgery.fuse(src, t)
                p = str(folder / ("%s_%s.onnx" % (_vid(variant), t)))
                onnx.save(fused, p)
                out[t] = (p, fused, report)
            cache[variant] = dict(path=path, model=src, out=out, scales=scales)
        return cache[variant]
    return get


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _opset(model):
    return [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0]


def _producers(model):
    return dict((o, n) for n in model.graph.node for o in n.output)


def _shapes(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]
    return out


# ---------------------------------------------------------------------------------------------------------------
# every target on every variant: structure, FP32 and FP16 against the source graph
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS, ids=[_vid(v) for v in VARIANTS])
def test_targets_rewrite_and_verify(variant, exports, tmp_path):
    family, arch, dyn = variant
    v = exports(variant)
    n_ln, n_att = COUNTS[family]
    batches = DYNAMIC_BATCHES if dyn else (STATIC_BATCH,)
    want_dims = HEAD_DIMS[(family, arch)]
    for t in REWRITES:
        path, fused, report = v["out"][t]
        ops = collections.Counter(n.op_type for n in fused.graph.node)
        meta = dict((p.key, p.value) for p in fused.metadata_props)
        assert meta[surgery.METADATA_KEY] == t and report["target"] == t
        assert meta.get(PREPROCESS_KEY) == dict((p.key, p.value) for p in v["model"].metadata_props).get(PREPROCESS_KEY)
        assert not any(n.op_type.startswith("MVT_") for n in fused.graph.node)
        if t == "none":
            assert ops == collections.Counter(n.op_type for n in v["model"].graph.node)
            assert _opset(fused) == 13 and report["counts"] == {}
        else:
            assert ops["LayerNormalization"] == n_ln and ops["Softmax"] == (0 if t == "native" else n_att)
            assert ops["ReduceMean"] == 0 and ops["Pow"] == 0 and ops["Sqrt"] == 0   # every decomposed LayerNorm
            assert ops["Attention"] == (n_att if t == "native" else 0)
            assert _opset(fused) == (23 if t == "native" else 17)
            assert report["rejected"] == [] and report["missing"] == []
            recs = [r for r in report["fusions"] if r["kind"] == report["ops"]["attention"]]
            assert len(recs) == n_att
            assert sorted(set(r["head_dim"] for r in recs)) == list(want_dims)
            assert sorted(round(r["scale"], 6) for r in recs) == v["scales"]
            assert all(r["num_heads"] == (1 if family == "original" else 4) for r in recs)
        if t == "native":
            _check_native(fused, want_dims, v["scales"])
        if t == "fusable":
            _check_fusable(fused, report, want_dims, v["scales"])
        res = surgery.verify_fused(v["path"], path, batches=batches, atol=FP32_ATOL, log=_quiet)
        assert res["checker"] == "passed" and res["passed"] and res["max_abs"] <= FP32_ATOL, (t, res)
        p16 = str(tmp_path / ("%s_fp16.onnx" % t))
        convert_fp16(path, p16)
        res16 = surgery.verify_fused(v["path"], p16, batches=batches, atol=FP16_ATOL, rtol=FP16_RTOL, log=_quiet)
        assert res16["checker"] == "passed" and res16["passed"], (t, res16)
        assert res16["max_abs"] > 0.0                                       # it really ran in float16
        print("%s %s: FP32 max abs %.2e, FP16 max abs %.2e (max rel %.2e)" % (
            _vid(variant), t, res["max_abs"], res16["max_abs"], res16["max_rel"]))


def _check_native(fused, want_dims, scales):
    """Attention reads q, k, v [B, H, N, D] made by Reshape [-1, N, H, D] + Transpose (0, 2, 1, 3) -- the
    layout onnx-tensorrt's importer passes to IAttention as is -- with the real scale; no K transpose."""
    shapes = _shapes(fused)
    prod = _producers(fused)
    dims, got_scales = set(), []
    for n in [n for n in fused.graph.node if n.op_type == "Attention"]:
        assert len(n.input) == 3 and len(n.output) == 1
        qs = [shapes[i] for i in n.input]
        assert all(len(s) == 4 for s in qs) and qs[0][1:] == qs[1][1:] == qs[2][1:]   # dim 0: symbolic when dynamic
        h, d = qs[0][1], qs[0][3]
        dims.add(d)
        got_scales.append(round(_attr(n, "scale"), 6))
        assert _attr(n, "q_num_heads") is None and _attr(n, "is_causal", 0) == 0
        for i in n.input:
            tr = prod[i]
            assert tr.op_type == "Transpose" and list(_attr(tr, "perm")) == [0, 2, 1, 3]
            assert prod[tr.input[0]].op_type == "Reshape"
        out = shapes[n.output[0]]
        assert out[1:] == qs[0][1:]
    assert sorted(dims) == list(want_dims) and sorted(got_scales) == scales


def _check_fusable(fused, report, want_dims, scales):
    """The guide's pattern: Mul(Q, scale) -> MatMul(., K^T) -> Softmax(axis -1) -> MatMul(., V), 4-D [B, H, N, D']
    operands, D' = D rounded up to a multiple of 8 (>= 16), and the padding undone by a Slice."""
    shapes = _shapes(fused)
    prod = _producers(fused)
    consumers = collections.defaultdict(list)
    for n in fused.graph.node:
        for i in n.input:
            consumers[i].append(n)
    inits = dict((i.name, onnx.numpy_helper.to_array(i)) for i in fused.graph.initializer)
    padded, got_scales = set(), []
    for sm in [n for n in fused.graph.node if n.op_type == "Softmax"]:
        assert _attr(sm, "axis") == -1
        qk = prod[sm.input[0]]
        assert qk.op_type == "MatMul"
        q_scaled, kt = qk.input
        mul = prod[q_scaled]
        assert mul.op_type == "Mul"
        scale = float(inits[mul.input[1]])
        qshape, kshape = shapes[mul.input[0]], shapes[kt]
        assert len(qshape) == 4 and len(kshape) == 4 and qshape[3] == kshape[2] and qshape[2] == kshape[3]
        dp = qshape[3]
        assert dp % 8 == 0 and 16 <= dp <= 256
        heads = prod[prod[mul.input[0]].input[0]]                  # Transpose <- Pad <- Reshape, or <- Reshape
        d = shapes[(prod[heads.input[0]] if heads.op_type == "Pad" else heads).output[0]][-1]
        assert d in want_dims and d <= dp < d + 8
        got_scales.append(round(scale, 6))
        av = [c for c in consumers[sm.output[0]] if c.op_type == "MatMul"]
        assert len(av) == 1 and shapes[av[0].input[1]][1:] == qshape[1:]
        nxt = consumers[av[0].output[0]]
        if dp != d:
            assert [c.op_type for c in nxt] == ["Slice"] and shapes[nxt[0].output[0]][3] == d
        padded.add((d, dp))
    assert sorted(got_scales) == scales
    hp = report["head_padding"]
    assert sorted(padded) == [tuple(x) for x in hp["dims"]] and hp["all_meet_fp16_mha_head_rule"]
    att = [r for r in report["fusions"] if "head_dim_padded" in r]
    assert len(att) == len(got_scales) and hp["padded"] == sum(1 for r in att if r["head_dim_padded"] != r["head_dim"])
    for r in att:
        assert r["bmm_cost"] == pytest.approx(r["head_dim_padded"] / float(r["head_dim"]), rel=1e-3)


def test_native_bsd_layout_and_no_padding(exports, tmp_path):
    """native_layout="bsd": Attention on [B, N, H*D] with q_num_heads / kv_num_heads (the importer splits the
    heads); pad_heads=False keeps D=20 (reported as not meeting the rule).  Both verified."""
    v = exports(("official", "xxs", True))
    fused, report = surgery.fuse(v["model"], "native", native_layout="bsd")
    shapes = _shapes(fused)
    atts = [n for n in fused.graph.node if n.op_type == "Attention"]
    assert len(atts) == 9
    for n in atts:
        s = shapes[n.input[0]]
        assert len(s) == 3 and _attr(n, "q_num_heads") == _attr(n, "kv_num_heads") == 4
        assert _attr(n, "scale") == pytest.approx((s[2] // 4) ** -0.5, rel=1e-6)
    p = str(tmp_path / "bsd.onnx")
    onnx.save(fused, p)
    res = surgery.verify_fused(v["path"], p, atol=FP32_ATOL, log=_quiet)
    assert res["passed"], res
    fused, report = surgery.fuse(v["model"], "fusable", pad_heads=False)
    assert report["head_padding"]["padded"] == 0 and not report["head_padding"]["all_meet_fp16_mha_head_rule"]
    assert "Pad" not in [n.op_type for n in fused.graph.node]
    p = str(tmp_path / "unpadded.onnx")
    onnx.save(fused, p)
    assert surgery.verify_fused(v["path"], p, atol=FP32_ATOL, log=_quiet)["passed"]


def test_wrong_scale_is_detected(exports, tmp_path):
    """The comparison sees a wrong scale on the native Attention node and on the fusable Q Mul."""
    v = exports(("official", "xxs", False))
    for t in ("native", "fusable"):
        m = onnx.ModelProto()
        m.CopyFrom(v["out"][t][1])
        if t == "native":
            for n in m.graph.node:
                if n.op_type == "Attention":
                    [a for a in n.attribute if a.name == "scale"][0].f = 1.0
        else:
            muls = set(n.input[1] for n in m.graph.node if n.op_type == "Mul" and n.name.endswith("/q_scale"))
            assert len(muls) == 9
            for init in m.graph.initializer:
                if init.name in muls:
                    init.CopyFrom(onnx.numpy_helper.from_array(np.array(1.0, np.float32), init.name))
        p = str(tmp_path / ("%s_bad.onnx" % t))
        onnx.save(m, p)
        res = surgery.verify_fused(v["path"], p, atol=FP32_ATOL, log=_quiet)
        assert not res["passed"] and res["max_abs"] > 10 * FP32_ATOL, (t, res["max_abs"])


def test_plugin_target_is_add_plugins(exports):
    v = exports(("original", "xxs", False))
    fused, report = surgery.fuse(v["model"], "plugin")
    ref, ref_report = surgery.add_plugins(v["model"])
    assert [n.op_type for n in fused.graph.node] == [n.op_type for n in ref.graph.node]
    assert report["counts"] == ref_report["counts"] and report["target"] == "plugin"
    assert surgery.read_fusion_target(fused) == "plugin" and surgery.read_fusion_target(ref) is None


# ---------------------------------------------------------------------------------------------------------------
# near misses stay as they are for every target, with the matcher's reason
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("quirk,reason", [("softmax_axis", "not over the last axis"),
                                          ("vector_scale", "not a scalar"),
                                          ("mask", "not from a Q.K^T MatMul")])
def test_near_misses_not_rewritten(quirk, reason, tmp_path):
    module = Attn("mul_scores", "packed", quirk=quirk)
    model = _export_small(module, torch.randn(2, 10, 24), str(tmp_path / "m.onnx"), 13)
    for t in ("native", "fusable"):
        fused, report = surgery.fuse(model, t, kinds=["attention"], allow_missing=True)
        ops = [n.op_type for n in fused.graph.node]
        assert ops.count("Softmax") == 1 and "Attention" not in ops
        assert len(report["rejected"]) == 1 and reason in report["rejected"][0]["reason"]
        with pytest.raises(UserError) as e:
            surgery.fuse(model, t, kinds=["attention"])
        assert reason in str(e.value) and e.value.report["target"] == t


def test_small_module_every_target_matches_torch(tmp_path):
    """3 heads of 8 (no padding needed), separate projections, dynamic batch: native and fusable == PyTorch."""
    from mobilevit_trt.reference_ops import run_with_reference_ops
    module = Attn("scale_q", "separate")
    model = _export_small(module, torch.randn(2, 10, 24), str(tmp_path / "m.onnx"), 17, dynamic=True)
    rng = np.random.default_rng(3)
    for t in ("native", "fusable"):
        fused, report = surgery.fuse(model, t, kinds=["attention"])
        rec = report["fusions"][0]
        assert (rec["num_heads"], rec["head_dim"], rec["input_form"]) == (3, 8, "q_k_v")
        for b in (1, 3):
            x = rng.standard_normal((b, 10, 24)).astype(np.float32)
            with torch.no_grad():
                want = module(torch.from_numpy(x)).numpy()
            got = run_with_reference_ops(fused, {"x": x})[0]
            assert got.shape == want.shape and float(np.abs(got - want).max()) <= FP32_ATOL


# ---------------------------------------------------------------------------------------------------------------
# auto: target_for rules; metadata
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flavour,version,want", [
    ("tensorrt", "8.2.4.2", "plugin"), ("tensorrt", "8.5.3", "plugin"), ("tensorrt", "8.6.1.6", "fusable"),
    ("tensorrt", "9.3.0", "fusable"), ("tensorrt", "10.0.1", "fusable"), ("tensorrt", "10.13.3.9", "fusable"),
    ("tensorrt", "10.14.1.48", "native"), ("tensorrt", "10.16", "native"), ("tensorrt", "11.1.0", "native"),
    ("tensorrt_rtx", "1.7.1.116", "native"), ("TensorRT-RTX", None, "native")])
def test_target_for(flavour, version, want):
    assert surgery.target_for(flavour, version) == want
    assert targets.resolve_target("auto", flavour, version) == want


def test_target_errors_and_metadata():
    for bad in ("", "x.y", None):
        with pytest.raises(UserError):
            surgery.target_for("tensorrt", bad)
    with pytest.raises(UserError):
        surgery.target_for("onnxruntime", "1.0")
    with pytest.raises(UserError):
        targets.resolve_target("fast")
    with pytest.raises(UserError):
        targets.resolve_target("auto")
    assert surgery.fusion_metadata("native") == {"mobilevit_trt.fusion_target": "native"}
    assert surgery.fusion_metadata({"target": "fusable"}) == {surgery.METADATA_KEY: "fusable"}
    m = onnx.ModelProto()
    for t in ("native", "none"):
        surgery.set_fusion_metadata(m, t)
    assert [(p.key, p.value) for p in m.metadata_props] == [(surgery.METADATA_KEY, "none")]
    assert targets.padded_head_dim(20) == 24 and targets.padded_head_dim(8) == 16
    assert [targets.padded_head_dim(d) for d in (16, 24, 30, 36, 48, 60, 32)] == [16, 24, 32, 40, 48, 64, 32]
    assert all(targets.MHA_HEAD_MIN <= targets.padded_head_dim(d) <= targets.MHA_HEAD_MAX for d in range(1, 257))


def test_cli_target_auto_and_explicit(tmp_path):
    """onnx_add_plugin.py --target: auto follows --trt-version by the rules (8.2 plugin, 8.6/10.13 fusable, 10.14
    and TensorRT-RTX native), the result records it, and a target's graph is verified before it is written."""
    from MobileViT_Pytorch.checkpoint import load_model
    from tests.helpers import run_script
    model, _ = load_model(None, arch="xxs", img_size=IMG, quiet=True)
    src = str(tmp_path / "m.onnx")
    export_onnx(model, src, img_size=IMG, verify=False, log=lambda *a: None)
    for args, want in ((["--target", "auto", "--trt-version", "8.2.4"], "plugin"),
                       (["--target", "auto", "--trt-version", "10.13.0"], "fusable"),
                       (["--target", "auto", "--trt-version", "10.14"], "native"),
                       (["--target", "auto", "--trt-flavour", "tensorrt_rtx"], "native"),
                       (["--target", "none"], "none")):
        out = str(tmp_path / ("%s.onnx" % "_".join(args).replace("-", "")))
        r = run_script(["onnx_add_plugin.py", "--input_path", src, "--save_path", out] + args)
        assert r.returncode == 0, r.stderr
        assert surgery.read_fusion_target(onnx.load(out)) == want, (args, r.stdout)
        assert "PASSED" in r.stdout
    r = run_script(["onnx_add_plugin.py", "--input_path", src, "--save_path", str(tmp_path / "x.onnx"),
                    "--target", "auto", "--trt-version", "ten"])
    assert r.returncode == 1 and "cannot read a TensorRT version" in r.stderr and "Traceback" not in r.stderr
