"""Apple's official MobileViT (the paper's model, ml-cvnets), with timm's model code.

Why timm's code: timm is the field's model library, its MobileViT is Apple's architecture (its weights were
converted from ml-cvnets), and it is what most users already hold checkpoints for.  Hugging Face folders and
ml-cvnets ``.pt`` files are converted to timm's key names (:mod:`.official_keys`) and run on the same code, so
the toolkit has one model implementation per architecture, proven equal to the source libraries' own models
(``tests/test_official_keys.py``).  timm is imported only when an official model is asked for.

* :func:`create_model` -- timm's model built with ``exportable=True``: attention written out (``q * scale``,
  ``q @ k^T``, softmax, ``@ v``) instead of ``F.scaled_dot_product_attention``, which ONNX opset 13 cannot express.
* :func:`make_export_friendly` -- the ``--opt`` model, same weights: the MobileViT blocks unfold/fold with one
  Reshape-Transpose-Reshape each (``-1`` for the batch, so a dynamic export has no shape arithmetic), and the
  transformer runs on a 2-D ``[tokens, dim]`` matrix: LayerNorm, QKV, projection and FFN are 2-D matmuls; only
  the attention itself is 3-D/4-D.  Output equal to the plain model (``tests/test_official.py``, <= 1e-5).
"""
import math
import os

from mobilevit_trt.errors import UserError

#: the pipeline's default model: timm's mobilevit_xxs trained on the default dataset (docs/ACCURACY.md)
DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights-file",
                               "mobilevit_official_xxs_default.pth.tar")

V1_NAMES = ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s")
V2_NAMES = tuple("mobilevitv2_%s" % m for m in ("050", "075", "100", "125", "150", "175", "200"))
TIMM_NAMES = V1_NAMES + V2_NAMES
SHORT_NAMES = {"xxs": "mobilevit_xxs", "xs": "mobilevit_xs", "s": "mobilevit_s"}
RANDOM_INIT_SEED = 0


def _import_timm():
    try:
        import timm
    except ImportError as e:
        raise UserError("the official MobileViT needs timm (pip install timm): %s" % e)
    return timm


def canonical_name(name):
    """``mobilevit_xs`` (also ``xs``, ``timm/mobilevit_xs.cvnets_in1k``) or a UserError naming the choices."""
    base = name.strip().lower()
    if base.startswith("timm/"):
        base = base[len("timm/"):]
    base = base.split(".", 1)[0]  # a pretrained tag: mobilevit_xs.cvnets_in1k
    base = SHORT_NAMES.get(base, base)
    if base not in TIMM_NAMES:
        raise UserError("unknown official MobileViT %r (choose from %s)" % (name, ", ".join(TIMM_NAMES)))
    return base


def is_v2(name):
    return canonical_name(name) in V2_NAMES


def pretrained_cfg(name):
    """timm's pretrained config of ``name`` (mean, std, interpolation, crop_pct, input_size), no download."""
    timm = _import_timm()
    model = timm.create_model(canonical_name(name), pretrained=False, num_classes=0)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return dict(cfg)


def create_model(name, num_classes=1000, opt=False, seed=None, explicit_attention=True):
    """timm's ``name`` (eval mode, explicit attention); ``seed``: a deterministic random initialisation.
    ``explicit_attention=False`` keeps timm's fused attention (training: same weights, faster on a GPU)."""
    import torch

    timm = _import_timm()
    name = canonical_name(name)
    kwargs = {"pretrained": False, "num_classes": int(num_classes)}
    kwargs["exportable"] = bool(explicit_attention)
    if seed is None:
        model = timm.create_model(name, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, **kwargs)
    if explicit_attention:
        _explicit_attention(model)
    model.eval()
    return make_export_friendly(model) if opt else model


def _explicit_attention(model):
    """timm versions differ in whether ``exportable=True`` reaches the attention's ``fused_attn`` flag: set it."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


# --- the export-friendly (--opt) model ---------------------------------------------------------------------

def make_export_friendly(model):
    """The ``--opt`` variant of a timm MobileViT, in place (same parameters, same state dict): every v1 MobileViT
    block gets the forward of :class:`_OptBlockMixin`.  v2 blocks (separable attention, already 1x1 convs on
    ``[B, C, P, N]``) are left as timm writes them."""
    from timm.models.mobilevit import MobileVitBlock

    opt_cls = _opt_block_class(MobileVitBlock)
    for m in model.modules():
        if type(m) is MobileVitBlock:
            _check_opt_block(m)
            m.__class__ = opt_cls
    model.mobilevit_trt_opt = True
    return model


_OPT_CLASSES = {}


def _opt_block_class(base):
    if base not in _OPT_CLASSES:
        _OPT_CLASSES[base] = type("OptMobileVitBlock", (_OptBlockMixin, base), {})
    return _OPT_CLASSES[base]


def _check_opt_block(block):
    """The pieces the 2-D forward relies on, checked once (a timm release that changes them fails here)."""
    for blk in block.transformer:
        attn = blk.attn
        if getattr(attn, "gate", None) is not None:
            raise UserError("--opt: this timm release's attention has a gate; export without --opt")
        for name in ("qkv", "proj", "num_heads"):
            if not hasattr(attn, name):
                raise UserError("--opt: this timm release's attention has no %r; export without --opt" % name)


def _unfold(x, ph, pw):
    """``[B, C, H, W] -> [B*P, N, C]`` (P = ph*pw pixels of a patch, N patches), timm's order: one permute."""
    _, c, h, w = x.shape
    nh, nw = h // ph, w // pw
    x = x.reshape(-1, c, nh, ph, nw, pw).permute(0, 3, 5, 2, 4, 1)   # [B, ph, pw, nh, nw, C]
    return x.reshape(-1, nh * nw, c)


def _fold(x, c, h, w, ph, pw):
    """Inverse of :func:`_unfold`: ``[B*P*N, C] -> [B, C, H, W]``."""
    nh, nw = h // ph, w // pw
    x = x.reshape(-1, ph, pw, nh, nw, c).permute(0, 5, 3, 1, 4, 2)   # [B, C, nh, ph, nw, pw]
    return x.reshape(-1, c, h, w)


def _attention_2d(attn, x2d, n):
    """timm's ``Attention`` on a 2-D token matrix ``[B*P*N, C]``: packed QKV matmul, split into thirds on the last
    axis (one Split), heads split, the scale on Q (as timm and ml-cvnets compute it), heads merged, 2-D
    projection."""
    h = attn.num_heads
    d = getattr(attn, "head_dim", None) or attn.qkv.out_features // (3 * h)
    qkv = attn.qkv(x2d).reshape(-1, n, 3 * h * d)                          # [B*P, N, 3*H*D]: (3, H, D) order
    q, k, v = [t.reshape(-1, n, h, d).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]   # [B*P, H, N, D]
    q, k = attn.q_norm(q), attn.k_norm(k)
    q = q * getattr(attn, "scale", d ** -0.5)
    out = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    out = attn.attn_drop(out) @ v                                          # [B*P, H, N, D]
    out = out.transpose(1, 2).reshape(-1, h * d)                           # [T, H*D]
    out = getattr(attn, "norm", _identity)(out)
    return attn.proj_drop(attn.proj(out))


def _identity(x):
    return x


def _part(blk, *names):
    """The first of ``names`` the block has (timm releases name the drop-path ``drop_path1`` or ``drop_path``)."""
    for name in names:
        mod = getattr(blk, name, None)
        if mod is not None:
            return mod
    return _identity


def _transformer_block_2d(blk, x2d, n):
    """timm's pre-norm ``Block``: ``x + drop_path(ls(attn(norm1(x))))``, then the same with the MLP (2-D)."""
    y = _part(blk, "ls1")(_attention_2d(blk.attn, blk.norm1(x2d), n))
    x2d = x2d + _part(blk, "drop_path1", "drop_path")(y)
    y = _part(blk, "ls2")(blk.mlp(blk.norm2(x2d)))
    return x2d + _part(blk, "drop_path2", "drop_path")(y)


class _OptBlockMixin(object):
    """The forward of timm's ``MobileVitBlock`` with 2-D transformer matmuls (see :func:`make_export_friendly`)."""

    def forward(self, x):
        import torch
        import torch.nn.functional as F

        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        ph, pw = self.patch_size
        _, c, h, w = x.shape
        new_h, new_w = int(math.ceil(h / ph) * ph), int(math.ceil(w / pw) * pw)
        resized = (new_h, new_w) != (h, w)
        if resized:  # as timm: the feature map is resized to a whole number of patches
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        tokens = _unfold(x, ph, pw)                       # [B*P, N, C]
        n = tokens.shape[1]
        x2d = tokens.reshape(-1, c)                       # [B*P*N, C]
        for blk in self.transformer:
            x2d = _transformer_block_2d(blk, x2d, n)
        x = _fold(self.norm(x2d), c, new_h, new_w, ph, pw)
        if resized:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x
