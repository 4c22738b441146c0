"""Apple's official MobileViT weights in every form, converted to timm's keys (MobileViT_Pytorch/official_keys.py).

Proof of identity: the source library's own model and timm's model, holding the same (random, seeded, non-trivial)
weights after the conversion, give the same logits on the same input (FP32, eval mode, max |diff| <= 1e-5).

* Hugging Face: transformers' ``MobileViTForImageClassification`` (XXS, XS, S) and
  ``MobileViTV2ForImageClassification``, from the state dict and through real folders (safetensors, sharded
  safetensors, ``pytorch_model.bin``).  Seen: ~1e-8 (timm's fused attention vs transformers' explicit matmuls).
* ml-cvnets: Apple's own model code is not on PyPI (the PyPI package named ``cvnets`` is an unrelated library),
  so :func:`test_cvnets_equals_mlcvnets_model` runs only where a checkout of apple/ml-cvnets is importable
  (``PYTHONPATH=/path/to/ml-cvnets``; it also needs ``requests``) and is skipped otherwise.  Seen there: 0.0
  with timm's explicit attention, ~1e-7 with its fused one, v1 XXS/XS/S and v2.  Always run:
  :func:`test_cvnets_equals_transformers_model` -- ml-cvnets key names made from a transformers model's state
  dict by inverting the renames of transformers' ml-cvnets conversion script (q/k/v packed back into
  ``qkv_proj``), converted by :func:`cvnets_to_timm`, compared with that transformers model; the names it
  makes are checked against the real ml-cvnets model's state dict in the test above where that can run.
"""
import json
import os

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from MobileViT_Pytorch import official  # noqa: E402
from MobileViT_Pytorch import official_keys as K  # noqa: E402
from mobilevit_trt.errors import UserError  # noqa: E402

ATOL = 1e-5

HF_SIZES = {  # Apple's configs as transformers' ml-cvnets conversion script writes them (apple/mobilevit-*)
    "mobilevit_xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320],
                          expand_ratio=2.0, hidden_dropout_prob=0.05),
    "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": {},
}
CVNETS_MODES = {"mobilevit_xxs": "xx_small", "mobilevit_xs": "x_small", "mobilevit_s": "small"}


@pytest.fixture(autouse=True)
def _deterministic():
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


def _randomize(model, seed=1):
    """Every float parameter and buffer seeded-random at a scale that keeps activations O(1): conv/linear weights
    N(0, 1/fan_in), norm scales and BN variances in [0.5, 1.5), biases and means N(0, 0.1^2); so a swapped,
    transposed or misplaced tensor changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if key.endswith("running_var") or (t.dim() == 1 and key.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / (t[0].numel() ** 0.5))
    return model.eval()


def _x(size, batch=2, seed=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _timm_models(name, sd, num_classes):
    """timm's own model (its default attention: fused where available) and the toolkit's (explicit attention),
    both loaded strictly with ``sd``."""
    ref = timm.create_model(name, pretrained=False, num_classes=num_classes)
    ref.load_state_dict(sd, strict=True)
    mine = official.create_model(name, num_classes)
    mine.load_state_dict(sd, strict=True)
    return ref.eval(), mine.eval()


def _max_diff(a, b):
    return float((a - b).abs().max())


def _assert_same_logits(reference, name, sd, num_classes, sizes):
    """``reference(x)`` equals timm's logits, for timm's model and the toolkit's, at every input size; returns
    the largest difference seen."""
    worst = 0.0
    for model in _timm_models(name, sd, num_classes):
        for size in sizes:
            x = _x(size)
            with torch.no_grad():
                want, got = reference(x), model(x)
            assert got.shape == (2, num_classes)
            assert float(want.abs().max()) > 0.05  # the comparison is not between near-zero outputs
            diff = _max_diff(want, got)
            assert diff <= ATOL, "%s at %d: max |diff| %g" % (name, size, diff)
            worst = max(worst, diff)
    return worst


def _hf_v1(name, num_classes, image_size=256, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.MobileViTConfig(num_labels=num_classes, image_size=image_size, **HF_SIZES[name])
    return _randomize(transformers.MobileViTForImageClassification(cfg), seed + 1)


def _hf_v2(width, num_classes, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.MobileViTV2Config(num_labels=num_classes, width_multiplier=width)
    return _randomize(transformers.MobileViTV2ForImageClassification(cfg), seed + 1)


def _hf_config(hf):
    config = hf.config.to_dict()
    config["architectures"] = [type(hf).__name__]  # as save_pretrained writes it
    return config


def _hf_logits(hf):
    def run(x):
        return hf(pixel_values=x).logits
    return run


# --- Hugging Face -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,num_classes,image_size", [("mobilevit_xxs", 7, 224), ("mobilevit_xs", 10, 256),
                                                         ("mobilevit_s", 5, 224)])
def test_hf_state_dict_equals_transformers(name, num_classes, image_size):
    hf = _hf_v1(name, num_classes, image_size)
    config = _hf_config(hf)
    assert K.arch_from_hf_config(config) == (name, num_classes, image_size)
    sd = K.hf_to_timm(hf.state_dict(), config)
    assert K.timm_arch_from_state_dict(sd) == (name, num_classes)
    _assert_same_logits(_hf_logits(hf), name, sd, num_classes, (image_size, 256 if image_size != 256 else 192))


@pytest.mark.parametrize("width,name", [(0.5, "mobilevitv2_050"), (0.75, "mobilevitv2_075")])
def test_hf_v2_state_dict_equals_transformers(width, name):
    """At input sizes that are multiples of 64 only: where a stage's feature map is odd (224: 7x7 at stride 32),
    ml-cvnets and timm resize it to a whole number of 2x2 patches (bilinear, align_corners=True, 8x8 out) while
    transformers' MobileViTV2 unfolds it as it is (F.unfold drops the last row and column): a difference of the
    model code (max |diff| ~0.5 at 224), not of the weights; timm equals ml-cvnets there (see the test below)."""
    hf = _hf_v2(width, 6)
    config = _hf_config(hf)
    assert K.arch_from_hf_config(config) == (name, 6, 256)
    sd = K.hf_to_timm(hf.state_dict(), config)
    assert K.timm_arch_from_state_dict(sd) == (name, 6)
    _assert_same_logits(_hf_logits(hf), name, sd, 6, (256, 192))


@pytest.mark.parametrize("form", ["safetensors", "sharded", "bin"])
def test_hf_folder_round_trip(tmp_path, form):
    """A real folder: save_pretrained's config.json + model.safetensors (one file, or shards with their index),
    or config.json + pytorch_model.bin (torch.save: transformers 5 writes safetensors only)."""
    hf = _hf_v1("mobilevit_xxs", 4, 224)
    folder = str(tmp_path / "hf")
    if form == "safetensors":
        hf.save_pretrained(folder)
    elif form == "sharded":
        hf.save_pretrained(folder, max_shard_size="300KB")
        assert os.path.isfile(os.path.join(folder, "model.safetensors.index.json"))
    else:
        os.makedirs(folder)
        hf.config.save_pretrained(folder)
        torch.save(hf.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    sd, config = K.read_hf_folder(folder)
    assert set(sd) == set(hf.state_dict())
    assert K.arch_from_hf_config(config) == ("mobilevit_xxs", 4, 224)
    _assert_same_logits(_hf_logits(hf), "mobilevit_xxs", K.hf_to_timm(sd, config), 4, (224,))


def test_hf_folder_problems(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        K.read_hf_folder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mobilevit"}))
    (tmp_path / "tf_model.h5").write_bytes(b"\0")
    with pytest.raises(UserError, match="no PyTorch weights .*tf_model.h5"):
        K.read_hf_folder(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="pytorch_model.bin is not a PyTorch file of tensors only"):
        K.read_hf_folder(str(tmp_path))


def test_hf_config_problems():
    good = _hf_config(_hf_v1("mobilevit_xxs", 3))
    assert K.arch_from_hf_config(good)[0] == "mobilevit_xxs"
    cases = [
        (dict(expand_ratio=4.0), "expand_ratio=4: Apple's mobilevit_xxs .* uses 2"),
        (dict(hidden_sizes=[64, 80, 100]), "not one of Apple's MobileViT sizes"),
        (dict(num_attention_heads=2), "num_attention_heads=2"),
        (dict(patch_size=4), "patch_size=4"),
        (dict(architectures=["MobileViTForSemanticSegmentation"]), "segmentation models"),
        (dict(model_type="vit"), "model_type 'vit'"),
    ]
    for change, message in cases:
        config = dict(good, **change)
        with pytest.raises(UserError, match=message):
            K.arch_from_hf_config(config)
    v2 = _hf_config(_hf_v2(0.5, 3))
    with pytest.raises(UserError, match="width_multiplier=0.6: timm has"):
        K.arch_from_hf_config(dict(v2, width_multiplier=0.6))
    with pytest.raises(UserError, match="n_attn_blocks"):
        K.arch_from_hf_config(dict(v2, n_attn_blocks=[1, 4, 3]))


def test_hf_strictness():
    """A missing, an extra, a reshaped, a lone q/k/v tensor: each a UserError naming the key; a config of another
    size than the weights: the mismatched shapes."""
    hf = _hf_v1("mobilevit_xxs", 3)
    config = _hf_config(hf)
    sd = dict(hf.state_dict())
    q = "mobilevit.encoder.layer.2.transformer.layer.0.attention.attention.query.weight"
    drop = dict(sd)
    del drop["mobilevit.conv_1x1_exp.convolution.weight"]
    with pytest.raises(UserError, match="1 missing key.*final_conv.conv.weight"):
        K.hf_to_timm(drop, config)
    extra = dict(sd, **{"mobilevit.encoder.layer.2.extra.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="1 unexpected key.*mobilevit.encoder.layer.2.extra.weight"):
        K.hf_to_timm(extra, config)
    bad = dict(sd, **{"classifier.weight": torch.zeros(3, 321)})
    with pytest.raises(UserError, match="mismatched key.*head.fc.weight \\(classifier.weight \\(3, 321\\)"):
        K.hf_to_timm(bad, config)
    no_q = dict(sd)
    del no_q[q]
    with pytest.raises(UserError, match="stages.2.1.transformer.0.attn.qkv.weight \\(only 2 of query/key/value"):
        K.hf_to_timm(no_q, config)
    xs_config = dict(config, **HF_SIZES["mobilevit_xs"])
    xs_config.pop("hidden_dropout_prob")
    xs_config["expand_ratio"] = 4.0
    with pytest.raises(UserError, match="do not fit timm's mobilevit_xs .*mismatched key"):
        K.hf_to_timm(sd, xs_config)


def test_missing_bn_counters_are_filled():
    """A source without any BatchNorm num_batches_tracked (some exporters drop them) loads; they are set to 0."""
    hf = _hf_v1("mobilevit_xxs", 3)
    sd = {k: v for k, v in hf.state_dict().items() if not k.endswith("num_batches_tracked")}
    out = K.hf_to_timm(sd, _hf_config(hf))
    assert int(out["stem.bn.num_batches_tracked"]) == 0


# --- ml-cvnets --------------------------------------------------------------------------------------------------
# ml-cvnets names from a transformers state dict: the inverse of the renames in transformers'
# models/mobilevit/convert_mlcvnets_to_pytorch.py and models/mobilevitv2/convert_mlcvnets_to_pytorch.py (written
# here from reading them; they map ml-cvnets names to transformers' and split qkv_proj into query/key/value).

_CV_IR = {"expand_1x1": "exp_1x1", "conv_3x3": "conv_3x3", "reduce_1x1": "red_1x1"}
_CV_CN = {"convolution": "conv", "normalization": "norm"}


def _cvnets_names_from_hf(hf_sd, v2=False):
    """The ml-cvnets state dict holding ``hf_sd``'s tensors (a MobileViT v1 or v2 image classifier)."""
    prefix = "mobilevitv2." if v2 else "mobilevit."
    depth = {}
    for k in hf_sd:
        parts = k.split(".")
        if ".transformer.layer." in k:
            stage, block = int(parts[3]), int(parts[6])
            depth[stage] = max(depth.get(stage, 0), block + 1)
    out, qkv = {}, {}
    for k, v in hf_sd.items():
        if k.startswith("classifier."):
            out[("classifier.1." if v2 else "classifier.fc.") + k.split(".", 1)[1]] = v
            continue
        assert k.startswith(prefix), k
        p = k[len(prefix):].split(".")
        if p[0] in ("conv_stem", "conv_1x1_exp"):
            out["%s.block.%s.%s" % ("conv_1" if p[0] == "conv_stem" else p[0], _CV_CN[p[1]], p[2])] = v
            continue
        stage = int(p[2])
        layer = "layer_%d" % (stage + 1)
        rest = p[3:]
        if rest[0] == "layer" and stage < 2:          # layer.{s}.layer.{j}.<ir>.<cn>.<param>
            out["%s.%s.block.%s.block.%s.%s" % (layer, rest[1], _CV_IR[rest[2]], _CV_CN[rest[3]], rest[4])] = v
        elif rest[0] == "downsampling_layer":
            out["%s.0.block.%s.block.%s.%s" % (layer, _CV_IR[rest[1]], _CV_CN[rest[2]], rest[3])] = v
        elif rest[0] in ("conv_kxk", "conv_1x1", "conv_projection", "fusion"):
            if v2 and rest[0] in ("conv_kxk", "conv_1x1"):
                name = "local_rep.%d" % (0 if rest[0] == "conv_kxk" else 1)
            else:
                name = {"conv_kxk": "local_rep.conv_3x3", "conv_1x1": "local_rep.conv_1x1",
                        "conv_projection": "conv_proj", "fusion": "fusion"}[rest[0]]
            out["%s.1.%s.block.%s.%s" % (layer, name, _CV_CN[rest[1]], rest[2])] = v
        elif rest[0] == "layernorm":
            out["%s.1.global_rep.%d.%s" % (layer, depth[stage], rest[1])] = v
        elif rest[0] == "transformer":
            block, sub, param = rest[2], ".".join(rest[3:-1]), rest[-1]
            base = "%s.1.global_rep.%s." % (layer, block)
            if sub in ("attention.attention.query", "attention.attention.key", "attention.attention.value"):
                qkv.setdefault(base + "pre_norm_mha.1.qkv_proj." + param, {})[sub.rsplit(".", 1)[1]] = v
                continue
            table = ({"layernorm_before": "pre_norm_attn.0", "layernorm_after": "pre_norm_ffn.0",
                      "attention.qkv_proj.convolution": "pre_norm_attn.1.qkv_proj.block.conv",
                      "attention.out_proj.convolution": "pre_norm_attn.1.out_proj.block.conv",
                      "ffn.conv1.convolution": "pre_norm_ffn.1.block.conv",
                      "ffn.conv2.convolution": "pre_norm_ffn.3.block.conv"} if v2 else
                     {"layernorm_before": "pre_norm_mha.0", "layernorm_after": "pre_norm_ffn.0",
                      "attention.output.dense": "pre_norm_mha.1.out_proj", "intermediate.dense": "pre_norm_ffn.1",
                      "output.dense": "pre_norm_ffn.4"})
            out[base + table[sub] + "." + param] = v
        else:
            raise AssertionError(k)
    for k, parts in qkv.items():
        out[k] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


@pytest.mark.parametrize("name", sorted(HF_SIZES))
def test_cvnets_equals_transformers_model(name):
    hf = _hf_v1(name, 9, 224)
    cv = _cvnets_names_from_hf(hf.state_dict())
    assert K.detect_family(cv)[0] == "cvnets"
    sd, detected = K.cvnets_to_timm(cv)
    assert detected == name
    _assert_same_logits(_hf_logits(hf), name, sd, 9, (224, 256))


def test_cvnets_v2_equals_transformers_model():
    hf = _hf_v2(0.5, 9)
    cv = _cvnets_names_from_hf(hf.state_dict(), v2=True)
    assert "MobileViTv2" in K.detect_family(cv)[1]
    sd, detected = K.cvnets_to_timm(cv)
    assert detected == "mobilevitv2_050"
    _assert_same_logits(_hf_logits(hf), detected, sd, 9, (256, 192))


def _mlcvnets():
    """Apple's ml-cvnets model classes, importable when a checkout of apple/ml-cvnets is on PYTHONPATH."""
    try:
        from cvnets import modeling_arguments
        from cvnets.models.classification.mobilevit import MobileViT
        from cvnets.models.classification.mobilevit_v2 import MobileViTv2
    except ImportError as e:
        pytest.skip("Apple's ml-cvnets is not importable (put a checkout of apple/ml-cvnets on PYTHONPATH; "
                    "it is not on PyPI): %s" % e)
    return modeling_arguments, MobileViT, MobileViTv2


def _mlcvnets_model(extra, num_classes=7):
    import argparse

    modeling_arguments, MobileViT, MobileViTv2 = _mlcvnets()
    opts = modeling_arguments(argparse.ArgumentParser()).parse_args([])
    settings = {"model.classification.n_classes": num_classes, "model.normalization.name": "batch_norm",
                "model.activation.name": "swish", "model.layer.global_pool": "mean"}
    settings.update(extra)
    for k, v in settings.items():
        setattr(opts, k, v)
    cls = MobileViTv2 if "model.classification.mitv2.width_multiplier" in extra else MobileViT
    torch.manual_seed(0)
    return _randomize(cls(opts))


@pytest.mark.parametrize("name", sorted(CVNETS_MODES) + ["mobilevitv2_050", "mobilevitv2_175"])
def test_cvnets_equals_mlcvnets_model(name):
    """Apple's own model code (ml-cvnets), its state dict converted: same logits as timm's; and the names the
    always-run test makes from a transformers model are exactly this model's."""
    if name in CVNETS_MODES:
        extra = {"model.classification.mit.mode": CVNETS_MODES[name]}
    else:
        extra = {"model.classification.mitv2.width_multiplier": K.V2_WIDTHS[name]}
    ref = _mlcvnets_model(extra)
    cv = ref.state_dict()
    assert K.detect_family(cv)[0] == "cvnets"
    sd, detected = K.cvnets_to_timm(cv)
    assert detected == name
    _assert_same_logits(ref, name, sd, 7, (256, 224))
    if name in HF_SIZES:
        hf = _hf_v1(name, 7)
    elif name == "mobilevitv2_050":
        hf = _hf_v2(0.5, 7)
    else:
        return
    made = _cvnets_names_from_hf(hf.state_dict(), v2=name.startswith("mobilevitv2"))
    assert {k: tuple(v.shape) for k, v in made.items()} == {k: tuple(v.shape) for k, v in cv.items()}


def test_cvnets_strictness():
    cv = _cvnets_names_from_hf(_hf_v1("mobilevit_xs", 3).state_dict())
    drop = dict(cv)
    del drop["layer_4.1.global_rep.4.weight"]
    with pytest.raises(UserError, match="ml-cvnets weights do not fit timm's mobilevit_xs .*missing key.*"
                                        "stages.3.1.norm.weight"):
        K.cvnets_to_timm(drop)
    extra = dict(cv, **{"layer_4.1.global_rep.0.pre_norm_mha.1.extra.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="unexpected key.*pre_norm_mha.1.extra.weight"):
        K.cvnets_to_timm(extra)
    odd = dict(cv, **{"layer_5.1.local_rep.conv_1x1.block.conv.weight": torch.zeros(100, 96, 1, 1)})
    with pytest.raises(UserError, match="match no MobileViT size .*width 100"):
        K.cvnets_to_timm(odd)
    seg = {"encoder." + k: v for k, v in cv.items()}
    with pytest.raises(UserError, match="segmentation model"):
        K.cvnets_to_timm(seg)


# --- families and sizes -----------------------------------------------------------------------------------------

def _original_state_dict():
    from MobileViT_Pytorch.models import build_mobilevit
    return build_mobilevit("xxs", 256, 5).state_dict()


def test_detect_family_of_every_form():
    hf = _hf_v1("mobilevit_xxs", 3)
    timm_sd = K.hf_to_timm(hf.state_dict(), _hf_config(hf))
    forms = {"timm": timm_sd, "hf": hf.state_dict(), "cvnets": _cvnets_names_from_hf(hf.state_dict()),
             "original": _original_state_dict()}
    for family, sd in forms.items():
        found, description = K.detect_family(sd)
        assert found == family, (family, description)
    assert "MobileViTV2" in K.detect_family(_hf_v2(0.5, 3).state_dict())[1]
    assert K.detect_family({"fc.weight": torch.zeros(2, 2)}) == (None, "its first keys: 'fc.weight'")
    assert K.detect_family({})[0] is None


def test_wrong_family_names_the_family_it_looks_like():
    hf = _hf_v1("mobilevit_xxs", 3)
    config = _hf_config(hf)
    cv = _cvnets_names_from_hf(hf.state_dict())
    timm_sd = K.hf_to_timm(hf.state_dict(), config)
    with pytest.raises(UserError, match="looks like an ml-cvnets MobileViT checkpoint .*--model cvnets"):
        K.hf_to_timm(cv, config)
    with pytest.raises(UserError, match="looks like a timm MobileViT state dict .*--model timm"):
        K.hf_to_timm(timm_sd, config)
    with pytest.raises(UserError, match="looks like a Hugging Face MobileViT state dict .*config.json"):
        K.cvnets_to_timm(hf.state_dict())
    with pytest.raises(UserError, match="looks like the original project's MobileViT checkpoint .*--model original"):
        K.cvnets_to_timm(_original_state_dict())
    with pytest.raises(UserError, match="not a MobileViT state dict of any family"):
        K.cvnets_to_timm({"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(UserError, match="config says MobileViTV2ForImageClassification, but the weights are "
                                        "MobileViTForImageClassification"):
        K.hf_to_timm(hf.state_dict(), _hf_config(_hf_v2(0.5, 3)))


@pytest.mark.parametrize("name", official.TIMM_NAMES)
def test_timm_arch_from_state_dict(name):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=11)
    sd = model.state_dict()
    assert K.timm_arch_from_state_dict(sd) == (name, 11)
    head = {k: v for k, v in sd.items() if not k.startswith("head.")}
    assert K.timm_arch_from_state_dict(head) == (name, 0)
    assert set(K.timm_shapes(name, 11)) == set(sd)


def test_comparison_can_fail():
    """The logit comparison sees packing errors (each >= 100x the tolerance, seen 3e-3 .. 0.1): query and key
    swapped in one block, query and value swapped, heads interleaved instead of head-major."""
    hf = _hf_v1("mobilevit_xxs", 3)
    config = _hf_config(hf)
    x = _x(256)
    with torch.no_grad():
        want = hf(pixel_values=x).logits

    def diff(sd):
        ref, _ = _timm_models("mobilevit_xxs", sd, 3)
        with torch.no_grad():
            return _max_diff(want, ref(x))

    base = "mobilevit.encoder.layer.3.transformer.layer.0.attention.attention."
    for a, b in (("query", "key"), ("query", "value")):
        sd = dict(hf.state_dict())
        for p in ("weight", "bias"):
            sd[base + a + "." + p], sd[base + b + "." + p] = sd[base + b + "." + p], sd[base + a + "." + p]
        assert diff(K.hf_to_timm(sd, config)) > 100 * ATOL, (a, b)
    sd = K.hf_to_timm(hf.state_dict(), config)
    key = "stages.3.1.transformer.0.attn.qkv.weight"
    dim = sd[key].shape[1]
    sd[key] = sd[key].reshape(3, 4, dim // 4, dim).transpose(0, 1).reshape(3 * dim, dim)
    assert diff(sd) > 100 * ATOL
