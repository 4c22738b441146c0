"""Graph surgery on Apple's official MobileViT as the ecosystem exports it (timm with and without
``scaled_dot_product_attention``, transformers), small attention modules in the spellings other exporters
produce (SDPA at every opset 14..21, scale on Q / on the scores, Mul or Div, packed or separate projections),
near misses that must stay unfused (and say why), and MobileViTv2 (GroupNorm(1) fused, separable attention not).

References are independent of the code under test: the unfused ONNX graph in ONNX Runtime (``verify_fused``),
the PyTorch modules (their head count, head dim, scale, LayerNorm / GroupNorm weights, and token counts seen by
forward hooks), and PyTorch forward passes for the small modules.  Models have random weights (no downloads),
re-drawn so that BatchNorm / LayerNorm are not identities and the attention is not near uniform (a wrong head
count or scale then changes the logits well beyond the tolerance: ``test_wrong_heads_or_scale_is_detected``).
"""
import collections
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")

from mobilevit_trt import plugin_spec, reference_ops, surgery  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402
from mobilevit_trt.export import export_onnx  # noqa: E402
from mobilevit_trt.reference_ops import run_with_reference_ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = surgery.VERIFY_ATOL
IMG = 128                 # a multiple of 32: every MobileViT stage keeps whole 2x2 patches (N = 64, 16, 4)
STATIC_BATCH = 2
DYNAMIC_BATCHES = (1, 3)
N_LAYERNORM, N_ATTENTION = 21, 9
LN_OP, ATT_OP = plugin_spec.LAYERNORM_OP, plugin_spec.ATTENTION_OP

HF_SIZES = {
    "xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320]),
    "xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "s": {},
}
# head dims of the three MobileViT stages (4 heads each): XXS 16/20/24, XS 24/30/36, S 36/48/60
HEAD_DIMS = {"xxs": (16, 20, 24), "xs": (24, 30, 36), "s": (36, 48, 60)}

# source x opset x batch: timm's default model uses F.scaled_dot_product_attention (opset >= 14 only)
SOURCES = collections.OrderedDict([("timm", (14, 17)), ("timm_exportable", (13, 17)), ("transformers", (13, 17))])
XXS_VARIANTS = [(src, "xxs", opset, dyn) for src, opsets in SOURCES.items() for opset in opsets
                for dyn in (False, True)]
OTHER_VARIANTS = [("timm", "xs", 18, True), ("transformers", "s", 13, False)]


def _vid(v):
    src, arch, opset, dyn = v
    return "%s-%s-o%d-%s" % (src, arch, opset, "dyn" if dyn else "b%d" % STATIC_BATCH)


def _quiet(*_args, **_kwargs):
    pass


def randomize(model, seed=0):
    """Weights with unit-scale activations, non-trivial norms, and sharper attention (Q/K weights x2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            elif isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2 + 0.1)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, m in model.named_modules():
            if name.rsplit(".", 1)[-1] in ("qkv", "query", "key") and isinstance(m, torch.nn.Linear):
                m.weight.mul_(2.0)
    return model.eval()


class Logits(torch.nn.Module):
    """transformers' model as an image -> logits module."""

    def __init__(self, model):
        super(Logits, self).__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def build(src, arch):
    """The official MobileViT of ``src`` (random weights) and [(num_heads, head_dim, scale)] of its attention
    modules, read from the modules themselves."""
    torch.manual_seed(0)
    if src in ("timm", "timm_exportable"):
        timm = pytest.importorskip("timm")
        model = timm.create_model("mobilevit_" + arch, exportable=(src == "timm_exportable"))
        atts = [m for m in model.modules() if type(m).__name__ == "Attention" and hasattr(m, "qkv")]
        if src == "timm":
            assert all(m.fused_attn for m in atts)            # the SDPA path is what gets exported
        else:
            assert not any(m.fused_attn for m in atts)
        expected = [(m.num_heads, m.head_dim, float(m.scale)) for m in atts]
        return randomize(model), expected, atts
    transformers = pytest.importorskip("transformers")
    from transformers.models.mobilevit import modeling_mobilevit
    config = transformers.MobileViTConfig(**HF_SIZES[arch])
    model = transformers.MobileViTForImageClassification(config)
    atts = [m for m in model.modules() if isinstance(m, modeling_mobilevit.MobileViTSelfAttention)]
    expected = [(m.num_attention_heads, m.attention_head_size, 1.0 / math.sqrt(m.attention_head_size))
                for m in atts]
    return randomize(Logits(model)), expected, atts


def token_counts(model, atts):
    """N (tokens per attention row) seen by each attention module in a PyTorch forward pass."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(int(inp[0].shape[-2]))) for m in atts]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, IMG, IMG))
    finally:
        for h in hooks:
            h.remove()
    return sorted(seen)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """variant -> dict(path, model, expected, tokens, fused, report) (exported and fused once per module)."""
    folder = tmp_path_factory.mktemp("official_exports")
    models, cache = {}, {}

    def get(variant):
        if variant not in cache:
            src, arch, opset, dyn = variant
            if (src, arch) not in models:
                model, expected, atts = build(src, arch)
                models[(src, arch)] = (model, expected, token_counts(model, atts))
            model, expected, tokens = models[(src, arch)]
            path = str(folder / (_vid(variant) + ".onnx"))
            export_onnx(model, path, batch=STATIC_BATCH, dynamic=dyn, opset=opset, img_size=IMG, verify=True,
                        log=_quiet)
            fused, report = surgery.add_plugins(onnx.load(path))
            fused_path = str(folder / (_vid(variant) + "_plugin.onnx"))
            onnx.save(fused, fused_path)
            cache[variant] = dict(path=path, model=model, expected=expected, tokens=tokens, fused=fused,
                                  fused_path=fused_path, report=report)
        return cache[variant]
    return get


def plugin_calls(fused, batch):
    """Run the fused graph with the reference plugin ops, recording each plugin node's input/output shapes."""
    calls = []
    original = reference_ops._run_plugin

    def spy(node, args):
        out = original(node, args)
        calls.append((node.op_type, node.name, [tuple(a.shape) for a in args], tuple(out.shape)))
        return out
    feeds = surgery.random_feeds(fused, batch)
    reference_ops._run_plugin = spy
    try:
        run_with_reference_ops(fused, feeds)
    finally:
        reference_ops._run_plugin = original
    return calls


def _attr(node, name):
    return [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name][0]


# ---------------------------------------------------------------------------------------------------------
# every official export variant: 21 LayerNorm + 9 Attention, real heads and scale, numerically equal
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", XXS_VARIANTS + OTHER_VARIANTS, ids=[_vid(v) for v in XXS_VARIANTS + OTHER_VARIANTS])
def test_official_export_fused(variant, official):
    src, arch, opset, dyn = variant
    v = official(variant)
    fused, report = v["fused"], v["report"]
    assert dict(report["counts"]) == {LN_OP: N_LAYERNORM, ATT_OP: N_ATTENTION}
    # nothing else looked like a candidate (transformers pools with a ReduceMean over H, W)
    assert [r for r in report["rejected"] if r["kind"] == ATT_OP] == []
    assert all(r["op"] == "ReduceMean" and "not a ReduceMean over the last axis" in r["reason"]
               for r in report["rejected"])
    ops = collections.Counter(n.op_type for n in fused.graph.node)
    assert ops["Softmax"] == 0 and ops["LayerNormalization"] == 0
    assert ops["ReduceMean"] == len(report["rejected"])          # only the pooling is left

    # heads, head dim and scale of every fused node are those of the PyTorch attention modules
    nodes = [n for n in fused.graph.node if n.op_type == ATT_OP]
    got = sorted((_attr(n, "num_heads"), round(_attr(n, "scale"), 6)) for n in nodes)
    want = sorted((h, round(s, 6)) for h, _, s in v["expected"])
    assert got == want
    assert all(h == 4 for h, _ in got)
    assert sorted(set(d for _, d, _ in v["expected"])) == list(HEAD_DIMS[arch])
    for h, d, s in v["expected"]:
        assert s == pytest.approx(d ** -0.5, rel=1e-6)
    recs = sorted((r["num_heads"], r["head_dim"], r["seq_len"]) for r in report["fusions"] if r["kind"] == ATT_OP)
    assert sorted((h, d) for h, d, _ in recs) == sorted((h, d) for h, d, _ in v["expected"])
    assert sorted(n for _, _, n in recs) == v["tokens"]
    forms = set(r["input_form"] for r in report["fusions"] if r["kind"] == ATT_OP)
    assert forms == ({"q_k_v"} if src == "transformers" else {"packed_qkv"})

    # the node reads the token tensor [..., N, 3*H*D] (or q, k, v [..., N, H*D]) and writes [..., N, H*D]
    batch = DYNAMIC_BATCHES[-1] if dyn else STATIC_BATCH
    calls = [c for c in plugin_calls(fused, batch) if c[0] == ATT_OP]
    assert len(calls) == N_ATTENTION
    by_name = dict((n.name, n) for n in nodes)
    for _, name, in_shapes, out_shape in calls:
        h = _attr(by_name[name], "num_heads")
        e = out_shape[-1]
        assert e % h == 0 and (e // h) ** -0.5 == pytest.approx(_attr(by_name[name], "scale"), rel=1e-6)
        assert out_shape[-2] in v["tokens"] and len(out_shape) >= 3
        widths = [s[-1] for s in in_shapes]
        assert widths == ([3 * e] if len(in_shapes) == 1 else [e, e, e])
        assert all(s[:-1] == out_shape[:-1] for s in in_shapes)
        # leading dims hold every token row: batch x 4 patch positions
        assert int(np.prod(out_shape[:-2])) == batch * 4

    # LayerNorm gamma / beta / eps are the PyTorch modules'
    lns = [m for m in v["model"].modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(lns) == N_LAYERNORM
    inits = dict((i.name, onnx.numpy_helper.to_array(i)) for i in fused.graph.initializer)
    got_ln = sorted((inits[n.input[1]].tobytes(), inits[n.input[2]].tobytes(), round(_attr(n, "epsilon"), 9))
                    for n in fused.graph.node if n.op_type == LN_OP)
    want_ln = sorted((m.weight.detach().numpy().tobytes(), m.bias.detach().numpy().tobytes(), round(m.eps, 9))
                     for m in lns)
    assert got_ln == want_ln

    # fused graph (reference plugin ops) == unfused graph (ONNX Runtime)
    res = surgery.verify_fused(v["path"], v["fused_path"], batches=DYNAMIC_BATCHES if dyn else (STATIC_BATCH,),
                               atol=ATOL, log=_quiet)
    assert res["checker"] == "passed" and res["reference"] == "onnxruntime"
    assert res["passed"] and res["max_abs"] <= ATOL, res


def _mutate(fused, path, name, value):
    m = onnx.ModelProto()
    m.CopyFrom(fused)
    for n in m.graph.node:
        if n.op_type == ATT_OP:
            for a in n.attribute:
                if a.name == name:
                    if a.type == onnx.AttributeProto.FLOAT:
                        a.f = value
                    else:
                        a.i = value
    onnx.save(m, path)
    return path


@pytest.mark.parametrize("variant", [("timm", "xxs", 17, False), ("transformers", "xxs", 13, True)],
                         ids=_vid)
def test_wrong_heads_or_scale_is_detected(variant, official, tmp_path):
    """The comparison is sensitive to the attributes the surgery read: one head, or scale 1, fails."""
    v = official(variant)
    for name, value in (("num_heads", 1), ("num_heads", 2), ("scale", 1.0)):
        path = _mutate(v["fused"], str(tmp_path / ("%s_%s.onnx" % (name, value))), name, value)
        res = surgery.verify_fused(v["path"], path, batches=(2,), atol=ATOL, log=_quiet)
        assert not res["passed"] and res["max_abs"] > 10 * ATOL, (name, value, res["max_abs"])


# ---------------------------------------------------------------------------------------------------------
# small attention modules: every SDPA opset, scale spellings, packed / separate projections
# ---------------------------------------------------------------------------------------------------------

def _export_small(module, x, path, opset, dynamic=False, slim=False, outputs=("y",)):
    import inspect
    import warnings
    kwargs = dict(input_names=["x"], output_names=list(outputs), opset_version=opset, do_constant_folding=True)
    if dynamic:
        kwargs["dynamic_axes"] = dict([("x", {0: "b"})] + [(o, {0: "b"}) for o in outputs])
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module.eval(), (x,), path, **kwargs)
    model = onnx.load(path)
    if slim:
        from mobilevit_trt.export import simplify
        model = simplify(model)
    return model


def _matches_torch(module, fused, shape, batches):
    rng = np.random.default_rng(5)
    for b in batches:
        x = rng.standard_normal((b,) + tuple(shape[1:])).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x))
        want = list(want) if isinstance(want, (tuple, list)) else [want]
        got = run_with_reference_ops(fused, {"x": x})
        for g_, w_ in zip(got, want):
            assert g_.shape == tuple(w_.shape)
            assert float(np.abs(g_ - w_.numpy()).max()) <= ATOL


class Attn(torch.nn.Module):
    """Self-attention on x [b, n, dim] in several spellings, with optional deliberate deviations (``quirk``)."""

    def __init__(self, mode="sdpa", proj="packed", quirk=None, dim=24, heads=3, scale=None, n=10):
        super(Attn, self).__init__()
        self.mode, self.proj, self.quirk = mode, proj, quirk
        self.h, self.d, self.scale = heads, dim // heads, scale
        if proj == "packed":
            self.qkv = torch.nn.Linear(dim, 3 * dim)
        else:
            self.q, self.k, self.v = [torch.nn.Linear(dim, dim) for _ in range(3)]
        self.register_buffer("vec", torch.linspace(0.5, 1.5, n))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 if p.dim() > 1 else 0.1))

    def forward(self, x):
        b, n, c = x.shape
        h, d = self.h, self.d
        if self.proj == "packed":
            qkv = self.qkv(x)
            if self.proj == "packed" and self.mode == "chunk":
                q, k, v = [t.reshape(b, n, h, d).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]
            else:
                q, k, v = qkv.reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = [f(x).view(b, n, -1, d).transpose(1, 2) for f in (self.q, self.k, self.v)]
        if self.quirk == "qk_mismatch":            # K split 'n (d h)': not the layout Q has
            k = self.k(x).view(b, n, d, h).permute(0, 3, 1, 2)
        extra = []
        if self.mode == "sdpa":
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            s = self.scale if self.scale is not None else d ** -0.5
            kt = k if self.quirk == "k_not_transposed" else k.transpose(-2, -1)
            if self.mode == "scale_q":
                scores = (q * s) @ kt
            elif self.mode == "div_scores":
                scores = (q @ kt) / (1.0 / s)
            else:                                     # "mul_scores" and "chunk"
                scores = (q @ kt) * s
            if self.quirk == "vector_scale":
                scores = scores * self.vec
            if self.quirk == "mask":
                scores = scores + self.vec
            attn = torch.softmax(scores, dim=-2 if self.quirk == "softmax_axis" else -1)
            if self.quirk == "probs_used":
                extra = [attn]
            out = attn @ v
        y = out.transpose(1, 2).reshape(b, n, h * d)
        return tuple([y] + extra) if extra else y


@pytest.mark.parametrize("opset", list(range(14, 22)))
@pytest.mark.parametrize("dynamic,slim", [(False, False), (True, True)])
def test_sdpa_every_opset(opset, dynamic, slim, tmp_path):
    """scaled_dot_product_attention as the TorchScript exporter writes it at each opset (raw: the scale computed
    from Shape(q) and split as sqrt(scale) on Q and K^T; slimmed: folded constants), custom scale, 3 heads."""
    module = Attn("sdpa", "packed", scale=0.3)
    x = torch.randn(2, 10, 24)
    model = _export_small(module, x, str(tmp_path / "m.onnx"), opset, dynamic, slim)
    fused, report = surgery.add_plugins(model, ["attention"])
    rec = report["fusions"][0]
    assert report["counts"][ATT_OP] == 1 and report["rejected"] == []
    assert (rec["num_heads"], rec["head_dim"], rec["input_form"]) == (3, 8, "packed_qkv")
    assert rec["scale"] == pytest.approx(0.3, rel=1e-6)
    assert len(rec["scale_factors"]) == 2 and all(f["factor"] == pytest.approx(0.3 ** 0.5, rel=1e-6)
                                                   for f in rec["scale_factors"])
    assert [n.op_type for n in fused.graph.node].count("Transpose") == 0
    surgery.check_fused(fused)
    _matches_torch(module, fused, (2, 10, 24), DYNAMIC_BATCHES if dynamic else (2,))


@pytest.mark.parametrize("mode,proj,opset", [("scale_q", "packed", 13), ("div_scores", "separate", 13),
                                             ("mul_scores", "separate", 17), ("chunk", "packed", 13),
                                             ("sdpa", "separate", 17), ("scale_q", "separate", 18)])
def test_attention_spellings(mode, proj, opset, tmp_path):
    module = Attn(mode, proj)
    x = torch.randn(2, 10, 24)
    fused, report = surgery.add_plugins(_export_small(module, x, str(tmp_path / "m.onnx"), opset, True),
                                        ["attention"])
    rec = report["fusions"][0]
    assert report["counts"][ATT_OP] == 1
    assert (rec["num_heads"], rec["head_dim"]) == (3, 8)
    assert rec["input_form"] == ("packed_qkv" if proj == "packed" else "q_k_v")
    assert rec["scale"] == pytest.approx(8 ** -0.5, rel=1e-6)
    surgery.check_fused(fused)
    _matches_torch(module, fused, (2, 10, 24), DYNAMIC_BATCHES)


NEAR_MISSES = [
    # quirk, proj, n, reason (a substring of the rejection)
    ("softmax_axis", "packed", 10, "not over the last axis"),
    ("vector_scale", "packed", 10, "not a scalar"),
    ("mask", "packed", 10, "not from a Q.K^T MatMul"),
    ("qk_mismatch", "separate", 10, "k rearrange is not the head split"),
    ("k_not_transposed", "packed", 8, "K is not transposed"),
    ("probs_used", "packed", 10, "used outside the pattern"),
]


@pytest.mark.parametrize("quirk,proj,n,reason", NEAR_MISSES, ids=[q[0] for q in NEAR_MISSES])
def test_near_misses_stay_unfused_and_say_why(quirk, proj, n, reason, tmp_path):
    module = Attn("mul_scores", proj, quirk=quirk, n=n)
    x = torch.randn(2, n, 24)
    outputs = ("y", "p") if quirk == "probs_used" else ("y",)
    model = _export_small(module, x, str(tmp_path / "m.onnx"), 13, outputs=outputs)
    softmax = [nd.name for nd in model.graph.node if nd.op_type == "Softmax"]
    assert len(softmax) == 1
    fused, report = surgery.add_plugins(model, ["attention"], allow_missing=True)
    assert report["counts"][ATT_OP] == 0
    assert [nd.op_type for nd in fused.graph.node].count("Softmax") == 1
    assert [(r["anchor"], r["op"]) for r in report["rejected"]] == [(softmax[0], "Softmax")]
    assert reason in report["rejected"][0]["reason"]
    with pytest.raises(UserError) as e:
        surgery.add_plugins(model, ["attention"])
    assert softmax[0] in str(e.value) and reason in str(e.value)
    assert e.value.report["rejected"] == report["rejected"]


def test_control_without_quirk_is_fused(tmp_path):
    """The near-miss module without a quirk fuses (also at N == D, the k_not_transposed case)."""
    for n in (10, 8):
        module = Attn("mul_scores", "packed", n=n)
        x = torch.randn(2, n, 24)
        fused, report = surgery.add_plugins(_export_small(module, x, str(tmp_path / "m.onnx"), 13), ["attention"])
        assert report["counts"][ATT_OP] == 1 and report["fusions"][0]["num_heads"] == 3
        _matches_torch(module, fused, (2, n, 24), (2,))


def test_cli_report_written_when_nothing_fused(tmp_path):
    module = Attn("mul_scores", "packed", quirk="softmax_axis")
    src = str(tmp_path / "m.onnx")
    _export_small(module, torch.randn(2, 10, 24), src, 13)
    out, rep_path = str(tmp_path / "out.onnx"), str(tmp_path / "report.json")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "onnx_add_plugin.py"), "--input_path", src,
                        "--save_path", out, "--plugins", "attention", "--report", rep_path],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=300)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "not over the last axis" in r.stderr
    assert not os.path.exists(out)
    rep = json.load(open(rep_path))
    assert rep["counts"] == {ATT_OP: 0} and rep["missing"] == [ATT_OP] and rep["output"] is None
    assert len(rep["rejected"]) == 1 and "not over the last axis" in rep["rejected"][0]["reason"]
    assert "error" in rep


# ---------------------------------------------------------------------------------------------------------
# MobileViTv2: GroupNorm(1) -> MVT_LayerNorm (exact), separable attention not fused
# ---------------------------------------------------------------------------------------------------------

def test_mobilevitv2_groupnorm_fused_separable_attention_rejected(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = randomize(timm.create_model("mobilevitv2_050"))
    gns = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(gns) == 21 and all(m.num_groups == 1 for m in gns)
    path = str(tmp_path / "v2.onnx")
    export_onnx(model, path, batch=STATIC_BATCH, dynamic=False, opset=17, img_size=IMG, verify=True, log=_quiet)
    original = onnx.load(path)
    assert [n.op_type for n in original.graph.node].count("InstanceNormalization") == 21

    with pytest.raises(UserError) as e:
        surgery.add_plugins(original)
    assert "MVT_Attention" in str(e.value) and "not from a Q.K^T MatMul" in str(e.value)
    fused, report = surgery.add_plugins(original, allow_missing=True)
    assert dict(report["counts"]) == {LN_OP: 21, ATT_OP: 0}
    rej = report["rejected"]
    assert len(rej) == 9 and all(r["op"] == "Softmax" and "not from a Q.K^T MatMul" in r["reason"] for r in rej)
    lns = [r for r in report["fusions"] if r["kind"] == LN_OP]
    assert all(r["form"] == "GroupNorm(1)" and r["affine_in_graph"] == [True, True] for r in lns)
    ops = collections.Counter(n.op_type for n in fused.graph.node)
    assert ops["InstanceNormalization"] == 0 and ops["Softmax"] == 9

    # gamma / beta are the GroupNorm weight / bias expanded over each channel's P*N elements
    inits = dict((i.name, onnx.numpy_helper.to_array(i)) for i in fused.graph.initializer)
    got = sorted((inits[n.input[1]].tobytes(), inits[n.input[2]].tobytes(), round(_attr(n, "epsilon"), 9))
                 for n in fused.graph.node if n.op_type == LN_OP)
    per_channel = [int(n["channels"]) for n in lns]
    want = []
    for m in gns:
        c = m.num_channels
        reps = [k // c for k in per_channel if k % c == 0]
        want.append((m, reps))
    want_keys = set()
    for m, reps in want:
        for rep in set(reps):
            want_keys.add((np.repeat(m.weight.detach().numpy(), rep).tobytes(),
                           np.repeat(m.bias.detach().numpy(), rep).tobytes(), round(m.eps, 9)))
    assert all(k in want_keys for k in got) and len(set(got)) == 21

    fused_path = str(tmp_path / "v2_plugin.onnx")
    onnx.save(fused, fused_path)
    res = surgery.verify_fused(path, fused_path, batches=(STATIC_BATCH,), atol=ATOL, log=_quiet)
    assert res["passed"] and res["checker"] == "passed", res
