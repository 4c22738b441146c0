"""Checkpoint loading for MobileViT.

Accepts what users of the original project hold (``model_best.pth.tar``: ``{'epoch', 'state_dict',
'best_acc1', 'optimizer'}`` saved from a DataParallel model, so keys start with ``module.``), a bare state dict,
or this toolkit's own checkpoints (``{'arch', 'num_classes', 'img_size', 'state_dict', ...}``).  Files are read
with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and plain containers.
"""
import inspect
import os
import pickle
import re
import warnings

from mobilevit_trt.errors import UserError

from .models import ARCHS, build_mobilevit, model_cfg

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights-file", "mobilevit_default.pth.tar")
RANDOM_INIT_SEED = 0


class _RestrictedUnpickler(pickle.Unpickler):
    """For torch < 1.13 (no ``weights_only``): unpickle tensors and plain containers only."""

    ALLOWED = {("collections", "OrderedDict"), ("argparse", "Namespace"), ("torch._utils", "_rebuild_tensor_v2"),
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
    with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": a failure is reported as one UserError
        warnings.simplefilter("ignore")
        if not force_restricted and "weights_only" in inspect.signature(torch.load).parameters:
            with _plain_namespaces():
                return torch.load(path, map_location="cpu", weights_only=True)
        # torch < 1.13: the restricted unpickler above instead (the flag only tells torch to use pickle_module)
        kwargs = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
        return torch.load(path, map_location="cpu", pickle_module=restricted_pickle, **kwargs)


def _plain_namespaces():
    """timm's training checkpoints store their command line as an ``argparse.Namespace`` (an attribute holder:
    unpickling it runs no code); torch's weights-only loader accepts it when told (torch >= 2.4)."""
    import argparse
    import contextlib

    import torch
    safe = getattr(torch.serialization, "safe_globals", None)
    return safe([argparse.Namespace]) if safe else contextlib.nullcontext()


META_KEYS = ("arch", "num_classes", "img_size", "epoch", "best_acc1", "classes", "qat", "preprocess")
# names of the Python objects a refused checkpoint holds, as torch's weights-only unpickler (1.13+) or the
# restricted one above reports them
_REFUSED_GLOBAL = re.compile(r"(?:GLOBAL|Unsupported class|refusing to unpickle) ([\w.]+)")


def _load_error(path, e):
    """The UserError for a file torch.load(weights_only=True) could not read: what the file is not, in one
    sentence, and what to do; torch's own advice (to unpickle it anyway) is not repeated."""
    text = str(e)
    refused = _REFUSED_GLOBAL.search(text)
    found = refused.group(1) if refused else _first_foreign_global(path)
    if found:
        return UserError("%s is not a PyTorch checkpoint of tensors only: it holds Python objects (%s) that are "
                         "not loaded for safety (refusing to unpickle anything but tensors and plain containers, "
                         "as torch.load(weights_only=True) does); where the file was made, save the model's "
                         "state_dict with torch.save instead" % (path, found))
    reason = ""
    if "zip archive" in text or "central directory" in text:
        reason = ": its zip archive is incomplete or damaged"
    elif isinstance(e, EOFError) or not os.path.getsize(path):
        reason = ": the file ends too early"
    return UserError("%s is not a PyTorch checkpoint (truncated or another format)%s; give a file written by "
                     "torch.save, copied or downloaded again in full" % (path, reason))


def _first_foreign_global(path, max_ops=1 << 20):
    """The first class or function a plain pickle file refers to beyond tensors and plain containers, read with
    ``pickletools.genops`` (which parses opcodes and builds no object); None if there is none or it is no pickle.
    torch's weights-only unpickler stops at the framing of a protocol-4 pickle before it sees that name."""
    import pickletools

    with open(path, "rb") as f:
        if f.read(1) != b"\x80":  # PROTO: a pickle of protocol 2 or later (a torch.save zip starts with PK)
            return None
        f.seek(0)
        strings = []
        try:
            for i, (op, arg, _) in enumerate(pickletools.genops(f)):
                if i >= max_ops:
                    break
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings = (strings + [arg])[-2:]  # STACK_GLOBAL takes module and name from the stack
                    continue
                if op.name == "STACK_GLOBAL" and len(strings) == 2:
                    module, name = strings
                elif op.name in ("GLOBAL", "INST"):
                    module, name = arg.split(" ", 1)
                else:
                    continue
                if (module, name) not in _RestrictedUnpickler.ALLOWED:
                    return "%s.%s" % (module, name)
        except Exception:  # noqa: BLE001 - a truncated or malformed pickle: nothing more to name
            return None
    return None


def is_qat_checkpoint(meta):
    """A checkpoint written by MobileViT_Pytorch/qat.py: float weights plus its quantizer settings (``qat``)."""
    return isinstance(meta, dict) and isinstance(meta.get("qat"), dict)


def read_checkpoint(path, force_restricted=False, use_ema=False):
    """Return ``(state_dict, meta)`` from a checkpoint file; ``meta`` holds the stored metadata of
    :data:`META_KEYS` (arch, num_classes, img_size, ..., ``qat`` for a QAT checkpoint) and ``has_ema`` when the
    file also holds EMA weights (timm's ``state_dict_ema``), which ``use_ema`` picks."""
    import torch

    if not os.path.isfile(path):
        raise UserError("checkpoint not found: %s" % path)
    try:
        obj = _safe_torch_load(path, force_restricted)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (not a zip/pickle), EOFError, KeyError, ...
        raise _load_error(path, e)
    meta = {}
    has_ema = isinstance(obj, dict) and isinstance(obj.get("state_dict_ema"), dict)
    if use_ema and not has_ema:
        raise UserError("--use-ema: %s holds no EMA weights (no 'state_dict_ema')" % path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = {k: obj[k] for k in META_KEYS if k in obj}
        meta["has_ema"] = has_ema
        sd = obj["state_dict_ema" if use_ema else "state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    else:
        sd = obj
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError("%s holds no state dict of tensors (%s): give a checkpoint saved with "
                        "torch.save(model.state_dict(), path) or a {'state_dict': ...} wrapper"
                        % (path, _describe_content(sd)))
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    return sd, meta


def _describe_content(obj):
    if isinstance(obj, dict):
        if not obj:
            return "it is empty"
        bad = [k for k, v in obj.items() if not _is_tensor(v)]
        return "%d of its %d entries are not tensors, e.g. %r" % (len(bad), len(obj), bad[0])
    if isinstance(obj, (list, tuple)):
        return "it holds a list of %d items" % len(obj)
    return "it holds a single %s value" % ("tensor" if _is_tensor(obj) else "non-tensor")


def _is_tensor(v):
    import torch
    return isinstance(v, torch.Tensor)


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
    With ``model_path=None`` a deterministic random initialisation (seed 0) is used and a warning is issued
    (callers that mean "the default model" resolve :data:`DEFAULT_WEIGHTS` first, see :func:`default_weights`).
    """
    import torch

    _check_model_args(arch, img_size)
    if model_path is None:
        arch = arch or "s"
        num_classes = num_classes or 1000
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build_mobilevit(arch, img_size, num_classes, opt=opt)
        if not quiet:
            warnings.warn(random_init_message(arch), stacklevel=2)
        info = {"img_size": img_size, "opt": bool(opt), "arch": arch, "num_classes": num_classes,
                "weights": "random-init(seed=%d)" % RANDOM_INIT_SEED}
        return model.eval(), info
    sd, meta = read_checkpoint(model_path)
    return model_from_checkpoint(model_path, sd, meta, arch, num_classes, img_size, opt)


def random_init_message(arch):
    return "no checkpoint given: using a deterministic random initialisation (seed %d) of MobileViT-%s" % (
        RANDOM_INIT_SEED, arch.upper())


def default_weights():
    """The shipped default weights (:data:`DEFAULT_WEIGHTS`) if the file is there, else None."""
    return DEFAULT_WEIGHTS if os.path.isfile(DEFAULT_WEIGHTS) else None


def _check_model_args(arch, img_size):
    if arch is not None and arch not in ARCHS:
        raise UserError("unknown arch %r (choose from %s)" % (arch, ", ".join(ARCHS)))
    if img_size % 32 != 0 or img_size < 64:
        raise UserError("--img-size must be a multiple of 32 and at least 64, got %d" % img_size)


def model_from_checkpoint(model_path, sd, meta, arch=None, num_classes=None, img_size=256, opt=False):
    """MobileViT (eval mode) holding ``sd`` from :func:`read_checkpoint`; returns ``(model, info)``."""
    _check_model_args(arch, img_size)
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
    info = {"img_size": img_size, "opt": bool(opt), "arch": arch, "num_classes": num_classes,
            "weights": os.path.abspath(model_path)}
    return model.eval(), info
