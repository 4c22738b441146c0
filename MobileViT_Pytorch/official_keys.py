"""Apple's official MobileViT weights in the forms users hold them, as timm state dicts.

timm's MobileViT (``mobilevit_xxs|xs|s``, ``mobilevitv2_050..200``) is the toolkit's model code for Apple's
architecture (:mod:`.official`); this module renames the other forms' keys to timm's:

* :func:`hf_to_timm` -- a Hugging Face ``MobileViTForImageClassification`` / ``MobileViTV2ForImageClassification``
  state dict, with the architecture read from its ``config.json`` (:func:`arch_from_hf_config`);
  :func:`read_hf_folder` reads such a folder (safetensors, or a ``.bin`` with ``weights_only=True``).
* :func:`cvnets_to_timm` -- a state dict of Apple's own training code (ml-cvnets), the size read from its shapes.
* :func:`detect_family` / :func:`timm_arch_from_state_dict` -- what a state dict is, from its key names and shapes.

Every converter is strict: each source key is used exactly once, each key of timm's model is filled, every shape
equals timm's; anything else is a :class:`~mobilevit_trt.errors.UserError` naming (up to 3 of) the missing,
unexpected and mismatched keys.  The one exception: BatchNorm's ``num_batches_tracked`` counters (unused in eval
and by timm's training) are set to 0 when the source holds none of them, as some exporters drop them.

The mappings are plain renames, with one packing: Hugging Face's MobileViT (v1) attention has separate
``query`` / ``key`` / ``value`` projections, timm's one ``qkv`` Linear whose output rows are ``[q; k; v]`` (each
``heads x head_dim``, head-major), so the three are concatenated in that order on dim 0 (weights and biases).
ml-cvnets already packs them the same way (``qkv_proj``), as does every v2 form (a 1x1 conv of ``1 + 2*d``
channels: the context-score query, then key, then value).  No weight is transposed or reshaped.
"""
import json
import os
import re

from mobilevit_trt.errors import UserError

# --- the architectures -----------------------------------------------------------------------------------------

#: Apple's MobileViT v1 sizes, as ml-cvnets (``mode``), Hugging Face (``hidden_sizes``, ``neck_hidden_sizes``,
#: ``expand_ratio``: apple/mobilevit-xx-small's config sets 2.0, the other two keep the default 4.0) and timm
#: (``dim``: the stage-5 transformer width, ``stages.4.1.conv_1x1.weight``'s rows) name them
V1_ARCHS = {
    "mobilevit_xxs": {"cvnets": "xx_small", "hidden_sizes": (64, 80, 96),
                      "neck_hidden_sizes": (16, 16, 24, 48, 64, 80, 320), "expand_ratio": 2.0, "dim": 96},
    "mobilevit_xs": {"cvnets": "x_small", "hidden_sizes": (96, 120, 144),
                     "neck_hidden_sizes": (16, 32, 48, 64, 80, 96, 384), "expand_ratio": 4.0, "dim": 144},
    "mobilevit_s": {"cvnets": "small", "hidden_sizes": (144, 192, 240),
                    "neck_hidden_sizes": (16, 32, 64, 96, 128, 160, 640), "expand_ratio": 4.0, "dim": 240},
}
#: MobileViTv2: timm name -> width multiplier (the stage-5 attention width is 256 x the multiplier)
V2_WIDTHS = {"mobilevitv2_050": 0.5, "mobilevitv2_075": 0.75, "mobilevitv2_100": 1.0, "mobilevitv2_125": 1.25,
             "mobilevitv2_150": 1.5, "mobilevitv2_175": 1.75, "mobilevitv2_200": 2.0}

_V1_BY_DIM = {cfg["dim"]: name for name, cfg in V1_ARCHS.items()}
_V2_BY_DIM = {int(round(256 * w)): name for name, w in V2_WIDTHS.items()}

FAMILY_NAMES = {
    "timm": "a timm MobileViT state dict",
    "hf": "a Hugging Face MobileViT state dict",
    "cvnets": "an ml-cvnets MobileViT checkpoint",
    "original": "the original project's MobileViT checkpoint",
}

# --- what a state dict is ---------------------------------------------------------------------------------------

# (family, a key that marks it, what it is): the first match wins
_MARKERS = (
    ("timm", "stem.conv.weight", "timm MobileViT"),
    ("timm", "stages.0.0.conv1_1x1.conv.weight", "timm MobileViT"),
    ("hf", "mobilevit.conv_stem.convolution.weight", "Hugging Face MobileViTForImageClassification"),
    ("hf", "mobilevitv2.conv_stem.convolution.weight", "Hugging Face MobileViTV2ForImageClassification"),
    ("hf", "conv_stem.convolution.weight", "Hugging Face MobileViT backbone (MobileViTModel, no classifier)"),
    ("cvnets", "conv_1.block.conv.weight", "ml-cvnets MobileViT"),
    ("cvnets", "encoder.conv_1.block.conv.weight", "ml-cvnets MobileViT segmentation model"),
    ("original", "stem.0.weight", "the original project's MobileViT"),
    ("original", "stage4.2.weight", "the original project's MobileViT"),
)


def detect_family(state_dict):
    """``(family, description)``: family one of ``"timm"``, ``"hf"``, ``"cvnets"``, ``"original"`` or None (not a
    MobileViT this toolkit reads), from the key names; the description is a short phrase for messages, e.g.
    ``"ml-cvnets MobileViT: key 'conv_1.block.conv.weight'"``."""
    keys = list(state_dict)
    present = set(keys)
    for family, marker, what in _MARKERS:
        if marker in present:
            if family == "cvnets" and marker.startswith("conv_1.") and _is_cvnets_v2(present):
                what = "ml-cvnets MobileViTv2"
            return family, "%s: key %r" % (what, marker)
    if not keys:
        return None, "it holds no tensors"
    shown = ", ".join(repr(k) for k in keys[:3])
    return None, "its first keys: %s%s" % (shown, " ..." if len(keys) > 3 else "")


def _is_cvnets_v2(keys):
    return any(".pre_norm_attn." in k for k in keys) or "classifier.1.weight" in keys


def timm_arch_from_state_dict(state_dict):
    """``(timm name, num_classes)`` of a timm-keyed MobileViT state dict, from its shapes: the name is None when
    the shapes match no size; num_classes is ``head.fc.weight``'s rows (0: no classifier)."""
    w = state_dict.get("head.fc.weight")
    num_classes = int(w.shape[0]) if w is not None and w.dim() == 2 else 0
    proj = state_dict.get("stages.4.1.conv_1x1.weight")
    if proj is None or proj.dim() != 4:
        return None, num_classes
    dim = int(proj.shape[0])
    if "stages.4.1.transformer.0.attn.qkv.weight" in state_dict:
        return _V1_BY_DIM.get(dim), num_classes
    if "stages.4.1.transformer.0.attn.qkv_proj.weight" in state_dict:
        return _V2_BY_DIM.get(dim), num_classes
    return None, num_classes


def _check_family(state_dict, wanted, what):
    family, description = detect_family(state_dict)
    if family == wanted:
        return description
    if family is None:
        raise UserError("%s: this is not a MobileViT state dict of any family this toolkit reads (%s)"
                        % (what, description))
    hint = {
        "hf": "pass the Hugging Face folder (config.json + model.safetensors or pytorch_model.bin), whose "
              "config.json says the architecture",
        "cvnets": "read it as an ml-cvnets checkpoint (--model cvnets)",
        "timm": "it already has timm's key names: load it as a timm state dict (--model timm:<name>)",
        "original": "read it as the original project's model (--model original)",
    }[family]
    raise UserError("%s: this looks like %s (%s), not %s: %s"
                    % (what, FAMILY_NAMES[family], description, FAMILY_NAMES[wanted], hint))


# --- Hugging Face -----------------------------------------------------------------------------------------------

_HF_CLASSES = {"mobilevit": "MobileViTForImageClassification", "mobilevitv2": "MobileViTV2ForImageClassification"}


def arch_from_hf_config(config):
    """``(timm name, num_classes, image_size)`` from a Hugging Face ``config.json`` dict of a
    ``MobileViTForImageClassification`` (Apple's XXS/XS/S) or ``MobileViTV2ForImageClassification`` (width
    0.5..2.0); a UserError naming what is unsupported otherwise (another model type, a segmentation or backbone
    model, sizes or settings Apple's models and timm's code do not have)."""
    if not isinstance(config, dict):
        raise UserError("the Hugging Face config is not a JSON object")
    model_type = config.get("model_type")
    if model_type not in _HF_CLASSES:
        raise UserError("the Hugging Face config has model_type %r: only MobileViT (mobilevit) and MobileViTV2 "
                        "(mobilevitv2) image classifiers are read" % (model_type,))
    archs = config.get("architectures") or []
    wanted = _HF_CLASSES[model_type]
    if archs and wanted not in archs:
        raise UserError("the Hugging Face folder holds %s: only %s (an image classifier) is read; segmentation "
                        "models and backbones without a classifier are not supported" % ("/".join(archs), wanted))
    if model_type == "mobilevit":
        name = _hf_v1_name(config)
    else:
        name = _hf_v2_name(config)
    id2label = config.get("id2label")
    num_classes = len(id2label) if isinstance(id2label, dict) and id2label else int(config.get("num_labels", 2))
    image_size = config.get("image_size", 256)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise UserError("the Hugging Face config has a non-square image_size %r" % (image_size,))
        image_size = image_size[0]
    return name, int(num_classes), int(image_size)


def _hf_common_checks(config, what, act_names):
    fixed = (("num_channels", 3), ("patch_size", 2), ("conv_kernel_size", 3), ("output_stride", 32),
             ("layer_norm_eps", 1e-5))
    for key, value in fixed:
        if key in config and config[key] != value:
            raise UserError("the Hugging Face %s config has %s=%r: timm's model (Apple's architecture) has %r"
                            % (what, key, config[key], value))
    act = config.get("hidden_act", act_names[0])
    if act not in act_names:
        raise UserError("the Hugging Face %s config has hidden_act=%r: timm's model uses SiLU (%s)"
                        % (what, act, "/".join(act_names)))


def _hf_v1_name(config):
    _hf_common_checks(config, "MobileViT", ("silu", "swish"))
    hidden = tuple(config.get("hidden_sizes", V1_ARCHS["mobilevit_s"]["hidden_sizes"]))
    neck = tuple(config.get("neck_hidden_sizes", V1_ARCHS["mobilevit_s"]["neck_hidden_sizes"]))
    for name, cfg in V1_ARCHS.items():
        if hidden == cfg["hidden_sizes"] and neck == cfg["neck_hidden_sizes"]:
            break
    else:
        raise UserError("the Hugging Face MobileViT config has hidden_sizes=%s, neck_hidden_sizes=%s: not one of "
                        "Apple's MobileViT sizes (%s)" % (list(hidden), list(neck), ", ".join(
                            "%s: %s / %s" % (n, list(c["hidden_sizes"]), list(c["neck_hidden_sizes"]))
                            for n, c in V1_ARCHS.items())))
    expand = float(config.get("expand_ratio", 4.0))
    if expand != cfg["expand_ratio"]:
        raise UserError("the Hugging Face MobileViT config has %s's sizes but expand_ratio=%g: Apple's %s (and "
                        "timm's) uses %g" % (name, expand, name, cfg["expand_ratio"]))
    for key, value in (("num_attention_heads", 4), ("mlp_ratio", 2.0), ("qkv_bias", True)):
        if key in config and config[key] != value:
            raise UserError("the Hugging Face MobileViT config has %s=%r: timm's %s has %r"
                            % (key, config[key], name, value))
    return name


def _hf_v2_name(config):
    _hf_common_checks(config, "MobileViTV2", ("swish", "silu"))
    width = float(config.get("width_multiplier", 1.0))
    names = [n for n, w in V2_WIDTHS.items() if abs(w - width) < 1e-9]
    if not names:
        raise UserError("the Hugging Face MobileViTV2 config has width_multiplier=%g: timm has %s"
                        % (width, ", ".join("%g (%s)" % (w, n) for n, w in V2_WIDTHS.items())))
    name = names[0]
    for key, value in (("n_attn_blocks", [2, 4, 3]), ("base_attn_unit_dims", [128, 192, 256]),
                       ("ffn_multiplier", 2), ("expand_ratio", 2.0)):
        if key not in config:
            continue
        have = list(config[key]) if isinstance(value, list) else config[key]
        if have != value:
            raise UserError("the Hugging Face MobileViTV2 config has %s=%r: timm's %s has %r"
                            % (key, config[key], name, value))
    return name


def read_hf_folder(path):
    """``(state_dict, config_dict)`` of a Hugging Face model folder: ``config.json`` and the weights, read from
    ``model.safetensors`` (or its sharded index) with safetensors, else from ``pytorch_model.bin`` (or its index)
    with ``torch.load(weights_only=True)`` -- nothing but tensors is unpickled."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise UserError("%s is not a Hugging Face model folder: it has no config.json" % path)
    try:
        with open(config_path, "r") as f:
            config = json.load(f)
    except (ValueError, OSError) as e:
        raise UserError("%s: config.json is not readable JSON: %s" % (path, e))
    for index_name, reader in (("model.safetensors", _read_safetensors), ("pytorch_model.bin", _read_bin)):
        single = os.path.join(path, index_name)
        if os.path.isfile(single):
            return reader(single), config
        index = single + ".index.json"
        if os.path.isfile(index):
            return _read_sharded(path, index, reader), config
    present = sorted(os.listdir(path))
    other = [f for f in present if f.endswith((".h5", ".msgpack", ".onnx"))]
    raise UserError("%s has no PyTorch weights (model.safetensors or pytorch_model.bin)%s" % (
        path, ": it holds %s, which are not read" % ", ".join(other) if other else ""))


def _read_safetensors(path):
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError("%s is a safetensors file: pip install safetensors" % path)
    try:
        return dict(load_file(path))
    except Exception as e:  # noqa: BLE001 - a damaged file: one line
        raise UserError("%s is not a readable safetensors file: %s" % (path, e))


def _read_bin(path):
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - not a weights-only torch file: one line
        raise UserError("%s is not a PyTorch file of tensors only (read with weights_only=True): %s"
                        % (path, str(e).splitlines()[0] if str(e) else "unreadable"))
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("%s holds no state dict of tensors" % path)
    return dict(obj)


def _read_sharded(folder, index_path, reader):
    try:
        with open(index_path, "r") as f:
            weight_map = json.load(f)["weight_map"]
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise UserError("%s is not a readable shard index: %s" % (index_path, e))
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if os.path.basename(shard) != shard or not os.path.isfile(shard_path):
            raise UserError("%s names the shard %r, which is not in %s" % (index_path, shard, folder))
        state_dict.update(reader(shard_path))
    return state_dict


def hf_to_timm(state_dict, config_dict):
    """The timm state dict of a Hugging Face MobileViT / MobileViTV2 image classifier's ``state_dict``, its
    architecture and class count from ``config_dict`` (:func:`arch_from_hf_config`); strict (module docstring)."""
    _check_family(state_dict, "hf", "the Hugging Face weights")
    name, num_classes, _ = arch_from_hf_config(config_dict)
    v2 = name in V2_WIDTHS
    prefix = "mobilevitv2." if v2 else "mobilevit."
    if not any(k.startswith(prefix) for k in state_dict):
        other = "mobilevit." if v2 else "mobilevitv2."
        raise UserError("the Hugging Face config says %s, but the weights are %s (keys %s*)" % (
            _HF_CLASSES["mobilevitv2" if v2 else "mobilevit"],
            "a backbone without classifier" if not any(k.startswith(other) for k in state_dict)
            else _HF_CLASSES["mobilevit" if v2 else "mobilevitv2"], other))
    rules = _HF_V2_RULES if v2 else _HF_V1_RULES

    def rename(key):
        if key.startswith("classifier."):
            return _apply(_HF_HEAD_RULES, key)
        if not key.startswith(prefix):
            return None
        return _apply(rules, key[len(prefix):])

    return _convert(state_dict, rename, "Hugging Face", name, num_classes)


# --- ml-cvnets --------------------------------------------------------------------------------------------------

def cvnets_to_timm(state_dict):
    """``(timm state dict, timm name)`` of an ml-cvnets MobileViT (v1 XXS/XS/S, or v2) classification
    ``state_dict``, the size detected from the tensor shapes; strict (module docstring)."""
    description = _check_family(state_dict, "cvnets", "the ml-cvnets weights")
    if any(k.startswith(("encoder.", "seg_head.")) for k in state_dict):
        raise UserError("the ml-cvnets weights are a segmentation model (%s): only classification checkpoints "
                        "(conv_1.*, layer_1..5.*, classifier.*) are read" % description)
    rules = _CV_V2_RULES if _is_cvnets_v2(set(state_dict)) else _CV_V1_RULES

    def rename(key):
        return _apply(rules, key)

    renamed = {}
    for k, v in state_dict.items():
        r = rename(k)
        if r is not None and r[1] is None:
            renamed[r[0]] = v
    name, num_classes = timm_arch_from_state_dict(renamed)
    if name is None:
        proj = state_dict.get("layer_5.1.local_rep.conv_1x1.block.conv.weight",
                              state_dict.get("layer_5.1.local_rep.1.block.conv.weight"))
        raise UserError("the ml-cvnets weights match no MobileViT size timm has (%s; stage-5 transformer width %s)"
                        % (description, tuple(proj.shape)[0] if proj is not None else "not found"))
    return _convert(state_dict, rename, "ml-cvnets", name, num_classes), name


# --- the rename rules -------------------------------------------------------------------------------------------
# Each rule: (regex on the source key, timm key template using the groups, qkv part or None).  ``{c}`` in a
# template takes the conv-or-norm group through the family's table.

_IR = {"expand_1x1": "conv1_1x1", "conv_3x3": "conv2_kxk", "reduce_1x1": "conv3_1x1",
       "exp_1x1": "conv1_1x1", "red_1x1": "conv3_1x1"}
_CN = {"convolution": "conv", "normalization": "bn", "conv": "conv", "norm": "bn"}
_HF_BLOCK = {"conv_kxk": "conv_kxk", "conv_projection": "conv_proj", "fusion": "conv_fusion"}
_HF_V1_TF = {"attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
             "layernorm_before": "norm1", "layernorm_after": "norm2"}
_HF_V2_TF = {"attention.qkv_proj.convolution": "attn.qkv_proj", "attention.out_proj.convolution": "attn.out_proj",
             "ffn.conv1.convolution": "mlp.fc1", "ffn.conv2.convolution": "mlp.fc2",
             "layernorm_before": "norm1", "layernorm_after": "norm2"}
_QKV = {"query": 0, "key": 1, "value": 2}
_CV_V1_TF = {"pre_norm_mha.0": "norm1", "pre_norm_mha.1.qkv_proj": "attn.qkv", "pre_norm_mha.1.out_proj": "attn.proj",
             "pre_norm_ffn.0": "norm2", "pre_norm_ffn.1": "mlp.fc1", "pre_norm_ffn.4": "mlp.fc2"}
_CV_V2_TF = {"pre_norm_attn.0": "norm1", "pre_norm_attn.1.qkv_proj.block.conv": "attn.qkv_proj",
             "pre_norm_attn.1.out_proj.block.conv": "attn.out_proj", "pre_norm_ffn.0": "norm2",
             "pre_norm_ffn.1.block.conv": "mlp.fc1", "pre_norm_ffn.3.block.conv": "mlp.fc2"}


def _alt(table):
    return "(%s)" % "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))


_P = r"(\w+)"  # a parameter or buffer name: weight, bias, running_mean, running_var, num_batches_tracked
_WB = r"(weight|bias)"

_HF_COMMON = [
    (r"conv_stem\.(convolution|normalization)\.%s" % _P, lambda g: "stem.%s.%s" % (_CN[g[0]], g[1])),
    (r"encoder\.layer\.([01])\.layer\.(\d+)\.%s\.(convolution|normalization)\.%s" % (_alt(_IR), _P),
     lambda g: "stages.%s.%s.%s.%s.%s" % (g[0], g[1], _IR[g[2]], _CN[g[3]], g[4])),
    (r"encoder\.layer\.([2-4])\.downsampling_layer\.%s\.(convolution|normalization)\.%s" % (_alt(_IR), _P),
     lambda g: "stages.%s.0.%s.%s.%s" % (g[0], _IR[g[1]], _CN[g[2]], g[3])),
    (r"encoder\.layer\.([2-4])\.%s\.(convolution|normalization)\.%s" % (_alt(_HF_BLOCK), _P),
     lambda g: "stages.%s.1.%s.%s.%s" % (g[0], _HF_BLOCK[g[1]], _CN[g[2]], g[3])),
    (r"encoder\.layer\.([2-4])\.conv_1x1\.convolution\.weight", lambda g: "stages.%s.1.conv_1x1.weight" % g[0]),
    (r"encoder\.layer\.([2-4])\.layernorm\.%s" % _WB, lambda g: "stages.%s.1.norm.%s" % g),
]
_HF_V1_RULES = _HF_COMMON + [
    (r"conv_1x1_exp\.(convolution|normalization)\.%s" % _P, lambda g: "final_conv.%s.%s" % (_CN[g[0]], g[1])),
    (r"encoder\.layer\.([2-4])\.transformer\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.%s" % _WB,
     lambda g: ("stages.%s.1.transformer.%s.attn.qkv.%s" % (g[0], g[1], g[3]), _QKV[g[2]])),
    (r"encoder\.layer\.([2-4])\.transformer\.layer\.(\d+)\.%s\.%s" % (_alt(_HF_V1_TF), _WB),
     lambda g: "stages.%s.1.transformer.%s.%s.%s" % (g[0], g[1], _HF_V1_TF[g[2]], g[3])),
]
_HF_V2_RULES = _HF_COMMON + [
    (r"encoder\.layer\.([2-4])\.transformer\.layer\.(\d+)\.%s\.%s" % (_alt(_HF_V2_TF), _WB),
     lambda g: "stages.%s.1.transformer.%s.%s.%s" % (g[0], g[1], _HF_V2_TF[g[2]], g[3])),
]
_HF_HEAD_RULES = [(r"classifier\.%s" % _WB, lambda g: "head.fc.%s" % g[0])]

_CV_COMMON = [
    (r"conv_1\.block\.(conv|norm)\.%s" % _P, lambda g: "stem.%s.%s" % (_CN[g[0]], g[1])),
    (r"layer_([1-5])\.(\d+)\.block\.%s\.block\.(conv|norm)\.%s" % (_alt(_IR), _P),
     lambda g: "stages.%d.%s.%s.%s.%s" % (int(g[0]) - 1, g[1], _IR[g[2]], _CN[g[3]], g[4])),
    (r"layer_([3-5])\.1\.(conv_proj|fusion)\.block\.(conv|norm)\.%s" % _P,
     lambda g: "stages.%d.1.%s.%s.%s" % (int(g[0]) - 1, "conv_proj" if g[1] == "conv_proj" else "conv_fusion",
                                         _CN[g[2]], g[3])),
    (r"layer_([3-5])\.1\.global_rep\.(\d+)\.%s" % _WB,  # the LayerNorm after the last transformer block
     lambda g: "stages.%d.1.norm.%s" % (int(g[0]) - 1, g[2])),
]
_CV_V1_RULES = _CV_COMMON + [
    (r"layer_([3-5])\.1\.local_rep\.conv_3x3\.block\.(conv|norm)\.%s" % _P,
     lambda g: "stages.%d.1.conv_kxk.%s.%s" % (int(g[0]) - 1, _CN[g[1]], g[2])),
    (r"layer_([3-5])\.1\.local_rep\.conv_1x1\.block\.conv\.weight",
     lambda g: "stages.%d.1.conv_1x1.weight" % (int(g[0]) - 1)),
    (r"layer_([3-5])\.1\.global_rep\.(\d+)\.%s\.%s" % (_alt(_CV_V1_TF), _WB),
     lambda g: "stages.%d.1.transformer.%s.%s.%s" % (int(g[0]) - 1, g[1], _CV_V1_TF[g[2]], g[3])),
    (r"conv_1x1_exp\.block\.(conv|norm)\.%s" % _P, lambda g: "final_conv.%s.%s" % (_CN[g[0]], g[1])),
    (r"classifier\.fc\.%s" % _WB, lambda g: "head.fc.%s" % g[0]),
]
_CV_V2_RULES = _CV_COMMON + [
    (r"layer_([3-5])\.1\.local_rep\.0\.block\.(conv|norm)\.%s" % _P,
     lambda g: "stages.%d.1.conv_kxk.%s.%s" % (int(g[0]) - 1, _CN[g[1]], g[2])),
    (r"layer_([3-5])\.1\.local_rep\.1\.block\.conv\.weight",
     lambda g: "stages.%d.1.conv_1x1.weight" % (int(g[0]) - 1)),
    (r"layer_([3-5])\.1\.global_rep\.(\d+)\.%s\.%s" % (_alt(_CV_V2_TF), _WB),
     lambda g: "stages.%d.1.transformer.%s.%s.%s" % (int(g[0]) - 1, g[1], _CV_V2_TF[g[2]], g[3])),
    (r"classifier\.1\.%s" % _WB, lambda g: "head.fc.%s" % g[0]),
]


def _compile(rules):
    return [(re.compile(pattern + "$"), make) for pattern, make in rules]


_HF_V1_RULES, _HF_V2_RULES, _HF_HEAD_RULES, _CV_V1_RULES, _CV_V2_RULES = (
    _compile(r) for r in (_HF_V1_RULES, _HF_V2_RULES, _HF_HEAD_RULES, _CV_V1_RULES, _CV_V2_RULES))


def _apply(rules, key):
    """``(timm key, qkv part or None)`` for ``key``, or None when no rule takes it."""
    for pattern, make in rules:
        m = pattern.match(key)
        if m:
            out = make(m.groups())
            return out if isinstance(out, tuple) else (out, None)
    return None


# --- the strict conversion --------------------------------------------------------------------------------------

_SHAPES = {}


def timm_shapes(name, num_classes):
    """``{key: shape}`` of timm's ``name`` with ``num_classes`` outputs (built on the meta device: no weights)."""
    cache_key = (name, int(num_classes))
    if cache_key not in _SHAPES:
        import torch

        from .official import _import_timm
        timm = _import_timm()
        device = getattr(torch, "device", None)
        try:
            with device("meta"):
                model = timm.create_model(name, pretrained=False, num_classes=int(num_classes))
        except (TypeError, AttributeError, RuntimeError, NotImplementedError):  # torch < 2.0: no device context
            model = timm.create_model(name, pretrained=False, num_classes=int(num_classes))
        _SHAPES[cache_key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES[cache_key]


def _convert(state_dict, rename, source, name, num_classes):
    """Rename ``state_dict`` with ``rename`` (see :func:`_apply`) and check the result against timm's ``name``."""
    import torch

    target = timm_shapes(name, num_classes)
    out, origin, parts = {}, {}, {}
    unexpected, duplicate = [], []
    for key, value in state_dict.items():
        r = rename(key)
        if r is None or r[0] not in target:
            unexpected.append(key)
            continue
        timm_key, part = r
        if part is None:
            if timm_key in out or timm_key in parts:
                duplicate.append("%s (-> %s, also from %s)" % (key, timm_key, origin.get(timm_key, "q/k/v")))
                continue
            out[timm_key], origin[timm_key] = value, key
        else:
            slot = parts.setdefault(timm_key, {})
            if part in slot or timm_key in out:
                duplicate.append("%s (-> %s)" % (key, timm_key))
                continue
            slot[part] = (key, value)
    mismatched = []
    for timm_key, slot in parts.items():
        if sorted(slot) != [0, 1, 2]:
            have = [slot[i][0] for i in sorted(slot)]
            mismatched.append("%s (only %s of query/key/value: %s)" % (timm_key, len(have), ", ".join(have)))
            continue
        pieces = [slot[i][1] for i in range(3)]
        if len(set(tuple(p.shape) for p in pieces)) != 1:
            mismatched.append("%s (query/key/value shapes %s)" % (timm_key, [tuple(p.shape) for p in pieces]))
            continue
        out[timm_key] = torch.cat(pieces, dim=0)  # timm's qkv rows: [q; k; v]
        origin[timm_key] = "+".join(slot[i][0] for i in range(3))
    if not any(k.endswith("num_batches_tracked") for k in out):
        for k in target:
            if k.endswith("num_batches_tracked"):
                out[k] = torch.tensor(0, dtype=torch.long)
                origin[k] = "(filled)"
    missing = [k for k in target if k not in out and not any(k == m.split(" ", 1)[0] for m in mismatched)]
    mismatched += ["%s (%s %s, timm %s)" % (k, origin[k], tuple(out[k].shape), target[k])
                   for k in target if k in out and tuple(out[k].shape) != target[k]]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("duplicate", duplicate),
                        ("mismatched", mismatched)):
        if items:
            more = " ... (+%d more)" % (len(items) - 3) if len(items) > 3 else ""
            problems.append("%d %s key(s): %s%s" % (len(items), what, ", ".join(items[:3]), more))
    if problems:
        raise UserError("the %s weights do not fit timm's %s (%d classes): %s"
                        % (source, name, num_classes, "; ".join(problems)))
    return {k: out[k] for k in target}
