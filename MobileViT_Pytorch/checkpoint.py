"""Checkpoint loading for MobileViT.

Accepts what users of the original project hold (``model_best.pth.tar``: ``{'epoch', 'state_dict',
'best_acc1', 'optimizer'}`` saved from a DataParallel model, so keys start with ``module.``), a bare state dict,
or this toolkit's own checkpoints (``{'arch', 'num_classes', 'img_size', 'state_dict', ...}``).  Files are read
with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and plain containers.
"""
import inspect
import os
import pickle
import warnings

from mobilevit_trt.errors import UserError

from .models import ARCHS, build_mobilevit, model_cfg

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights-file", "mobilevit_default.pth.tar")
RANDOM_INIT_SEED = 0


class _RestrictedUnpickler(pickle.Unpickler):
    """For torch < 1.13 (no ``weights_only``): unpickle tensors and plain containers only."""

    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch", "Size"), ("torch", "device")} | {
        ("torch", n) for n in ("FloatStorage", "HalfStorage", "DoubleStorage", "BFloat16Storage", "LongStorage",
                               "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super(_RestrictedUnpickler, self).find_class(module, name)
        raise pickle.UnpicklingError("refusing to unpickle %s.%s (only tensors and plain containers)" % (module, name))


class restricted_pickle(object):  # a pickle_module for torch.load
    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda f, **kw: _RestrictedUnpickler(f, **kw).load())
    __name__ = "restricted_pickle"


def _safe_torch_load(path, force_restricted=False):
    import torch
    if not force_restricted and "weights_only" in inspect.signature(torch.load).parameters:
        return torch.load(path, map_location="cpu", weights_only=True)
    kwargs = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
    return torch.load(path, map_location="cpu", pickle_module=restricted_pickle, **kwargs)


def read_checkpoint(path, force_restricted=False):
    """Return ``(state_dict, meta)`` from a checkpoint file; ``meta`` holds arch/num_classes/img_size if stored."""
    import torch

    if not os.path.isfile(path):
        raise UserError("checkpoint not found: %s" % path)
    try:
        obj = _safe_torch_load(path, force_restricted)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (not a zip/pickle), EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError("%s is not a loadable PyTorch checkpoint (torch.load weights_only=True failed: %s%s)"
                        % (path, type(e).__name__, (": " + first[:160]) if first else ""))
    meta = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = {k: obj[k] for k in ("arch", "num_classes", "img_size", "epoch", "best_acc1") if k in obj}
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    else:
        sd = obj
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError("%s holds no state dict of tensors (found %s)" % (path, type(sd).__name__))
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    return sd, meta


def detect_arch(state_dict):
    """Guess the MobileViT size from the final 1x1 conv's shape; None if it does not look like MobileViT."""
    w = state_dict.get("stage4.2.weight")
    if w is None or w.dim() != 4:
        return None
    for arch, cfg in model_cfg.items():
        if tuple(w.shape[:2]) == (cfg["features"][10], cfg["features"][9]):
            return arch
    return None


def _describe_mismatch(model_sd, sd):
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    mismatched = ["%s (checkpoint %s, model %s)" % (k, tuple(sd[k].shape), tuple(model_sd[k].shape))
                  for k in model_sd if k in sd and tuple(sd[k].shape) != tuple(model_sd[k].shape)]
    parts = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
        if items:
            more = " ... (+%d more)" % (len(items) - 3) if len(items) > 3 else ""
            parts.append("%d %s key(s): %s%s" % (len(items), name, ", ".join(items[:3]), more))
    return "; ".join(parts)


def load_model(model_path=None, arch=None, num_classes=None, img_size=256, opt=False, quiet=False):
    """Build MobileViT and load ``model_path`` into it (eval mode).

    Returns ``(model, info)``; ``info`` records arch, num_classes, img_size, opt and where the weights came from.
    With ``model_path=None`` a deterministic random initialisation (seed 0) is used and a warning is issued.
    """
    import torch

    if arch is not None and arch not in ARCHS:
        raise UserError("unknown arch %r (choose from %s)" % (arch, ", ".join(ARCHS)))
    if img_size % 32 != 0 or img_size < 64:
        raise UserError("--img-size must be a multiple of 32 and at least 64, got %d" % img_size)
    info = {"img_size": img_size, "opt": bool(opt)}
    if model_path is None:
        arch = arch or "s"
        num_classes = num_classes or 1000
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build_mobilevit(arch, img_size, num_classes, opt=opt)
        msg = "no checkpoint given: using a deterministic random initialisation (seed %d) of MobileViT-%s" % (
            RANDOM_INIT_SEED, arch.upper())
        if not quiet:
            warnings.warn(msg, stacklevel=2)
        info.update(arch=arch, num_classes=num_classes, weights="random-init(seed=%d)" % RANDOM_INIT_SEED)
        return model.eval(), info

    sd, meta = read_checkpoint(model_path)
    detected = detect_arch(sd)
    if arch is None:
        arch = meta.get("arch") or detected or "s"
    fc = sd.get("fc.weight")
    if num_classes is None:
        num_classes = int(meta.get("num_classes") or (fc.shape[0] if fc is not None and fc.dim() == 2 else 1000))
    model = build_mobilevit(arch, img_size, num_classes, opt=opt)
    model_sd = model.state_dict()
    problem = _describe_mismatch(model_sd, sd)
    if problem:
        hint = ""
        if detected and detected != arch:
            hint = " (the checkpoint looks like MobileViT-%s: try --arch %s)" % (detected.upper(), detected)
        elif detected is None:
            hint = " (it does not look like a MobileViT checkpoint)"
        raise UserError("checkpoint %s does not fit MobileViT-%s: %s%s" % (model_path, arch.upper(), problem, hint))
    model.load_state_dict(sd, strict=True)
    info.update(arch=arch, num_classes=num_classes, weights=os.path.abspath(model_path))
    return model.eval(), info
