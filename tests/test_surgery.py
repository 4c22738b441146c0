"""Graph surgery (stage 2): LayerNorm / Attention fusion on every exported MobileViT variant, checked against
PyTorch, plus near-miss patterns that must stay unfused and the command line.

References are independent of the code under test: PyTorch forward passes (tolerance 1e-4 max abs on the
logits, the same as the export stage), the PyTorch modules' own LayerNorm weights / eps / attention scale, and
hand-computed NumPy math for the reference ops.
"""
import hashlib
import itertools
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
gs = pytest.importorskip("onnx_graphsurgeon")

from MobileViT_Pytorch.checkpoint import load_model  # noqa: E402
from MobileViT_Pytorch.models import model_cfg  # noqa: E402
from MobileViT_Pytorch.models.module import MultiHeadSelfAttention, OptTransformer, Transformer  # noqa: E402
from mobilevit_trt import plugin_spec, surgery  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402
from mobilevit_trt.export import export_onnx  # noqa: E402
from mobilevit_trt.reference_ops import attention, layer_norm, run_with_reference_ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-4                      # max abs diff on the logits vs PyTorch (same as stage 1)
STATIC_BATCH = 2
DYNAMIC_BATCHES = (1, 3)
N_LAYERNORM, N_ATTENTION = 18, 9  # 9 transformer layers (2 + 4 + 3) in XXS, XS and S

VARIANTS = list(itertools.product(("xxs", "xs", "s"), (False, True), (False, True), (13, 17), (True, False)))


def _variant_id(v):
    arch, opt, dynamic, opset, simplify = v
    return "%s-%s-%s-o%d-%s" % (arch, "opt" if opt else "base", "dyn" if dynamic else "b%d" % STATIC_BATCH,
                                opset, "slim" if simplify else "raw")


def randomize(model, seed=0, ln_eps=None):
    """Deterministic non-trivial BatchNorm statistics, LayerNorm gamma/beta (not 1/0) and attention weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            elif isinstance(m, torch.nn.LayerNorm):
                c = m.normalized_shape[0]
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2 + 0.1)
                if ln_eps is not None:
                    m.eps = ln_eps
            elif isinstance(m, MultiHeadSelfAttention):
                # sharper attention than the default init (whose near-uniform softmax hides head/scale errors)
                m.to_qvk.weight.mul_(3.0)
    return model.eval()


def _quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope="session")
def mobilevit():
    """(arch, opt, ln_eps) -> randomized MobileViT (cached)."""
    cache = {}

    def get(arch, opt, ln_eps=None):
        key = (arch, opt, ln_eps)
        if key not in cache:
            model, _ = load_model(None, arch, None, 256, opt=opt, quiet=True)
            cache[key] = randomize(model, seed=1, ln_eps=ln_eps)
        return cache[key]
    return get


class CachedReference(torch.nn.Module):
    """A PyTorch model whose outputs are computed once per input and reused: the export variants of one model
    (opset 13/17, simplified or not) are all compared with the same PyTorch outputs."""

    def __init__(self, model):
        super(CachedReference, self).__init__()
        self.model = model
        self.outputs = {}

    def forward(self, x):
        key = (tuple(x.shape), hashlib.sha1(x.numpy().tobytes()).hexdigest())
        if key not in self.outputs:
            self.outputs[key] = self.model(x)
        return self.outputs[key]


@pytest.fixture(scope="session")
def torch_reference(mobilevit):
    """(arch, opt, ln_eps) -> CachedReference of the randomized MobileViT."""
    cache = {}

    def get(arch, opt, ln_eps=None):
        key = (arch, opt, ln_eps)
        if key not in cache:
            cache[key] = CachedReference(mobilevit(arch, opt, ln_eps)).eval()
        return cache[key]
    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory, mobilevit):
    """(arch, opt, dynamic, opset, simplify, ln_eps) -> path of the exported ONNX (cached per session)."""
    folder = tmp_path_factory.mktemp("surgery_exports")
    cache = {}

    def get(arch, opt, dynamic, opset, simplify, ln_eps=None):
        key = (arch, opt, dynamic, opset, simplify, ln_eps)
        if key not in cache:
            path = str(folder / ("%s%s.onnx" % (_variant_id(key[:5]), "" if ln_eps is None else "-eps%g" % ln_eps)))
            export_onnx(mobilevit(arch, opt, ln_eps), path, batch=STATIC_BATCH, dynamic=dynamic, opset=opset,
                        do_simplify=simplify, verify=False, log=_quiet)
            cache[key] = path
        return cache[key]
    return get


def _expected_scales(arch):
    cfg = model_cfg[arch]
    return sorted(d ** -0.5 for d, n in zip(cfg["d"], cfg["layers"]) for _ in range(n))


def _layernorm_params(model):
    lns = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    return [(m.weight.detach().numpy(), m.bias.detach().numpy(), m.eps) for m in lns]


def _key(a):
    return (a.size, float(a[0]))


def _fused_layernorm_params(fused):
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in fused.graph.initializer}
    out = []
    for n in fused.graph.node:
        if n.op_type == plugin_spec.LAYERNORM_OP:
            eps = [onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "epsilon"][0]
            out.append((inits[n.input[1]], inits[n.input[2]], eps))
    return out


def _check_plugin_nodes(fused):
    """Plugin nodes: default domain, exact op types, the full attribute set of plugin_spec with ONNX types."""
    expected_types = {"FLOAT": onnx.AttributeProto.FLOAT, "INT": onnx.AttributeProto.INT}
    for n in fused.graph.node:
        if n.op_type not in plugin_spec.SPECS:
            continue
        assert n.domain == ""
        names = [a.name for a in n.attribute]
        spec = plugin_spec.SPECS[n.op_type]
        assert sorted(names) == sorted(list(spec) + list(plugin_spec.PARSER_ATTRS))
        for a in n.attribute:
            if a.name in spec:
                assert a.type == expected_types[spec[a.name][0]], (n.name, a.name)
            else:
                assert onnx.helper.get_attribute_value(a).decode() == plugin_spec.PARSER_ATTRS[a.name]
        if n.op_type == plugin_spec.LAYERNORM_OP:
            assert len(n.input) == 3
        else:
            assert len(n.input) in (1, 3)


# ---------------------------------------------------------------------------------------------------------
# every exported variant
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
def test_variant_fused_and_matches_pytorch(variant, exported, mobilevit, torch_reference, tmp_path):
    arch, opt, dynamic, opset, simplify = variant
    path = exported(*variant)
    fused, report = surgery.add_plugins(onnx.load(path))
    assert dict(report["counts"]) == {"MVT_LayerNorm": N_LAYERNORM, "MVT_Attention": N_ATTENTION}
    ops = [n.op_type for n in fused.graph.node]
    # nothing of the patterns is left behind
    assert "Softmax" not in ops and "ReduceMean" not in ops and "LayerNormalization" not in ops
    _check_plugin_nodes(fused)

    model = mobilevit(arch, opt)
    att = [r for r in report["fusions"] if r["kind"] == "MVT_Attention"]
    assert all(r["input_form"] == "packed_qkv" and r["num_heads"] == 1 and r["head_dim"] == 32 for r in att)
    np.testing.assert_allclose(sorted(r["scale"] for r in att), _expected_scales(arch), rtol=1e-6)
    # gamma, beta and eps of every fused LayerNorm are exactly the PyTorch module's
    got = sorted(_fused_layernorm_params(fused), key=lambda t: _key(t[0]))
    want = sorted(_layernorm_params(model), key=lambda t: _key(t[0]))
    assert len(got) == len(want) == N_LAYERNORM
    for (g, b, e), (wg, wb, we) in zip(got, want):
        np.testing.assert_array_equal(g, wg)
        np.testing.assert_array_equal(b, wb)
        assert e == pytest.approx(we, rel=1e-6)

    fused_path = str(tmp_path / "fused.onnx")
    onnx.save(fused, fused_path)
    res = surgery.verify_fused(torch_reference(arch, opt), fused_path,
                               batches=DYNAMIC_BATCHES if dynamic else (STATIC_BATCH,), atol=ATOL, log=_quiet)
    assert res["checker"] == "passed"
    assert res["reference"] == "pytorch"
    assert res["passed"], res
    assert res["max_abs"] <= ATOL


# ---------------------------------------------------------------------------------------------------------
# eps and gamma/beta are read from the graph, and the check notices when they are wrong
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opt,opset,simplify", [(False, 13, True), (True, 13, False), (False, 17, True)])
def test_layernorm_eps_read_from_graph(opt, opset, simplify, exported, torch_reference, tmp_path):
    eps = 1e-3
    path = exported("xxs", opt, False, opset, simplify, ln_eps=eps)
    fused, report = surgery.add_plugins(onnx.load(path))
    lns = [r for r in report["fusions"] if r["kind"] == "MVT_LayerNorm"]
    assert len(lns) == N_LAYERNORM
    assert all(r["epsilon"] == pytest.approx(eps, rel=1e-6) for r in lns)
    fused_path = str(tmp_path / "fused.onnx")
    onnx.save(fused, fused_path)
    res = surgery.verify_fused(torch_reference("xxs", opt, eps), fused_path, batches=(STATIC_BATCH,), atol=ATOL,
                               log=_quiet)
    assert res["passed"], res


def _mutated(fused, fn, path):
    m = onnx.ModelProto()
    m.CopyFrom(fused)
    fn(m)
    onnx.save(m, path)
    return path


def test_verification_detects_wrong_eps_gamma_beta(exported, torch_reference, tmp_path):
    """The PyTorch comparison is sensitive enough to catch a misread eps, gamma or beta."""
    eps = 1e-3
    model = torch_reference("xxs", False, eps)
    fused, _ = surgery.add_plugins(onnx.load(exported("xxs", False, False, 13, True, ln_eps=eps)))

    def default_eps(m):
        for n in m.graph.node:
            if n.op_type == plugin_spec.LAYERNORM_OP:
                for a in n.attribute:
                    if a.name == "epsilon":
                        a.f = 1e-5

    def swap_gamma_beta(m):
        for n in m.graph.node:
            if n.op_type == plugin_spec.LAYERNORM_OP:
                n.input[1], n.input[2] = n.input[2], n.input[1]

    def identity_affine(m):
        inits = {i.name: i for i in m.graph.initializer}
        for n in m.graph.node:
            if n.op_type == plugin_spec.LAYERNORM_OP:
                for idx, value in ((1, 1.0), (2, 0.0)):
                    arr = onnx.numpy_helper.to_array(inits[n.input[idx]])
                    inits[n.input[idx]].CopyFrom(onnx.numpy_helper.from_array(np.full_like(arr, value),
                                                                              n.input[idx]))

    for fn in (default_eps, swap_gamma_beta, identity_affine):
        path = _mutated(fused, fn, str(tmp_path / (fn.__name__ + ".onnx")))
        res = surgery.verify_fused(model, path, batches=(STATIC_BATCH,), atol=ATOL, log=_quiet)
        assert not res["passed"], fn.__name__
        assert res["max_abs"] > ATOL


def test_verification_detects_wrong_scale_and_heads(exported, torch_reference, tmp_path):
    model = torch_reference("xxs", True)
    fused, _ = surgery.add_plugins(onnx.load(exported("xxs", True, False, 13, True)))

    def set_attr(name, value):
        def fn(m):
            for n in m.graph.node:
                if n.op_type == plugin_spec.ATTENTION_OP:
                    for a in n.attribute:
                        if a.name == name:
                            if a.type == onnx.AttributeProto.FLOAT:
                                a.f = value
                            else:
                                a.i = value
        fn.__name__ = "set_%s" % name
        return fn

    for fn in (set_attr("scale", 1.0), set_attr("num_heads", 2)):
        path = _mutated(fused, fn, str(tmp_path / (fn.__name__ + ".onnx")))
        res = surgery.verify_fused(model, path, batches=(STATIC_BATCH,), atol=ATOL, log=_quiet)
        assert not res["passed"], fn.__name__


# ---------------------------------------------------------------------------------------------------------
# reference ops against hand-written math
# ---------------------------------------------------------------------------------------------------------

def test_reference_ops_against_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 24)).astype(np.float32) * 3 + 1
    g = rng.standard_normal(24).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    want = torch.nn.functional.layer_norm(torch.from_numpy(x), (24,), torch.from_numpy(g), torch.from_numpy(b),
                                          eps=1e-3).numpy()
    np.testing.assert_allclose(layer_norm(x, g, b, 1e-3), want, atol=1e-5)
    y16 = layer_norm(x.astype(np.float16), g, b, 1e-3)
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16.astype(np.float32), want, atol=1e-2)

    h, d, n = 3, 8, 10
    qkv = rng.standard_normal((2, 4, n, 3 * h * d)).astype(np.float32)
    q, k, v = [torch.from_numpy(t).reshape(2, 4, n, h, d).permute(0, 1, 3, 2, 4)
               for t in np.split(qkv, 3, axis=-1)]
    ref = torch.softmax(q @ k.transpose(-1, -2) * 0.3, dim=-1) @ v
    ref = ref.permute(0, 1, 3, 2, 4).reshape(2, 4, n, h * d).numpy()
    np.testing.assert_allclose(attention([qkv], 0.3, h), ref, atol=1e-5)
    np.testing.assert_allclose(attention(np.split(qkv, 3, axis=-1), 0.3, h), ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# small modules: positive cases beyond MobileViT (multi-head, separate projections, other LN spellings)
# and near misses that must stay unfused
# ---------------------------------------------------------------------------------------------------------

def _export_small(module, x, path, opset=13, dynamic=False, outputs=("y",)):
    import inspect
    kwargs = dict(input_names=["x"], output_names=list(outputs), opset_version=opset, do_constant_folding=True)
    if dynamic:
        kwargs["dynamic_axes"] = dict([("x", {0: "b"})] + [(o, {0: "b"}) for o in outputs])
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module.eval(), (x,), path, **kwargs)
    return onnx.load(path)


def _fuse(model, kinds=("layernorm", "attention")):
    return surgery.add_plugins(model, kinds, allow_missing=True)


def _assert_matches_torch(module, fused, shape, batches=(2,)):
    rng = np.random.default_rng(5)
    for b in batches:
        x = rng.standard_normal((b,) + tuple(shape[1:])).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x))
        want = want if isinstance(want, (tuple, list)) else [want]
        got = run_with_reference_ops(fused, {"x": x})
        assert len(got) == len(want)
        for g_, w_ in zip(got, want):
            assert g_.shape == tuple(w_.shape)
            assert float(np.abs(g_ - w_.numpy()).max()) <= ATOL


def _randomize_small(module, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return module.eval()


@pytest.mark.parametrize("flavour", ["base", "opt"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_multi_head_transformer(flavour, dynamic, tmp_path):
    """The repository's Transformer / OptTransformer with 4 heads of 8: num_heads read from the rearranges."""
    torch.manual_seed(0)
    cls = Transformer if flavour == "base" else OptTransformer
    module = _randomize_small(cls(32, 1, 4, 8, 64, 0.0))
    x = torch.randn(2, 4, 16, 32)
    fused, report = _fuse(_export_small(module, x, str(tmp_path / "m.onnx"), dynamic=dynamic))
    assert dict(report["counts"]) == {"MVT_LayerNorm": 2, "MVT_Attention": 1}
    att = [r for r in report["fusions"] if r["kind"] == "MVT_Attention"][0]
    assert (att["num_heads"], att["head_dim"], att["input_form"]) == (4, 8, "packed_qkv")
    assert att["scale"] == pytest.approx(32 ** -0.5, rel=1e-6)
    surgery.check_fused(fused)
    _assert_matches_torch(module, fused, (2, 4, 16, 32), batches=(1, 3) if dynamic else (2,))


class SeparateQKV(torch.nn.Module):
    """q, k, v from three projections, scale as a Div by sqrt(d), 2 heads."""

    def __init__(self, dim=24, heads=2):
        super(SeparateQKV, self).__init__()
        self.h, self.d = heads, dim // heads
        self.q = torch.nn.Linear(dim, dim)
        self.k = torch.nn.Linear(dim, dim)
        self.v = torch.nn.Linear(dim, dim)

    def forward(self, x):                               # x [b, n, dim]
        n = x.shape[1]
        q, k, v = [t(x).reshape(-1, n, self.h, self.d).transpose(1, 2) for t in (self.q, self.k, self.v)]
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d), dim=-1)
        return (a @ v).transpose(1, 2).reshape(-1, n, self.h * self.d)


def test_separate_projections_three_inputs(tmp_path):
    module = _randomize_small(SeparateQKV())
    x = torch.randn(2, 10, 24)
    fused, report = _fuse(_export_small(module, x, str(tmp_path / "m.onnx"), dynamic=True), ["attention"])
    assert dict(report["counts"]) == {"MVT_Attention": 1}
    att = report["fusions"][0]
    assert att["input_form"] == "q_k_v" and len(att["inputs"]) == 3 and att["num_heads"] == 2
    assert att["scale"] == pytest.approx(1.0 / math.sqrt(12), rel=1e-6)
    surgery.check_fused(fused)
    _assert_matches_torch(module, fused, (2, 10, 24), batches=(1, 3))


class ManualLayerNorm(torch.nn.Module):
    """LayerNorm written out by hand, in the spellings other exporters produce."""

    def __init__(self, c=16, axis=-1, square="mul", inv="div", leak=False, affine=True):
        super(ManualLayerNorm, self).__init__()
        self.axis, self.square, self.inv, self.leak, self.affine = axis, square, inv, leak, affine
        self.weight = torch.nn.Parameter(torch.rand(c) + 0.5)
        self.bias = torch.nn.Parameter(torch.randn(c))

    def forward(self, x):
        mu = x.mean(self.axis, keepdim=True)
        d = x - mu
        sq = d * d if self.square == "mul" else d.pow(2)
        var = sq.mean(self.axis, keepdim=True)
        if self.inv == "div":
            y = d / torch.sqrt(var + 1e-2)
        else:
            y = d * torch.reciprocal(torch.sqrt(var + 1e-2))
        if self.affine:
            y = y * self.weight + self.bias
        return (y, d) if self.leak else y


@pytest.mark.parametrize("square,inv,affine,opset", [("mul", "div", True, 13), ("pow", "recip", True, 13),
                                                     ("mul", "div", False, 13), ("pow", "div", True, 18)])
def test_layernorm_spellings(square, inv, affine, opset, tmp_path):
    """Decomposed LayerNorm: Pow or Mul square, Div or Reciprocal+Mul, with/without affine, ReduceMean axes as
    attribute (opset 13) or input (opset 18)."""
    torch.manual_seed(0)
    module = ManualLayerNorm(square=square, inv=inv, affine=affine).eval()
    x = torch.randn(2, 5, 16) * 2 + 0.5
    model = _export_small(module, x, str(tmp_path / "m.onnx"), opset=opset)
    mean_inputs = [len(n.input) for n in model.graph.node if n.op_type == "ReduceMean"]
    assert mean_inputs == ([2, 2] if opset >= 18 else [1, 1])
    fused, report = _fuse(model, ["layernorm"])
    assert dict(report["counts"]) == {"MVT_LayerNorm": 1}
    rec = report["fusions"][0]
    assert rec["epsilon"] == pytest.approx(1e-2, rel=1e-6)
    assert rec["affine_in_graph"] == [affine, affine]
    assert [n.op_type for n in fused.graph.node] == ["MVT_LayerNorm"]
    _assert_matches_torch(module, fused, (2, 5, 16))


def test_layernorm_near_misses_stay_unfused(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 16)
    # (x - mean) is also a graph output
    leak = ManualLayerNorm(leak=True).eval()
    fused, report = _fuse(_export_small(leak, x, str(tmp_path / "leak.onnx"), outputs=("y", "d")), ["layernorm"])
    assert report["counts"]["MVT_LayerNorm"] == 0
    assert "ReduceMean" in [n.op_type for n in fused.graph.node]
    # normalisation over a non-last axis (C == last dim so gamma/beta still broadcast)
    axis1 = ManualLayerNorm(axis=1).eval()
    _, report = _fuse(_export_small(axis1, x, str(tmp_path / "axis1.onnx")), ["layernorm"])
    assert report["counts"]["MVT_LayerNorm"] == 0


class AttentionQuirk(torch.nn.Module):
    """Base-style attention (packed to_qvk, 2 heads) with one deliberate deviation."""

    def __init__(self, quirk, dim=16, heads=2):
        super(AttentionQuirk, self).__init__()
        self.quirk, self.h, self.d = quirk, heads, dim // heads
        self.to_qvk = torch.nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x):                               # x [b, p, n, dim]
        p, n = x.shape[1], x.shape[2]
        if self.quirk == "split":                       # exported as one Split instead of three Slices
            q, k, v = self.to_qvk(x).split(self.h * self.d, dim=-1)
        else:
            q, k, v = self.to_qvk(x).chunk(3, dim=-1)
        if self.quirk == "interleaved_heads":          # 'b p n (d h) -> b p h n d': not the plugin's layout
            q, k, v = [t.reshape(-1, p, n, self.d, self.h).permute(0, 1, 4, 2, 3) for t in (q, k, v)]
        else:
            q, k, v = [t.reshape(-1, p, n, self.h, self.d).permute(0, 1, 3, 2, 4) for t in (q, k, v)]
        s = q @ k.transpose(-1, -2) * 0.25
        a = torch.softmax(s, dim=-2 if self.quirk == "softmax_axis" else -1)
        out = (a @ v).permute(0, 1, 3, 2, 4).reshape(-1, p, n, self.h * self.d)
        return (out, s) if self.quirk == "scores_used" else out


@pytest.mark.parametrize("quirk", ["interleaved_heads", "softmax_axis", "scores_used"])
def test_attention_near_misses_stay_unfused(quirk, tmp_path):
    torch.manual_seed(0)
    module = AttentionQuirk(quirk).eval()
    x = torch.randn(2, 4, 6, 16)
    outputs = ("y", "s") if quirk == "scores_used" else ("y",)
    fused, report = _fuse(_export_small(module, x, str(tmp_path / "m.onnx"), outputs=outputs), ["attention"])
    assert report["counts"]["MVT_Attention"] == 0
    assert "Softmax" in [n.op_type for n in fused.graph.node]
    assert report["missing"] == ["MVT_Attention"]


@pytest.mark.parametrize("quirk,opset", [("none", 13), ("split", 13), ("split", 18)])
def test_attention_control_is_fused(quirk, opset, tmp_path):
    """The same module without a deviation is fused (so the near misses above fail for the right reason);
    also with a Split instead of Slices, and at opset 18."""
    torch.manual_seed(0)
    module = AttentionQuirk(quirk).eval()
    x = torch.randn(2, 4, 6, 16)
    model = _export_small(module, x, str(tmp_path / "m.onnx"), opset=opset)
    assert ("Split" in [n.op_type for n in model.graph.node]) == (quirk == "split")
    fused, report = _fuse(model, ["attention"])
    rec = report["fusions"][0]
    assert report["counts"]["MVT_Attention"] == 1
    assert (rec["num_heads"], rec["input_form"], rec["scale"]) == (2, "packed_qkv", 0.25)
    surgery.check_fused(fused)
    _assert_matches_torch(module, fused, (2, 4, 6, 16))


def test_missing_kind_is_an_error_unless_allowed(tmp_path):
    torch.manual_seed(0)
    model = _export_small(ManualLayerNorm().eval(), torch.randn(2, 5, 16), str(tmp_path / "ln.onnx"))
    with pytest.raises(UserError, match="Attention"):
        surgery.add_plugins(model, ["layernorm", "attention"])
    _, report = surgery.add_plugins(model, ["layernorm", "attention"], allow_missing=True)
    assert dict(report["counts"]) == {"MVT_LayerNorm": 1, "MVT_Attention": 0}
    with pytest.raises(UserError):
        surgery.parse_kinds("layernorm,softmax")


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "onnx_add_plugin.py")] + list(args),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)


def test_cli_help():
    r = _cli("--help")
    assert r.returncode == 0 and "--plugins" in r.stdout and "--allow-missing" in r.stdout


def test_cli_bad_inputs(tmp_path):
    out = str(tmp_path / "out.onnx")
    r = _cli("--input_path", str(tmp_path / "missing.onnx"), "--save_path", out)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "not found" in r.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a protobuf\n")
    r = _cli("--input_path", str(junk), "--save_path", out)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "error:" in r.stderr
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    r = _cli("--input_path", str(empty), "--save_path", out)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "not an ONNX model" in r.stderr
    r = _cli("--input_path", str(junk), "--save_path", out, "--plugins", "softmax")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert not os.path.exists(out)


def test_cli_missing_kind_exit_codes(tmp_path):
    src = str(tmp_path / "ln.onnx")
    torch.manual_seed(0)
    _export_small(ManualLayerNorm().eval(), torch.randn(2, 5, 16), src)
    out = str(tmp_path / "out.onnx")
    r = _cli("--input_path", src, "--save_path", out)
    assert r.returncode == 1 and "Attention" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not os.path.exists(out)
    report = str(tmp_path / "report.json")
    r = _cli("--input_path", src, "--save_path", out, "--allow-missing", "--report", report)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(out)
    rep = json.load(open(report))
    assert rep["counts"] == {"MVT_LayerNorm": 1, "MVT_Attention": 0} and rep["verify"]["passed"]


def test_cli_end_to_end_report(exported, tmp_path):
    src = exported("xxs", False, False, 13, True)
    out, report = str(tmp_path / "plugin.onnx"), str(tmp_path / "surgery.json")
    r = _cli("--input_path", src, "--save_path", out, "--report", report)
    assert r.returncode == 0, r.stderr
    assert "MVT_LayerNorm  18 fused" in r.stdout and "MVT_Attention   9 fused" in r.stdout
    verdicts = [line for line in r.stdout.splitlines() if line.startswith(("PASSED", "FAILED"))]
    assert len(verdicts) == 1 and verdicts[0].startswith("PASSED") and "|diff| <= 0.0001" in verdicts[0]
    rep = json.load(open(report))
    assert rep["counts"] == {"MVT_LayerNorm": 18, "MVT_Attention": 9}
    assert rep["verify"]["passed"] and rep["verify"]["max_abs"] <= ATOL
    assert len(rep["fusions"]) == 27
    for f in rep["fusions"]:
        assert f["node"] and f["inputs"] and f["outputs"] and f["replaced_nodes"]
    names = [n.name for n in onnx.load(out).graph.node if n.op_type in plugin_spec.SPECS]
    assert sorted(names) == sorted(f["node"] for f in rep["fusions"])
    # only the plugins asked for; a verification failure leaves no file behind
    out2 = str(tmp_path / "ln_only.onnx")
    r = _cli("--input_path", src, "--save_path", out2, "--plugins", "layernorm", "--no-verify")
    assert r.returncode == 0 and "Attention" not in r.stdout
    assert [n.op_type for n in onnx.load(out2).graph.node].count("Softmax") == 9
    out3 = str(tmp_path / "strict.onnx")
    r = _cli("--input_path", src, "--save_path", out3, "--atol", "1e-30")
    assert r.returncode == 1 and "not written" in r.stderr and not os.path.exists(out3)
    assert not [f for f in os.listdir(str(tmp_path)) if f.endswith(".tmp")]
