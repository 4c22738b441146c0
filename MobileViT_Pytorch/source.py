"""This project's checkpoints as a model source for the toolkit (the model package sits above the library).

* :func:`torch_backend`: a checkpoint (or the shipped default weights) as a ``mobilevit_trt.backends.TorchBackend``;
  ``fake_quant=True`` runs a QAT checkpoint with its fake quantizers (the model its Q/DQ ONNX was exported from).
* :class:`CheckpointSource`: what ``mobilevit_trt.pipeline`` needs of a model source (its docstring lists it):
  load it base or ``--opt``, the QAT checkpoints beside it, and their Q/DQ export.
* :class:`OfficialSource`: the same for Apple's official MobileViT (timm's model code, :mod:`.official`), from a
  timm checkpoint, a Hugging Face folder or an ml-cvnets file.
* :func:`open_source`: the ``--model`` / ``--model_path`` options as a source, the family detected from the file.
"""
import os

from mobilevit_trt.errors import UserError

from . import checkpoint as C

FAMILY = "mobilevit-original"


def resolve_weights(model_path):
    """``model_path``, or the shipped default weights when it is None and they are there (else None: random)."""
    return model_path if model_path is not None else C.default_weights()


def torch_backend(model_path=None, arch=None, num_classes=None, img_size=None, opt=False, device="cpu",
                  fake_quant=False, quiet=False, model=None, use_ema=False):
    """A checkpoint (any family :func:`open_source` reads; none: the shipped default weights) as a
    ``TorchBackend``; its ``info`` carries the model's preprocessing (``preprocess``) where the source knows it."""
    from mobilevit_trt.backends import TorchBackend

    source = open_source(model, model_path, arch, num_classes, img_size, use_ema)
    if isinstance(source, OfficialSource):
        if fake_quant:
            raise UserError("--fake-quant runs a QAT checkpoint of the original project's model")
        module, info = source.load(opt=opt)
    else:
        model_path, img_size = source.weights, source.img_size
        if fake_quant:
            from .qat import load_qat_model
            if model_path is None:
                raise UserError("--fake-quant needs a QAT checkpoint (--model_path)")
            module, info = load_qat_model(model_path, img_size, opt=opt)
        else:
            module, info = C.load_model(model_path, arch, num_classes, img_size, opt=opt, quiet=quiet)
    info = dict(info, preprocess=source.preprocess.to_dict(), preprocess_origin=source.preprocess_origin)
    return TorchBackend(module, source=info["weights"], device=device, info=info)


def default_qat_paths(model_path):
    """The QAT checkpoints shipped beside the default weights (only for the default weights)."""
    if model_path is None or os.path.abspath(model_path) != os.path.abspath(C.DEFAULT_WEIGHTS):
        return {}
    folder = os.path.dirname(C.DEFAULT_WEIGHTS)
    return {"qat_w": os.path.join(folder, "mobilevit_default_qat_w.pth.tar"),
            "qat_wa": os.path.join(folder, "mobilevit_default_qat_wa.pth.tar")}


class CheckpointSource(object):
    """A MobileViT checkpoint of this project (or the shipped default weights), with its QAT checkpoints."""

    family = FAMILY

    def __init__(self, model_path=None, arch=None, qat_paths=None, img_size=256):
        self.weights = resolve_weights(model_path)
        self.arch = arch
        self.img_size = img_size
        if qat_paths is None:
            qat_paths = default_qat_paths(self.weights)
        self.qat_paths = {k: p for k, p in qat_paths.items() if p and os.path.isfile(p)}
        # the input preprocessing (mobilevit_trt.preprocess.Preprocess): this project's checkpoints are trained
        # and evaluated with the original project's transform; :func:`apply_preprocess_args` may override it
        from mobilevit_trt.preprocess import Preprocess
        self.preprocess = Preprocess.original(self.img_size)
        self.preprocess_origin = "the original project's transform (this project's %s)" % (
            "checkpoint %s" % self.weights if self.weights else "model")

    @property
    def params(self):
        """What identifies the source in cache keys."""
        return {"family": self.family, "arch": self.arch, "weights": self.weights or "random",
                "img_size": self.img_size, "preprocess": self.preprocess.to_json()}

    def files(self, qat=None, **_):
        """The files a model of the source depends on (the stage runner hashes them)."""
        if qat:
            return [self.qat_paths[qat]] if qat in self.qat_paths else []
        return [self.weights] if self.weights else []

    def unavailable(self, qat=None, **_):
        """Why the model ``load(**params)`` would give cannot be had here, or None."""
        if qat and qat not in self.qat_paths:
            return "no QAT checkpoint (MobileViT_Pytorch/qat.py makes one)"
        return None

    def load(self, opt=False, qat=None, plain=False):
        """``(module, info)``: the float model, base or with the export-friendly ``--opt`` blocks; with ``qat``
        the QAT checkpoint of that key, as its fake-quant model (or, ``plain``, its fine-tuned float weights)."""
        reason = self.unavailable(qat=qat)
        if reason:
            raise UserError(reason)
        if qat and not plain:
            from .qat import load_qat_model
            return load_qat_model(self.qat_paths[qat], self.img_size, opt=opt)
        path = self.qat_paths[qat] if qat else self.weights
        return C.load_model(path, self.arch, None, self.img_size, opt=opt, quiet=True)

    def export_qdq(self, module, path, dynamic=True, batch=1, opset=13, verify=True, log=None):
        """Export a fake-quant ``module`` from :meth:`load` (``qat=``) as its Q/DQ ONNX."""
        from .qat import export_qdq_onnx
        return export_qdq_onnx(module, path, batch=batch, dynamic=dynamic, opset=opset, img_size=self.img_size,
                               verify=verify, log=log or (lambda *a, **k: None), preprocess=self.preprocess)


# --- Apple's official MobileViT --------------------------------------------------------------------------------

MODEL_KINDS = ("auto", "original", "timm", "hf", "cvnets")
MODEL_HELP = ("which model the checkpoint is: auto (detected from the file: this project's checkpoints, timm "
              "state dicts and training checkpoints, Hugging Face folders, ml-cvnets .pt files), original[:xxs|xs|s] "
              "(the original project's MobileViT), timm:<name> (Apple's official MobileViT with timm's code: "
              "mobilevit_xxs|xs|s, mobilevitv2_050..200), hf (a Hugging Face folder), cvnets (an ml-cvnets .pt). "
              "timm:<name> without --model_path: a deterministic random initialisation")


def parse_model_spec(text):
    """``--model`` as ``(kind, name)``: ``timm:mobilevit_xs`` -> ``('timm', 'mobilevit_xs')``, ``hf`` ->
    ``('hf', None)``; None or ``auto`` -> ``('auto', None)``."""
    if text is None:
        return "auto", None
    kind, _, name = text.strip().partition(":")
    kind = kind.lower()
    if kind not in MODEL_KINDS:
        raise UserError("--model %r: expected one of %s, optionally with ':<name>' (e.g. timm:mobilevit_xs)"
                        % (text, ", ".join(MODEL_KINDS)))
    name = name.strip() or None
    if name and kind == "original" and name not in ("xxs", "xs", "s"):
        raise UserError("--model original:%s: the original project's sizes are xxs, xs, s" % name)
    if name and kind in ("timm", "cvnets"):
        from .official import canonical_name
        name = canonical_name(name)
    if name and kind in ("auto", "hf"):
        raise UserError("--model %s takes no name (the file says which model it is)" % kind)
    return kind, name


def open_source(model=None, model_path=None, arch=None, num_classes=None, img_size=None, use_ema=False,
                qat_paths=None):
    """The model source the options name: ``model`` is ``--model`` (see :data:`MODEL_HELP`), ``model_path`` a
    checkpoint file or Hugging Face folder, ``arch`` the original project's ``--arch`` (also picks the size of
    ``--model timm``), ``use_ema``: a timm training checkpoint's EMA weights."""
    kind, name = parse_model_spec(model)
    if model_path is not None and not os.path.exists(model_path):
        raise UserError("checkpoint not found: %s" % model_path)
    if kind == "timm" and name is None:
        from .official import SHORT_NAMES
        name = SHORT_NAMES.get(arch or "", None)
    if model_path is None and kind in ("original", "auto"):
        _no_official_options(use_ema)
        return CheckpointSource(model_path, arch or name, qat_paths, img_size or 256)
    if model_path is None:
        if name is None:
            raise UserError("--model %s without --model_path: name the architecture (e.g. --model timm:mobilevit_xs) "
                            "for a random initialisation, or give the checkpoint" % kind)
        return OfficialSource(name, None, num_classes or 1000, img_size, origin="random-init")
    if os.path.isdir(model_path):
        if kind not in ("auto", "hf"):
            raise UserError("%s is a folder: only a Hugging Face model folder (config.json + weights) is read as a "
                            "folder; for --model %s give the checkpoint file" % (model_path, kind))
        return _hf_source(model_path, num_classes, img_size)
    return _file_source(kind, name, model_path, arch, num_classes, img_size, use_ema, qat_paths)


def apply_preprocess_args(source, args, log=print):
    """The command line's preprocessing options (``preprocess.add_preprocess_args``) applied to ``source``'s
    preprocessing, which is printed with where it came from (``preprocess.resolve``); returns it."""
    from mobilevit_trt.preprocess import resolve
    pp = resolve(source.preprocess, source.preprocess_origin, args=args, log=log)
    source.preprocess, source.preprocess_origin = pp, pp.origin
    return pp


def _no_official_options(use_ema):
    if use_ema:
        raise UserError("--use-ema picks the EMA weights of a timm training checkpoint; this is the original "
                        "project's model")


def _hf_source(folder, num_classes, img_size):
    from . import official_keys as K
    sd, config = K.read_hf_folder(folder)
    name, n_classes, size = K.arch_from_hf_config(config)
    _check_num_classes(num_classes, n_classes, folder)
    timm_sd = K.hf_to_timm(sd, config)
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
             if f in ("config.json", "preprocessor_config.json") or f.startswith(("model.", "pytorch_model."))]
    from mobilevit_trt.preprocess import HF_PREPROCESSOR_FILE, Preprocess
    pp_file = os.path.join(folder, HF_PREPROCESSOR_FILE)
    if os.path.isfile(pp_file):
        pp, pp_origin = Preprocess.from_hf_preprocessor(pp_file), pp_file
    else:
        pp = Preprocess.cvnets(img_size or size)
        pp_origin = "Apple's convention (%s has no %s)" % (folder, HF_PREPROCESSOR_FILE)
        print("WARNING: %s has no %s: assuming Apple's preprocessing of its checkpoints (%s); pass --mean/--std/"
              "--crop-pct/--interpolation/--channel-order if the model was trained otherwise"
              % (folder, HF_PREPROCESSOR_FILE, pp.describe()))
    return OfficialSource(name, timm_sd, n_classes, img_size or size, weights=os.path.abspath(folder),
                          origin="hf", files=files, hf_folder=folder, preprocess=pp, preprocess_origin=pp_origin)


def _check_num_classes(want, have, path):
    if want is not None and want != have:
        raise UserError("--num-classes %d, but %s has a %d-class classifier" % (want, path, have))


def _read_state_dict(path, use_ema):
    """``(state_dict, meta)`` of a checkpoint file: a .safetensors file, or a torch.save file read with
    ``weights_only=True`` (bare, ``state_dict`` / ``state_dict_ema`` / ``model`` wrappers, ``module.``
    prefixes)."""
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError("%s is a safetensors file: pip install safetensors" % path)
        try:
            sd = load_file(path)
        except Exception as e:  # noqa: BLE001 - a damaged file: one line
            raise UserError("%s is not a readable safetensors file: %s" % (path, e))
        if use_ema:
            raise UserError("--use-ema: %s is a bare safetensors state dict (no EMA weights in it)" % path)
        return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}, {}
    return C.read_checkpoint(path, use_ema=use_ema)


def _file_source(kind, name, path, arch, num_classes, img_size, use_ema, qat_paths):
    from . import official_keys as K
    sd, meta = _read_state_dict(path, use_ema)
    family, description = K.detect_family(sd)
    wanted = {"auto": family, "original": "original", "timm": "timm", "cvnets": "cvnets", "hf": "hf"}[kind]
    if family != wanted or family is None:
        raise UserError(_family_message(path, kind, family, description))
    if family == "original":
        _no_official_options(use_ema)
        return CheckpointSource(path, arch, qat_paths, img_size or 256)
    if family == "hf":
        raise UserError(_family_message(path, kind, family, description))
    if family == "cvnets":
        timm_sd, detected = K.cvnets_to_timm(sd)
        origin = "cvnets"
    else:
        timm_sd = sd
        detected, _ = K.timm_arch_from_state_dict(sd)
        origin = "timm"
    if name and detected and name != detected:
        raise UserError("--model %s:%s, but %s holds %s weights: pass --model %s:%s (or --model auto)"
                        % (kind, name, path, detected, kind, detected))
    name = name or detected
    if name is None:
        raise UserError("%s: the MobileViT size could not be read from its tensor shapes; name it with "
                        "--model %s:<name>" % (path, kind if kind != "auto" else family))
    n_classes = _classes_of(timm_sd)
    _check_num_classes(num_classes, n_classes, path)
    if meta.get("has_ema") and not use_ema:
        print("note: %s also holds EMA weights (state_dict_ema); --use-ema picks them" % path)
    pp = pp_origin = None
    if meta.get("preprocess") is not None:       # a checkpoint of train.py --model timm:NAME records it
        from mobilevit_trt.preprocess import Preprocess
        try:
            pp = Preprocess.coerce(meta["preprocess"])
        except UserError as e:
            raise UserError("%s: its preprocessing record is invalid: %s" % (path, e))
        pp_origin = "checkpoint %s" % path
    if img_size is None and meta.get("img_size"):
        img_size = int(meta["img_size"])
    return OfficialSource(name, timm_sd, n_classes, img_size, weights=os.path.abspath(path), origin=origin,
                          files=[path], ema=use_ema, preprocess=pp, preprocess_origin=pp_origin)


def _classes_of(timm_sd):
    w = timm_sd.get("head.fc.weight")
    return int(w.shape[0]) if w is not None and w.dim() == 2 else 0


def _family_message(path, kind, family, description):
    flag = {"original": "--model original", "timm": "--model timm:<name>", "cvnets": "--model cvnets",
            "hf": "the Hugging Face folder (config.json + weights) as --model_path"}
    if family is None:
        return ("%s is not a MobileViT checkpoint this toolkit reads (%s): expected this project's MobileViT, timm's "
                "mobilevit*/mobilevitv2*, a Hugging Face MobileViT folder or an ml-cvnets MobileViT"
                % (path, description))
    if family == "hf":
        return ("%s looks like a Hugging Face MobileViT state dict (%s): give %s, so that its config.json says the "
                "architecture" % (path, description, flag["hf"]))
    return ("%s looks like %s (%s), not what --model %s reads: pass %s (or --model auto)"
            % (path, {"original": "the original project's MobileViT", "timm": "a timm MobileViT state dict",
                      "cvnets": "an ml-cvnets MobileViT checkpoint"}[family], description, kind, flag[family]))


class OfficialSource(object):
    """Apple's official MobileViT on timm's model code, with the weights given (a timm-keyed state dict, already
    converted from Hugging Face or ml-cvnets names) or a seeded random initialisation (``state_dict=None``)."""

    family = "mobilevit-official"

    def __init__(self, name, state_dict, num_classes=1000, img_size=None, weights=None, origin="timm", files=(),
                 hf_folder=None, ema=False, preprocess=None, preprocess_origin=None):
        from .official import canonical_name
        self.name = canonical_name(name)
        self.state_dict = state_dict
        self.num_classes = int(num_classes)
        self.origin = origin
        self.weights = weights
        self.ema = ema
        self._files = list(files)
        self.hf_folder = hf_folder
        self.img_size = int(img_size or 256)
        C._check_model_args(None, self.img_size)
        self.arch = self.name
        self.preprocess, self.preprocess_origin = self._preprocess(preprocess, preprocess_origin)

    def _preprocess(self, pp, origin):
        """The model's preprocessing at the model's input size: the one given (a checkpoint's record, a Hugging
        Face preprocessor_config.json), else the source's convention -- timm's pretrained_cfg of the model for
        timm weights and random initialisations, Apple's for ml-cvnets files."""
        from mobilevit_trt.preprocess import Preprocess
        if pp is None and self.origin == "cvnets":
            pp, origin = Preprocess.cvnets(self.img_size), "Apple's ml-cvnets evaluation (an ml-cvnets checkpoint)"
        elif pp is None:
            from .official import pretrained_cfg
            pp = Preprocess.from_timm_cfg(pretrained_cfg(self.name), img_size=self.img_size)
            origin = "timm's pretrained_cfg of %s" % self.name
        if pp.img_size != self.img_size:
            pp = pp.with_overrides(img_size=self.img_size)
        return pp, origin

    @property
    def params(self):
        return {"family": self.family, "model": self.name, "origin": self.origin, "ema": self.ema,
                "weights": self.weights or "random", "num_classes": self.num_classes, "img_size": self.img_size,
                "preprocess": self.preprocess.to_json()}

    def files(self, qat=None, **_):
        return [] if qat else list(self._files)

    def unavailable(self, qat=None, **_):
        if qat:
            return "QAT checkpoints are made for the original project's model only (MobileViT_Pytorch/qat.py)"
        return None

    def load(self, opt=False, qat=None, plain=False):
        """``(module, info)``: timm's model with the weights, base or ``--opt`` (:mod:`.official`)."""
        from .official import RANDOM_INIT_SEED, create_model
        reason = self.unavailable(qat=qat)
        if reason:
            raise UserError(reason)
        if self.state_dict is None:
            model = create_model(self.name, self.num_classes, opt=opt, seed=RANDOM_INIT_SEED)
            weights = "random-init(seed=%d)" % RANDOM_INIT_SEED
        else:
            model = create_model(self.name, self.num_classes, opt=opt)
            problem = C._describe_mismatch(model.state_dict(), self.state_dict)
            if problem:
                raise UserError("the %s weights of %s do not fit timm's %s: %s" % (self.origin, self.weights,
                                                                                 self.name, problem))
            model.load_state_dict(self.state_dict, strict=True)
            model.eval()
            weights = self.weights
        info = {"img_size": self.img_size, "opt": bool(opt), "arch": self.name, "num_classes": self.num_classes,
                "weights": weights, "family": self.family, "origin": self.origin,
                "preprocess": self.preprocess.to_dict(), "preprocess_origin": self.preprocess_origin}
        return model, info

    def export_qdq(self, module, path, dynamic=True, batch=1, opset=13, verify=True, log=None):
        raise UserError(self.unavailable(qat="qat"))

    def describe(self):
        return "%s (%s, %d classes, %dx%d, weights: %s)" % (self.name, self.origin, self.num_classes, self.img_size,
                                                           self.img_size, self.weights or "random-init")
